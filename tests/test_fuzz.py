"""The differential fuzzer (opmap/checking/fuzz.py): a fixed CI sample of its campaign, and every defect it found kept as a
regression case — each builds for real on tensorrt_rtx and is compared with PyTorch by the reference interpreter."""

import random

import pytest
import torch
import torch.nn.functional as F

from opmap.service import load_rules
from opmap.checking import fuzz

RULESET = load_rules(None)
S = RULESET.strategies


def run(strategy, fn, *inputs, dynamic=False):
    return fuzz.run_case(S[strategy], fuzz.Case("test", fn, inputs, dynamic), RULESET)


# -- the CI sample: families where the argument space matters, plus a seeded draw of the rest -------------------------
FAMILIES = ["norm/group-norm", "norm/layer-norm", "attn/decomposed", "attn/fused", "reduce/softmax", "reduce/log-softmax",
            "reduce/sum", "reduce/amax", "reduce/argmax", "ew/mul", "cmp/le", "mm/matmul", "mm/linear", "reduce/sort-topk"]
OTHERS = sorted(s.id for s in fuzz.fuzzable(RULESET) if s.id not in FAMILIES)
SAMPLE = FAMILIES + random.Random(0).sample(OTHERS, 16)


@pytest.mark.parametrize("strategy", SAMPLE)
def test_fuzz_sample(strategy):
    trials = [fuzz.run_case(S[strategy], case, RULESET) for case in fuzz.cases_for(S[strategy], 6, seed=0)]
    failures = [f"{t.status}: {t.case.label}: {t.reason}" for t in trials if t.status in ("wrong", "build-failed")]
    assert not failures, failures
    refused = [t for t in trials if t.status == "refused"]
    assert all(t.reason for t in refused), "a refusal without a reason"


def test_cases_are_reproducible():
    labels = lambda: [c.label for c in fuzz.cases_for(S["attn/decomposed"], 8, seed=3)]  # noqa: E731
    assert labels() == labels()
    assert labels() != [c.label for c in fuzz.cases_for(S["attn/decomposed"], 8, seed=4)]


def test_a_planted_wrong_emitter_is_found_and_shrunk():
    """The fuzzer's oracle on a strategy known to be wrong: an exp emitted as a tanh. The case is 'wrong' (not refused,
    not verified), and shrinking keeps it wrong on smaller inputs."""
    import dataclasses

    from opmap.planning.strategy import accept, strategy

    @strategy("planted/exp-as-tanh", op="aten.exp.default", kind="direct", examples=[accept(torch.exp, torch.randn(2, 3))])
    def rule_planted(node):
        """Accepts every exp."""

    rule_planted.emit(lambda ctx, node: ctx.activation(ctx.input("self"), "TANH"))
    ruleset = dataclasses.replace(RULESET, strategies={**RULESET.strategies, rule_planted.id: rule_planted})
    trial = fuzz.run_case(rule_planted, fuzz.Case("exp", torch.exp, (torch.randn(4, 6, 3),)), ruleset)
    assert trial.status == "wrong" and "max abs" in trial.reason
    small = fuzz.shrink(rule_planted, trial, ruleset, budget=12)
    assert small.status == "wrong"
    assert small.case.inputs[0].numel() < trial.case.inputs[0].numel()


# -- regressions: each was a wrong engine or a broken build found by the fuzzer or a user sweep --------------------
@pytest.mark.parametrize("shape", [(2, 8, 14, 14), (1, 3, 5), (3, 6, 2, 3, 2), (4, 5)])
@pytest.mark.parametrize("dynamic", [False, True])
def test_group_norm_one_group(shape, dynamic):
    """GroupNorm(1, C) normalizes over C and every spatial axis (TensorRT's one-group normalization was given the
    spatial axes only: an instance norm, 99.9% of outputs off)."""
    gn = torch.nn.GroupNorm(1, shape[1])
    with torch.no_grad():
        gn.weight.normal_(), gn.bias.normal_()
    assert run("norm/group-norm", gn.eval(), torch.randn(shape), dynamic=dynamic).status == "verified"


