"""Recurrent layers: LSTM, GRU and plain RNN (``aten.lstm.input``, ``aten.gru.input``, ``aten.rnn_tanh/relu.input``).

TensorRT 10+ has no RNN layer of its own, so each layer and direction is a matrix product for every time step's input
projection at once (``x @ W_ih^T + b_ih``, outside any loop) followed by the recurrence over time, built one of two
ways, chosen by cost like any other strategy:

- ``rnn/loop``: an ILoop per layer and direction: a trip limit (the sequence length, dynamic or not), an iterator over
  the time axis of the projected input (reversed for the backward direction), recurrences for ``h`` (and ``c``), the
  cell's layers once, and loop outputs: the per-step ``h`` concatenated along time (REVERSE for the backward direction,
  so that step t lands at index t) and the last values of the recurrences (TensorRT takes LAST_VALUE of a recurrence's
  output only; it is the value after the last iteration).
- ``rnn/unrolled``: the same cell repeated for every time step; the length must be static and at most
  :data:`UNROLL_LIMIT` (the network grows with it).

Gate orders follow PyTorch: LSTM ``i, f, g, o``; GRU ``r, z, n`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
``proj_size`` (LSTM): ``h = W_hr (o * tanh(c))``. ``aten.lstm.data`` (packed sequences) is not listed: torch.export
cannot produce it (``pack_padded_sequence`` fails at export on its data-dependent batch sizes).

A dynamic sequence length: torch.export (2.13) computes these ops' output shapes by running PyTorch's decomposition,
which loops over the time steps in Python (with the oneDNN path switched off during export), so the length is
specialised to the example's. :func:`export_dynamic_length` exports with shape-only kernels for the four ops instead (the
graph keeps the ops themselves), then checks the program against the model.
"""

import contextlib
from typing import Any

import torch

from opmap.loading.graph import Ref
from opmap.planning.strategy import reject
from opmap.errors import OpmapError
from opmap.rules.common import define, float_input, t

ns = globals()
OPS = ["aten.lstm.input", "aten.gru.input", "aten.rnn_tanh.input", "aten.rnn_relu.input"]
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
UNROLL_LIMIT = 32  # time steps the unrolled strategy repeats the cell for (its layers grow with length x layers x directions)


def _kind(node) -> str:
    return node.op.split(".")[1]


def _groups(node) -> tuple[list[list], bool]:
    """The params per (layer, direction), in PyTorch's order (l0, l0_reverse, l1, ...), and whether LSTM projects."""
    params = list(node.arg("params") or [])
    cells = node.arg("num_layers", 1) * (2 if node.arg("bidirectional") else 1)
    per = len(params) // cells if cells else 0
    base = 4 if node.arg("has_biases") else 2
    return [params[i * per:(i + 1) * per] for i in range(cells)], per == base + 1


# -- checks ---------------------------------------------------------------------------------------
def rnn_eval_mode(node, **_):
    """Dropout between stacked layers runs in training mode only."""
    p, train = node.arg("dropout", 0.0), node.arg("train", False)
    assert not (train and p and node.arg("num_layers", 1) > 1), (
        f"dropout {p} between the layers runs in training mode; export the model with model.eval()")


def rnn_layout(node, graph, **_):
    """The params are (w_ih, w_hh[, b_ih, b_hh][, w_hr]) per layer and direction, static, with the gates the op has."""
    meta = node.meta("input")
    assert meta is not None and meta.rank == 3, f"input is {meta}; the layer takes a [seq, batch, features] tensor"
    kind = _kind(node)
    cells = node.arg("num_layers", 1) * (2 if node.arg("bidirectional") else 1)
    params = list(node.arg("params") or [])
    base = 4 if node.arg("has_biases") else 2
    assert cells and len(params) % cells == 0 and len(params) // cells in (base, base + (kind == "lstm")), (
        f"{len(params)} params for {cells} layer-directions: not PyTorch's (w_ih, w_hh, b_ih, b_hh, w_hr) layout")
    assert isinstance(meta.shape[2], int), f"the feature dim {meta.shape[2]} is dynamic; the weights fix it"
    groups, _ = _groups(node)
    for k, group in enumerate(groups):
        metas = [graph.meta_of(r) if isinstance(r, Ref) else None for r in group]
        assert all(m is not None and m.is_static and m.dtype == meta.dtype for m in metas), (
            f"the weights of layer-direction {k} are not static {meta.dtype} tensors")
        rows = metas[0].shape[0]
        assert rows % GATES[kind] == 0 and metas[1].shape[0] == rows, (
            f"w_ih and w_hh have {rows} and {metas[1].shape[0]} rows: not {GATES[kind]} gates of one hidden size")


