"""torch.ops.trainer.* inside torch.compile(fullgraph=True): one node each, no graph break, no
recompile when lr/step/grad_scale/found_inf/clip_coef change (they are tensors), and the same
numbers as eager. aot_eager keeps this fast while still functionalizing the mutating ops."""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import trainer.optim as topt
from trainer.optim import functional as F

pytestmark = pytest.mark.skipif(not topt.HAS_CPP, reason="trainer._C not built")


def _state():
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
    return p, [torch.randn(x.shape, generator=g) for x in p], [torch.zeros_like(x) for x in p], [
        torch.zeros_like(x) for x in p]


def test_all_ops_compile_fullgraph_without_recompiles():
    def step(p, g, m, v, b, lr, st, scale, fi, clip):
        norm = F.grad_norm(g, scale, backend="cpp")
        F.fused_adamw_(p, g, m, v, [], st, lr, 0.9, 0.999, 1e-8, 0.01, False, False, scale, fi, clip, backend="cpp")
        F.fused_sgd_(p, g, b, lr, 0.9, 0.0, 0.0, False, False, False, scale, fi, clip, backend="cpp")
        F.fused_lion_(p, g, m, lr, 0.9, 0.99, 0.0, False, scale, fi, clip, backend="cpp")
        return norm

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, fullgraph=True, backend=counter)
    p, g, m, v = _state()
    pe, ge, me, ve = _state()
    b, be = [torch.zeros_like(x) for x in p], [torch.zeros_like(x) for x in p]
    for i in range(3):  # lr, step, scale, found_inf and clip all change value
        args = (torch.tensor(1e-2 / (i + 1)), torch.tensor(float(i + 1)), torch.tensor(2.0 ** i),
                torch.tensor(float(i == 1)), torch.tensor(0.5 + 0.1 * i))
        n1 = compiled(p, g, m, v, b, *args)
        n2 = step(pe, ge, me, ve, be, *args)
        torch.testing.assert_close(n1, n2)
        for x, y in zip(p + m + v + b, pe + me + ve + be):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert counter.frame_count == 1, "recompiled or graph break"
    names = [str(n.target) for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    for op in ("trainer.grad_norm", "trainer.fused_adamw_", "trainer.fused_sgd_", "trainer.fused_lion_"):
        assert sum(name.startswith(op) for name in names) == 1, (op, names)