@pytest.mark.parametrize("groups,shape", [(2, (3, 4)), (3, (2, 6)), (2, (1, 6)), (2, (2, 8, 14, 14)), (8, (2, 8, 3))])
@pytest.mark.parametrize("dynamic", [False, True])
def test_group_norm_groups(groups, shape, dynamic):
    """A rank-2 input is grouped by a reshape to [N, G, C/G]; with C known only at run time the emitter divided a
    symbolic size by G (found by the seed-97 campaign): the reshape now infers C/G."""
    trial = run("norm/group-norm", lambda x: F.group_norm(x, groups), torch.randn(shape), dynamic=dynamic)
    assert trial.status == "verified", trial.reason


@pytest.mark.parametrize("groups,shape", [(3, (2, 3, 1)), (3, (2, 3)), (1, (2, 1, 1)), (2, (3, 2, 1, 1))])
@pytest.mark.parametrize("dynamic", [False, True])
def test_group_norm_groups_of_one_element(groups, shape, dynamic):
    """Each group a single element: the output is the bias (NaN where the input is inf). TensorRT's builder failed
    shape inference on a normalization over single elements (found by the seed-37 campaign)."""
    x = torch.randn(shape)
    x.view(-1)[1] = float("inf")
    w, b = torch.randn(shape[1]), torch.randn(shape[1])
    trial = run("norm/group-norm", lambda a: F.group_norm(a, groups, w, b), x, dynamic=dynamic)
    assert trial.status == "verified", trial.reason


def test_cumsum_loop_refuses_other_dynamic_dims():
    """The loop's zero start is sized at build time: a dynamic dim besides the scanned one is refused with a reason (the
    emitter broke on it; found by the seed-71 campaign), and the layer strategy takes the call."""
    x = torch.randn(1, 2)  # the scanned dim of size 1 stays static, the other is dynamic
    trial = run("scan/cumsum-loop", lambda a: torch.cumsum(a, 0), x, dynamic=True)
    assert trial.status == "refused" and "zero start" in trial.reason, (trial.status, trial.reason)
    assert run("scan/cumsum-layer", lambda a: torch.cumsum(a, 0), x, dynamic=True).status == "verified"


@pytest.mark.parametrize("strategy", ["scan/cumsum-layer", "scan/cumsum-loop"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_cumsum_accumulates_in_float32(strategy, dtype):
    """A half running sum is accumulated in float32 and each output rounded once, as PyTorch does: the loop's bf16
    recurrence drifted 14% over 600 terms."""
    x = (torch.rand(2, 600, generator=torch.Generator().manual_seed(0)) + 0.5).to(dtype)
    trial = run(strategy, lambda a: torch.cumsum(a, -1), x)
    assert trial.status == "verified", trial.reason


HALF_SUMS = [  # (strategy, call): a sum of a half input accumulates in float32 and rounds once, as PyTorch's does
    ("reduce/sum", lambda a, m: a.sum(-1)), ("reduce/mean", lambda a, m: a.mean((0, 1), keepdim=True)),
    ("reduce/prod", lambda a, m: a[:, :8].prod(-1)), ("mask/masked-reduce", lambda a, m: a[m].mean()),
]


@pytest.mark.parametrize("case", range(len(HALF_SUMS)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_sums_accumulate_in_float32(case, dtype):
    """TensorRT documents no accumulation type for a half Reduce; the emitters cast a half sum, mean or product to
    float32 and round the result once, so the engine computes what PyTorch (and the reference interpreter) computes.
    The structure is asserted in test_autocast; here each path (and a masked mean's float32 count) builds and verifies."""
    strategy, fn = HALF_SUMS[case]
    g = torch.Generator().manual_seed(0)
    x, m = (torch.rand(2, 700, generator=g) + 0.5).to(dtype), torch.rand(2, 700, generator=g) > 0.5
    trial = run(strategy, fn, x, m)
    assert trial.status == "verified", trial.reason


HALF_STATISTICS = [  # (strategy, call, input): values far from zero relative to their spread, or past fp16's square root
    ("norm/layer-norm", lambda a: F.layer_norm(a, (4,)), torch.tensor([[300.0, 301.0, 302.0, 303.0]])),
    ("norm/group-norm", lambda a: F.group_norm(a, 2), torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0)) + 300),
    ("norm/group-norm", lambda a: F.group_norm(a, 1), torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1)) + 300),
    ("norm/rms-norm", lambda a: F.rms_norm(a, (4,)), torch.tensor([[300.0, 301.0, 302.0, 303.0]])),
    ("norm/rms-norm", lambda a: F.rms_norm(a, (4,)), torch.full((1, 4), 1e-3)),  # the default eps is float32's
    ("reduce/vector-norm", lambda a: torch.linalg.vector_norm(a, dim=-1), torch.tensor([[300.0, 301.0, 302.0, 303.0]])),
    ("norm/weight-norm", lambda v: torch._weight_norm(v, torch.ones(3, 1, dtype=v.dtype), 0),
     torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 300),
]


