"""Ops no TensorRT network computes as exported, each with the reason and what the user can do instead.

These rules only refuse: their reject examples are the proof (``opmap rules test`` judges them), and
bench/COVERAGE.md quotes their reasons. Where the op *could* be computed after a change to the model or the export,
the reason names that change.
"""

import torch

from opmap.planning.strategy import reject, strategy
from opmap.rules.common import t

A = torch.ops.aten
Q = t(1, 2, 4, 8)


def _refuse(reason: str) -> None:
    assert False, reason


FFT = ("{op} takes or returns complex tensors: TensorRT has no complex dtype. A DFT is exact as a matrix product: compute "
       "it in the model with real cos/sin matrices (torch.cos/torch.sin of the outer product of positions, times "
       "2*pi/n), keeping real and imaginary parts as separate real tensors, and the graph maps to MatrixMultiply")


@strategy("fft/complex", op=["aten._fft_r2c.default", "aten._fft_c2r.default", "aten._fft_c2c.default",
                             "aten.view_as_real.default", "aten.view_as_complex.default"], kind="plugin",
          examples=[reject(lambda a: torch.view_as_real(A._fft_r2c.default(a, [0], 0, True)), t(8), match="complex dtype"),
                    reject(lambda a: A._fft_c2r.default(torch.view_as_complex(a), [0], 0, 8), t(5, 2), match="complex dtype",
                           node="_fft_c2r")]
                   + [reject(lambda a: torch.view_as_real(torch.fft.fft(torch.view_as_complex(a))), t(8, 2), match="complex dtype",
                             node=name, decompose=True) for name in ("view_as_complex", "_fft_c2c", "view_as_real")],
          no_accept="TensorRT has no complex tensors; the rule can only refuse")
def rule_fft_complex(node):
    """FFTs and complex views: refused (no complex dtype in TensorRT), with the exact real-valued rewrite to use."""
    _refuse(FFT.format(op=node.op))


@strategy("core/host-scalar", op=["aten._local_scalar_dense.default", "aten.item.default"], kind="plugin",
          examples=[reject(lambda a: a * A._local_scalar_dense.default(a.sum()), t(3), match="host"),
                    reject(lambda a: a * a.sum().item(), t(3), match="host")],
          no_accept="a network's values never leave the device as host scalars; the rule can only refuse")
def rule_host_scalar(node):
    """``.item()``: the tensor's value read back to the host as a Python number."""
    _refuse(f"{node.op} (.item()) reads a tensor's value back to the host as a Python number, and an engine has no host "
            "scalars: everything it computes stays a tensor. Keep the value a 0-d tensor in the model (drop .item(); "
            "broadcasting does the rest)")


@strategy("norm/batch-norm-training", op=["aten._native_batch_norm_legit.default", "aten._native_batch_norm_legit_functional.default"],
          kind="plugin",
          examples=[reject(lambda a, rm, rv: A._native_batch_norm_legit.default(a, None, None, rm, rv, True, 0.1, 1e-5)[0],
                           t(2, 3, 4), torch.zeros(3), torch.ones(3), match="model.eval()"),
                    reject(torch.nn.BatchNorm1d(3), t(2, 3, 4), match="model.eval()", decompose=True)],  # a training-mode module
          no_accept="training-mode batch norm updates its running statistics; the rule can only refuse")
def rule_batch_norm_training(node):
    """Batch norm in training mode: normalises by batch statistics and writes running_mean/running_var."""
    _refuse(f"{node.op} is batch norm in training mode: every call updates running_mean and running_var in place, and "
            "an engine keeps no state between calls. Export the model with model.eval() (the graph then holds "
            "_native_batch_norm_legit_no_training, which norm/* maps)")


@strategy("core/resize-storage", op=["aten.resize_.default", "aten.resize.default"], kind="plugin",
          examples=[reject(lambda a: (a * 1).resize_(6), t(2, 3), match="storage"),
                    reject(lambda a: A.resize(a * 1, [6]), t(2, 3), match="storage")],
          no_accept="resize_ reallocates storage and leaves new elements uninitialised; the rule can only refuse")
def rule_resize_storage(node):
    """``resize_``: a tensor's storage reallocated in place."""
    _refuse(f"{node.op} reallocates a tensor's storage in place, keeping its old elements in memory order and leaving "
            "any new ones uninitialised: TensorRT tensors have no storage to resize. Use reshape/view (same number of "
            "elements) or torch.zeros/new_empty for a new size")


@strategy("attn/cuda-kernel", op=["aten._scaled_dot_product_flash_attention.default",
                                  "aten._scaled_dot_product_efficient_attention.default",
                                  "aten._scaled_dot_product_cudnn_attention.default"], kind="plugin",
          examples=[reject(lambda q: A._scaled_dot_product_flash_attention.default(q, q, q)[0], Q, match="re-export"),
                    reject(lambda q: A._scaled_dot_product_efficient_attention.default(q, q, q, None, False)[0], Q, match="re-export"),
                    reject(lambda q: A._scaled_dot_product_cudnn_attention.default(q, q, q, None, False)[0], Q, match="re-export")],
          no_accept="these overloads are CUDA kernels that PyTorch cannot run here, so no mapping of them can be verified")
def rule_cuda_attention(node):
    """A CUDA-only fused attention kernel, recorded in the graph when the model was exported on a GPU."""
    _refuse(f"{node.op} is a CUDA-only attention kernel (its extra outputs are the kernel's logsumexp and RNG state): "
            "PyTorch cannot run it on this machine, so no network for it can be verified. Re-export the model on CPU, or "
            "inside torch.nn.attention.sdpa_kernel(SDPBackend.MATH), so the graph holds "
            "aten.scaled_dot_product_attention, which attn/* map")