def static_short_sequence(node, **_):
    """Unrolling repeats the cell per time step: the length must be known at build time and small."""
    meta = node.meta("input")
    length = meta.shape[1 if node.arg("batch_first") else 0]
    assert isinstance(length, int), f"the sequence length {length} is dynamic; only a loop serves a length known at run time"
    assert length <= UNROLL_LIMIT, (
        f"a sequence of {length} steps: unrolling repeats the cell per step, at most {UNROLL_LIMIT}; a loop serves longer ones")


# -- emit -----------------------------------------------------------------------------------------
def _matmul_t(ctx, a, w):
    """a @ w^T (w [n, k], broadcast over a's leading dims)."""
    w = ctx.unsqueeze_to(w, ctx.rank(a))
    op = ctx.trt.MatrixOperation
    return ctx.out(ctx.net.add_matrix_multiply(a, op.NONE, w, op.TRANSPOSE), "matmul")


def _gate(ctx, x, count, hidden, k):
    """Gate ``k`` of ``count`` stacked along the last axis of a [batch, count*hidden] tensor: [batch, hidden]."""
    if count == 1:
        return x
    split = ctx.reshape(x, [-1, count, hidden])
    return ctx.gather(split, ctx.const(k, "int32"), 1)


def _cell(ctx, kind, hidden, xg, h, c, w):
    """One time step: (h', c') from the projected input ``xg`` [batch, gates*hidden] and the state."""
    w_hh, b_hh, w_hr = w["w_hh"], w["b_hh"], w["w_hr"]
    hg = _matmul_t(ctx, h, w_hh)
    if b_hh is not None:
        hg = ctx.elementwise(hg, b_hh, "SUM")
    if kind in ("rnn_tanh", "rnn_relu"):
        return ctx.activation(ctx.elementwise(xg, hg, "SUM"), "TANH" if kind == "rnn_tanh" else "RELU"), None
    if kind == "gru":
        r = ctx.activation(ctx.elementwise(_gate(ctx, xg, 3, hidden, 0), _gate(ctx, hg, 3, hidden, 0), "SUM"), "SIGMOID")
        z = ctx.activation(ctx.elementwise(_gate(ctx, xg, 3, hidden, 1), _gate(ctx, hg, 3, hidden, 1), "SUM"), "SIGMOID")
        n = ctx.activation(ctx.elementwise(_gate(ctx, xg, 3, hidden, 2),
                                           ctx.elementwise(r, _gate(ctx, hg, 3, hidden, 2), "PROD"), "SUM"), "TANH")
        return ctx.elementwise(n, ctx.elementwise(z, ctx.elementwise(h, n, "SUB"), "PROD"), "SUM"), None  # (1-z)n + zh
    gates = ctx.elementwise(xg, hg, "SUM")
    i, f, g, o = (_gate(ctx, gates, 4, hidden, k) for k in range(4))
    c_new = ctx.elementwise(ctx.elementwise(ctx.activation(f, "SIGMOID"), c, "PROD"),
                            ctx.elementwise(ctx.activation(i, "SIGMOID"), ctx.activation(g, "TANH"), "PROD"), "SUM")
    h_new = ctx.elementwise(ctx.activation(o, "SIGMOID"), ctx.activation(c_new, "TANH"), "PROD")
    if w_hr is not None:
        h_new = _matmul_t(ctx, h_new, w_hr)
    return h_new, c_new


def _trips(ctx, length):
    """The sequence length as the 0-d int32 tensor a loop's trip limit and its concatenating outputs take."""
    if isinstance(length, int):
        return ctx.const(length, "int32")
    return ctx.scalar(ctx.cast(ctx.size(length), "int32"))


def _run_loop(ctx, kind, hidden, xw, axis, reverse, h0, c0, w, length):
    """ILoop over ``axis`` of ``xw``: (the per-step h along ``axis``, h after the last step, c after it)."""
    loop = ctx.net.add_loop()
    trips = _trips(ctx, length)
    ctx.layer(loop.add_trip_limit(trips, ctx.trt.TripLimit.COUNT), "trips")
    step = ctx.layer(loop.add_iterator(xw, axis, reverse), "step").get_output(0)
    h_rec = ctx.layer(loop.add_recurrence(h0), "h")
    c_rec = ctx.layer(loop.add_recurrence(c0), "c") if c0 is not None else None
    h, c = _cell(ctx, kind, hidden, step, h_rec.get_output(0), c_rec.get_output(0) if c_rec else None, w)
    h_rec.set_input(1, h)
    seq = loop.add_loop_output(h, ctx.trt.LoopOutput.REVERSE if reverse else ctx.trt.LoopOutput.CONCATENATE, axis)
    seq.set_input(1, trips)
    out = ctx.out(seq, "sequence")
    h_last = ctx.out(loop.add_loop_output(h_rec.get_output(0), ctx.trt.LoopOutput.LAST_VALUE), "h-last")
    c_last = None
    if c_rec is not None:
        c_rec.set_input(1, c)
        c_last = ctx.out(loop.add_loop_output(c_rec.get_output(0), ctx.trt.LoopOutput.LAST_VALUE), "c-last")
    return out, h_last, c_last