@pytest.mark.parametrize("case", range(len(HALF_STATISTICS)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_statistics_are_computed_in_float32(case, dtype):
    """Normalizations and norms of a float16/bfloat16 input compute in float32 and round once, as PyTorch does. In half
    the mean rounded (bf16 layer/group norm off by up to 1.1), squares overflowed fp16 (an rms or vector norm of values
    near 300 came out 0 or inf), and rms_norm took bf16's own eps (0.0078) where PyTorch takes float32's."""
    strategy, fn, x = HALF_STATISTICS[case]
    trial = run(strategy, fn, x.to(dtype))
    assert trial.status == "verified", trial.reason


@pytest.mark.parametrize("strategy", ["attn/decomposed", "attn/fused"])
@pytest.mark.parametrize("rank", [3, 4, 5, 6])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_any_rank(strategy, rank, causal):
    """5-D q/k/v ([B, H, T, N, D], attention within blocks) had the softmax on axis 3 (max rel error 158)."""
    lead = [2, 3, 2, 2][: rank - 2]
    q, k, v = (torch.randn(*lead, 5, 8) for _ in range(3))
    trial = run(strategy, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), q, k, v)
    expected = ("verified",) if strategy == "attn/decomposed" or rank == 4 else ("refused",)
    assert trial.status in expected, trial.reason


@pytest.mark.parametrize("mask", ["bool", "float"])
def test_attention_5d_dynamic_with_mask(mask):
    q, k, v = torch.randn(2, 3, 4, 5, 8), torch.randn(2, 3, 4, 7, 8), torch.randn(2, 3, 4, 7, 8)
    m = torch.rand(1, 3, 1, 5, 7) > 0.3 if mask == "bool" else torch.randn(1, 3, 1, 5, 7)
    if mask == "bool":
        m[..., 0] = True
    trial = run("attn/decomposed", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), q, k, v, m, dynamic=True)
    assert trial.status == "verified", trial.reason


@pytest.mark.parametrize("strategy", ["attn/decomposed", "attn/fused"])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attention_rows_masked_entirely_are_zero(strategy, kind):
    """A query row the mask hides entirely (a sliding window with right padding, Mistral's decode step) is 0 in
    PyTorch's attention; softmax over all -inf is NaN, so the emitters select 0 there."""
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    if kind == "bool":
        m = torch.rand(2, 1, 3, 5) > 0.4
        m[:, :, 1, :] = False
    else:
        m = torch.randn(1, 2, 3, 5)
        m[..., 2, :] = float("-inf")
    trial = run(strategy, lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), q, k, v, m)
    assert trial.status == "verified", trial.reason


