"""GELU after a GEMM (trainer/compile/gelu.py, csrc/gelu.cpp): the kernels against ATen's GELU and
float64, and the graph rewrite that puts them after the GEMMs of a captured step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from trainer.compile import _ext
from trainer.compile import gelu as G

pytestmark = pytest.mark.skipif(not _ext.built("bias_gelu"), reason="trainer._C (the C++ extension) is not built")

aten = torch.ops.aten
ops = torch.ops.trainer


@pytest.mark.parametrize("shape", [(1024, 512), (7, 37), (3, 5, 16), (2, 1), (0, 8)])
def test_kernels_match_aten_and_float64(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x, grad = torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g)
    b = torch.randn(shape[-1], generator=g)
    z = x + b
    for got, want, exact in (
        (ops.bias_gelu(x, b), F.gelu(z), F.gelu(z.double())),
        (ops.bias_gelu(z), F.gelu(z), F.gelu(z.double())),
        (ops.bias_gelu_backward(grad, x, b), aten.gelu_backward(grad, z), aten.gelu_backward(grad.double(), z.double())),
        (ops.bias_gelu_backward(grad, z), aten.gelu_backward(grad, z), aten.gelu_backward(grad.double(), z.double())),
    ):
        assert got.shape == want.shape and got.is_contiguous()
        if not want.numel():
            continue
        torch.testing.assert_close(got, want, rtol=1e-6, atol=2e-6)
        # as close to the float64 result as ATen's own float32 kernel (same erf approximation)
        assert (got.double() - exact).abs().max() <= 1.5 * (want.double() - exact).abs().max() + 1e-7


def test_kernels_take_strided_inputs_and_check_arguments():
    x = torch.randn(16, 40)[:, :24]  # rows strided
    grad = torch.randn(24, 16).t()  # transposed
    b = torch.randn(24)
    torch.testing.assert_close(ops.bias_gelu(x, b), F.gelu(x + b), rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(ops.bias_gelu_backward(grad, x, b), aten.gelu_backward(grad, x + b),
                               rtol=1e-6, atol=2e-6)
    with pytest.raises(RuntimeError, match="bias must be"):
        ops.bias_gelu(x, torch.randn(23))
    with pytest.raises(RuntimeError, match="float32"):
        ops.bias_gelu(x.double())
    with pytest.raises(RuntimeError, match="grad must be"):
        ops.bias_gelu_backward(grad[:3], x, b)


def _linear_gelu_step(x, w, b, w2, go):
    h = F.gelu(F.linear(x, w, b))
    out = F.linear(h, w2)
    return out, torch.autograd.grad(out, (x, w, b, w2), go)


def _args(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 8, 20, generator=g, requires_grad=True), torch.randn(36, 20, generator=g, requires_grad=True),
            torch.randn(36, generator=g, requires_grad=True), torch.randn(5, 36, generator=g, requires_grad=True),
            torch.randn(2, 8, 5, generator=g))


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_fold_puts_the_kernels_after_the_gemm_forward_and_backward():
    args = _args()
    gm = make_fx(_linear_gelu_step, tracing_mode="fake")(*args)
    assert aten.gelu.default in _targets(gm) and aten.gelu_backward.default in _targets(gm)
    assert G.fold_bias_gelu(gm) == 1
    targets = _targets(gm)
    assert aten.gelu.default not in targets and aten.gelu_backward.default not in targets
    assert aten.addmm.default not in targets  # the bias goes into the kernels
    assert targets.count(ops.bias_gelu.default) == 1 and targets.count(ops.bias_gelu_backward.default) == 1
    (out, grads), (want_out, want_grads) = gm(*args), _linear_gelu_step(*args)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert G.fold_bias_gelu(gm) == 0


def test_fold_leaves_other_gelus_to_inductor():
    def other_readers(x, w, b):
        z = F.linear(x, w, b)
        return F.gelu(z), z.sum()  # the GEMM output is read by a sum too

    def not_after_a_gemm(x, w, b):
        return F.gelu(x * 2)

    def tanh_form(x, w, b):
        return F.gelu(F.linear(x, w, b), approximate="tanh")

    args = _args()[:3]
    for fn in (other_readers, not_after_a_gemm, tanh_form):
        gm = make_fx(fn, tracing_mode="fake")(*args)
        assert G.fold_bias_gelu(gm) == 0, fn.__name__