def _run_unrolled(ctx, kind, hidden, xw, axis, reverse, h0, c0, w, length):
    """The cell once per time step (static ``length``), the steps' h concatenated along ``axis`` in time order."""
    h, c = h0, c0
    width = ctx.node.outputs[0].shape[-1] // (2 if ctx.node.arg("bidirectional") else 1)
    outs = [None] * length
    for s in range(length):
        index = length - 1 - s if reverse else s
        h, c = _cell(ctx, kind, hidden, ctx.gather(xw, ctx.const(index, "int32"), axis), h, c, w)
        outs[index] = ctx.reshape(h, [1, -1, width] if axis == 0 else [-1, 1, width])
    return (ctx.concat(outs, axis) if length > 1 else outs[0]), h, c


def _stack(ctx, states, width):
    """[batch, width] states of every layer and direction as the [layers*directions, batch, width] h_n / c_n."""
    return ctx.concat([ctx.reshape(s, [1, -1, width]) for s in states], 0)


def _emit(run):
    def emit(ctx, node):
        kind = _kind(node)
        dtype = ctx.output_dtype()
        x = ctx.cast(ctx.input("input"), dtype)
        axis = 1 if node.arg("batch_first") else 0
        length = node.meta("input").shape[axis]
        directions = 2 if node.arg("bidirectional") else 1
        hx = node.arg("hx")
        h_all = ctx.cast(ctx.tensor(hx[0] if isinstance(hx, (list, tuple)) else hx), dtype)
        c_all = ctx.cast(ctx.tensor(hx[1]), dtype) if kind == "lstm" else None
        groups, proj = _groups(node)
        bias = bool(node.arg("has_biases"))
        h_last, c_last = [], []
        for layer in range(node.arg("num_layers", 1)):
            seqs = []
            for d in range(directions):
                k = layer * directions + d
                p = [ctx.cast(ctx.tensor(r), dtype) for r in groups[k]]
                w = {"w_hh": p[1], "b_hh": p[3] if bias else None, "w_hr": p[-1] if proj else None}
                hidden = ctx.graph_meta(groups[k][1]).shape[0] // GATES[kind]
                xw = _matmul_t(ctx, x, p[0])
                if bias:
                    xw = ctx.elementwise(xw, p[2], "SUM")
                index = ctx.const(k, "int32")
                h0 = ctx.gather(h_all, index, 0)
                c0 = ctx.gather(c_all, index, 0) if c_all is not None else None
                seq, h, c = run(ctx, kind, hidden, xw, axis, d == 1, h0, c0, w, length)
                seqs.append(seq)
                h_last.append(h)
                c_last.append(c)
            x = seqs[0] if directions == 1 else ctx.concat(seqs, -1)
        outs = [x, _stack(ctx, h_last, node.outputs[1].shape[-1])]
        if kind == "lstm":
            outs.append(_stack(ctx, c_last, node.outputs[2].shape[-1]))
        return outs

    return emit


# -- exporting with a dynamic sequence length ---------------------------------------------------------
def _output_shapes(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first, *, lstm):
    """The op's outputs as empty tensors of the right (symbolic) shapes: what export needs to record the op itself."""
    h = hx[0] if lstm else hx
    steps, batch = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    width = (2 if bidirectional else 1) * h.shape[2]
    out = input.new_empty((batch, steps, width) if batch_first else (steps, batch, width))
    return (out, *(s.new_empty(s.shape) for s in hx)) if lstm else (out, hx.new_empty(hx.shape))