def test_attention_rows_hidden_by_the_causal_part_and_the_mask_together_are_zero():
    """Row 0 sees only key 0 under is_causal; a mask hiding key 0 leaves it nothing (neither alone hides a row)."""
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    m = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    m[..., 0] = False
    fn = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, is_causal=True)  # noqa: E731
    assert fn(q, k, v, m)[:, :, 0].eq(0).all()  # PyTorch's attention gives such a row 0
    trial = run("attn/decomposed", fn, q, k, v, m)
    assert trial.status == "verified", trial.reason


def test_attention_gqa_rank5():
    q, k, v = torch.randn(2, 2, 4, 3, 8), torch.randn(2, 2, 2, 5, 8), torch.randn(2, 2, 2, 5, 8)
    trial = run("attn/decomposed", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), q, k, v)
    assert trial.status == "verified", trial.reason


def test_fused_attention_refuses_value_of_another_width():
    q, k, v = torch.randn(1, 3, 2, 4), torch.randn(1, 3, 5, 4), torch.randn(1, 3, 5, 8)
    trial = run("attn/fused", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)
    assert trial.status == "refused" and "same shape" not in trial.reason and "differ" in trial.reason


@pytest.mark.parametrize("kv_shape", [(1, 3, 5, 8), (2, 1, 5, 8), (1, 1, 5, 8)])
def test_decomposed_attention_broadcasts_a_shared_key_and_value(kv_shape):
    """K and V with 1 at a batch dim where Q has more (one K/V head for all query heads: multi-query attention written
    as a broadcast, Falcon's) broadcast through the products, as in PyTorch's attention."""
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(*kv_shape), torch.randn(*kv_shape)
    trial = run("attn/decomposed", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)
    assert trial.status == "verified", trial.reason


def test_decomposed_attention_refuses_a_key_and_value_broadcast_differently():
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 1, 5, 8), torch.randn(2, 3, 5, 8)
    trial = run("attn/decomposed", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)
    assert trial.status == "refused" and "broadcasting" in trial.reason


@pytest.mark.parametrize("fn,inputs", [
    (lambda a, b: a * b, (torch.rand(2, 1, 3) > 0.5, torch.rand(1, 3) > 0.5)),
    (lambda a, b: a + b, (torch.rand(2, 3) > 0.5, torch.rand(3) > 0.5)),
    (lambda a, b: a <= b, (torch.rand(2, 3) > 0.5, torch.rand(3) > 0.5)),
    (lambda a: torch.amin(a, -1), (torch.rand(3, 4) > 0.5,)),
    (lambda a: torch.softmax(a, -1), (torch.randn(()),)),
    (lambda a: torch.log_softmax(a, 0), (torch.randn(5) * 300,)),  # log(softmax) underflowed to -inf here
    (lambda a, b: a @ b, (torch.randn(1, 1, 1, 3), torch.randn(3))),
    (lambda a, b: a @ b, (torch.randn(2), torch.randn(2, 3, 2, 4))),
    (lambda a, b: a @ b, (torch.randn(4), torch.randn(4))),
    (lambda a, w: F.linear(a, w), (torch.randn(5), torch.randn(3, 5))),
    (lambda a: torch.sort(a, -1), (torch.randn(3, 6).round(),)),  # ties: any order of equal elements is PyTorch's contract
    (lambda a: torch.sort(a, -1), (torch.rand(2, 5) > 0.5,)),
    (lambda a, b: torch.atan2(a, b), (torch.tensor([0.0, -0.0, 0.0, -0.0, 1.0, -0.0]), torch.tensor([0.0, 0.0, -0.0, -0.0, -0.0, -1.0]))),
    (lambda a: torch.argmin(a, 0, keepdim=True), (torch.tensor(3),)),
    (lambda a: torch.max(a, -1), (torch.tensor(3.0),)),
    (lambda a: torch.cumsum(a, -1), (torch.tensor(3, dtype=torch.int32),)),
    (lambda a: torch.slice_scatter(a, a[:, 1:6:2] * 2, 1, 1, 6, 2), (torch.randn(1, 1),)),  # an empty slice
    (lambda a, m, s: a.masked_scatter(m, s), (torch.randn(2, 1), torch.tensor([True, False]), torch.randn(1, 2))),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
     (torch.randn(2, 4, 1, 4), torch.randn(2, 2, 2, 4), torch.randn(2, 2, 2, 1))),  # GQA with a narrower value
    # bfloat16 layer norm over two nearly equal values: decomposed step by step in bf16 it was off by a third
    (lambda x: F.layer_norm(x, (2,)), (torch.tensor([[1.0, 1.0078], [3.0, 3.0156], [-2.0, 2.0]]).bfloat16(),)),
    # bf16/fp16 variance and std of nearly equal values: the mean rounded in half (var 4, not 2)
    (lambda x: x.var(-1), (torch.tensor([[256.0, 258.0], [1024.0, 1032.0]]).bfloat16(),)),
    (lambda x: x.std(-1, keepdim=True), (torch.tensor([[256.0, 258.0], [1024.0, 1032.0]]).bfloat16(),)),
    (lambda x: torch.var_mean(x, 1)[0], (torch.tensor([[2048.0, 2050.0], [4096.0, 4100.0]]).half(),)),
    # one output whose window is smaller than the input: not a global pool (it was emitted as one: max/mean of all)
    (lambda x: F.max_pool1d(x, 1, 3, 0), (torch.randn(1, 1, 2),)),
    (lambda x: F.avg_pool1d(x, 1, 3, 0, ceil_mode=True), (torch.randn(1, 1, 2),)),
    (lambda x: F.max_pool2d(x, (1, 2), (2, 3)), (torch.randn(1, 2, 2, 3),)),
    (lambda x: F.avg_pool3d(x, (1, 1, 2), 2), (torch.randn(1, 1, 2, 1, 3),)),
    (lambda x: F.max_pool2d(x, 5, ceil_mode=True), (torch.randn(1, 1, 3, 3),)),  # a window past the input: global
])
def test_fuzzer_findings(fn, inputs):
    ops = {"mul": "ew/mul", "add": "ew/add", "le": "cmp/le", "amin": "reduce/amin", "softmax": "reduce/softmax",
           "log_softmax": "reduce/log-softmax", "matmul": "mm/matmul", "linear": "mm/linear", "sort": "reduce/sort-topk",
           "atan2": "ew/atan2", "argmin": "reduce/argmax", "max": "reduce/max-min-dim", "cumsum": "scan/cumsum-layer",
           "slice_scatter": "scatter/slice-scatter", "masked_scatter": "scatter/masked-scatter",
           "scaled_dot_product_attention": "attn/decomposed", "layer_norm": "norm/layer-norm-decomposed", "var": "reduce/var-mean",
           "std": "reduce/var-mean", "var_mean": "reduce/var-mean", "_native_batch_norm_legit": "norm/batch-stats", "max_pool1d": "pool/max", "max_pool2d": "pool/max", "max_pool2d_with_indices": "pool/max",
           "max_pool3d": "pool/max", "avg_pool2d": "pool/avg", "avg_pool3d": "pool/avg", "avg_pool1d": "pool/avg"}
    from opmap.loading.capture import capture_callable

    graph = capture_callable(fn, *inputs).graph
    op = next(n.op.split(".")[1] for n in graph if n.op.startswith("aten.") and n.op.split(".")[1] in ops)
    trial = run(ops[op], fn, *inputs)
    assert trial.status == "verified", trial.reason