@contextlib.contextmanager
def _shape_only_kernels():
    from torch._C import DispatchKey

    key = DispatchKey.CompositeImplicitAutograd
    ops = [(getattr(torch.ops.aten, name).input, name == "lstm") for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")]
    saved = {op: op.py_kernels.get(key) for op, _ in ops}
    for op, lstm in ops:
        op.py_kernels[key] = lambda *args, lstm=lstm: _output_shapes(*args, lstm=lstm)
        op._dispatch_cache.clear()
    try:
        yield
    finally:
        for op, kernel in saved.items():
            if kernel is None:
                op.py_kernels.pop(key, None)
            else:
                op.py_kernels[key] = kernel
            op._dispatch_cache.clear()


def export_dynamic_length(model: torch.nn.Module, args: tuple, kwargs: dict | None = None, *, dynamic_shapes: Any = None,
                          check_inputs: tuple | None = None, atol: float = 1e-5) -> Any:
    """``torch.export.export`` for a model with LSTM/GRU/RNN layers whose sequence length should stay dynamic.

    Inside, the four ops get kernels that only shape their outputs, so export records each op with a symbolic length
    (PyTorch's own kernels run the exported program). The program is then run on ``args`` (and ``check_inputs`` if
    given, e.g. another length) and must match the model within ``atol``: were an op decomposed instead of recorded,
    its outputs would be empty tensors and this check fails, so a wrong program never leaves this function."""
    kwargs = kwargs or {}
    with _shape_only_kernels():
        program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes)
    module = program.module()
    for call in [args] + ([check_inputs] if check_inputs is not None else []):
        with torch.no_grad():
            got, want = module(*call, **(kwargs if call is args else {})), model(*call, **(kwargs if call is args else {}))
        got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
        if len(got) != len(want) or not all(torch.allclose(g, w, atol=atol) for g, w in zip(got, want)):
            raise OpmapError("the exported program does not match the model; export it without export_dynamic_length")
    return program


# -- examples -------------------------------------------------------------------------------------
class Recurrent(torch.nn.Module):
    """``torch.nn.<cls>(*args, **kwargs)`` with seeded weights, returning its output and final states flat; with
    ``state``, the initial states are inputs (else PyTorch starts from zeros)."""

    def __init__(self, cls: str, *args, seed: int = 0, **kwargs):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.rnn = getattr(torch.nn, cls)(*args, **kwargs)

    def forward(self, x, h0=None, c0=None):
        out, h = self.rnn(x, None if h0 is None else (h0, c0) if c0 is not None else h0)
        return (out, *h) if isinstance(h, tuple) else (out, h)


CHECKS = [float_input, rnn_eval_mode, rnn_layout]
EXAMPLES = [  # every op and option once: GRU with h0, RNN tanh and relu (no bias), LSTM bidirectional batch_first with
    # (h0, c0), LSTM with proj_size
    (Recurrent("GRU", 3, 4).eval(), t(5, 2, 3), t(1, 2, 4)),
    (Recurrent("RNN", 3, 4, 2).eval(), t(4, 2, 3)),
    (Recurrent("RNN", 3, 4, nonlinearity="relu", bias=False, bidirectional=True).eval(), t(4, 2, 3)),
    (Recurrent("LSTM", 3, 4, 2, bidirectional=True, batch_first=True).eval(), t(2, 5, 3), t(4, 2, 4), t(4, 2, 4)),
    (Recurrent("LSTM", 3, 5, proj_size=2).eval(), t(4, 2, 3)),
]
TRAINING = (Recurrent("LSTM", 3, 4, 2, dropout=0.5).train(), t(4, 2, 3))

define(ns, "rnn/loop", OPS, "decompose",
       layers="per layer and direction: MatrixMultiply for every step's input projection, then an ILoop (trip limit = the "
              "sequence length, an iterator over time, recurrences for h and c, the cell's MatrixMultiply, ElementWise and "
              "Activation layers, loop outputs CONCATENATE/REVERSE and LAST_VALUE); Concatenation of directions and states",
       example=(Recurrent("LSTM", 3, 4).eval(), t(5, 2, 3)), dynamic=({1: "batch"},),
       examples=EXAMPLES, bad=TRAINING, match="dropout", checks=CHECKS, emit=_emit(_run_loop))
define(ns, "rnn/unrolled", OPS, "decompose",
       layers=f"per layer and direction: MatrixMultiply for every step's input projection, then the cell's MatrixMultiply, "
              f"ElementWise and Activation layers repeated for each time step (a static length <= {UNROLL_LIMIT}); "
              "Concatenation of the steps, directions and states",
       example=(Recurrent("LSTM", 3, 4).eval(), t(5, 2, 3)),
       # a dynamic length is refused too ("only a loop serves"): tests/test_recurrent.py exports one with
       # export_dynamic_length, which an example's plain torch.export cannot
       examples=EXAMPLES + [reject(Recurrent("GRU", 3, 4).eval(), t(UNROLL_LIMIT + 1, 1, 3), match="at most")],
       bad=TRAINING, match="dropout",
       checks=CHECKS + [static_short_sequence], emit=_emit(_run_unrolled))