@pytest.mark.parametrize("fn,inputs,match", [
    (lambda a, b: torch.einsum("ij,jk->ik", a, b), (torch.randint(0, 3, (2, 2), dtype=torch.int32),) * 2, "float types"),
    (lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(5, 4), _random_samples=s),
     (torch.randn(1, 2, 9, 11).bfloat16(), torch.rand(1, 2, 2).bfloat16()), "bfloat16"),
    (lambda a, i, s: a.scatter_add(0, i, s), (torch.rand(5, 3) > 0.5, torch.tensor([[0, 3, 1]]).expand(3, 3), torch.rand(3, 3) > 0.5), "bool"),
    (lambda x, i, v: x.index_put((i,), v, accumulate=True), (torch.rand(3) > 0.5, torch.tensor([0, 2, 2, -1]), torch.rand(1) > 0.5), "bool"),
    (lambda a, w, b, m, v: torch.ops.aten.native_batch_norm(a, w, b, m, v, False, 0.1, 1e-3)[0],
     (torch.randn(1, 1, 1), torch.randn(1), torch.randn(1), torch.randn(1), torch.rand(2) + 1), "one value per channel"),
    (lambda x: F.max_pool3d(x, [2, 1, 1], [3, 1, 2], [1, 0, 0], ceil_mode=True), (torch.randn(1, 1, 1, 1, 1),), "drops"),
    (lambda x: F.max_pool1d(x, 1, 3, 0, ceil_mode=True), (torch.randn(1, 1, 2),), "drops"),  # was a global max: wrong
    (lambda a, w, b: torch.ops.aten._native_batch_norm_legit.no_stats(a, w, b, True, 0.1, 1e-5)[0],
     (torch.randn(1, 1, 1, 1), torch.randn(1), torch.randn(2)), "one value per channel"),  # the emitter broke on it
    (lambda a: torch.ops.prims.sum.default(a, [1]), (torch.rand(2, 3) > 0.5,), "int64 counts"),  # the meta says bool
    (lambda x: torch.histc(x, bins=4, min=-2, max=2), (torch.randn(50).bfloat16(),), "bfloat16"),
    (lambda x, w: F.conv_transpose2d(x, w, None, [1, 2], [1, 1], [0, 0], 1, [1, 2]), (torch.randn(1, 1, 3, 1), torch.randn(1, 1, 1, 2)),
     "unless the kernel is a constant"),
])
def test_fuzzer_findings_refused(fn, inputs, match):
    strategy = {"einsum": "mm/einsum", "fractional_max_pool2d": "fmp/exact-samples", "scatter_add": "scatter/scatter-add",
                "index_put": "scatter/index-put-accumulate", "native_batch_norm": "norm/batch-norm", "max_pool3d": "pool/max",
                "max_pool3d_with_indices": "pool/max", "max_pool1d": "pool/max", "_native_batch_norm_legit": "norm/batch-stats",
                "conv_transpose2d": "conv/conv-transpose", "sum": "reduce/prims-sum",
                "histc": "hist/histc-one-hot"}
    from opmap.loading.capture import capture_callable

    graph = capture_callable(fn, *inputs).graph
    op = next(n.op.split(".")[1] for n in graph if n.op.startswith(("aten.", "prims.")) and n.op.split(".")[1] in strategy)
    trial = run(strategy[op], fn, *inputs)
    assert trial.status == "refused" and match in trial.reason, (trial.status, trial.reason)


def test_a_case_outside_pytorchs_shape_rules_is_invalid_before_it_runs():
    """PyTorch's CPU ``_weight_norm`` does not check ``g`` against ``v``: a grown ``v`` made it write out of bounds and the
    campaign aborted minutes later in an unrelated allocation (seed 163). Cases now pass PyTorch's shape rules (fake
    tensors) before running for real; run in a child process, whose exit would show the heap corruption."""
    import subprocess
    import sys

    script = ("import torch\nfrom opmap.service import load_rules\nfrom opmap.checking import fuzz\n"
              "rs = load_rules(None)\ncase = fuzz.Case('grown', lambda v, g: torch._weight_norm(v, g, 0), "
              "(torch.randn(7, 3, 3), torch.randn(4, 1, 1)))\n"
              "trials = [fuzz.run_case(rs.strategies['norm/weight-norm'], case, rs) for _ in range(20)]\n"
              "junk = [torch.randn(100) for _ in range(5000)]\nprint(trials[-1].status)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("invalid"), (done.returncode, done.stderr[-500:])
