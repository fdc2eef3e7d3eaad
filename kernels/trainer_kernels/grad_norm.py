"""Triton global gradient L2 norm: ``torch.ops.trainer_triton.grad_norm`` (schema of ``torch.ops.trainer.grad_norm``).

Each program writes the sum of squares of its block to its own slot of a partials buffer (no
atomics, so the result is deterministic); the op then sums the partials and takes the root.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from . import _multi_tensor as mt

BLOCK = 2048


@triton.jit
def _sumsq_body(G, N, blk, IDX, OUT, OFF, BLOCK: tl.constexpr):
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    g = tl.load(G + offs, mask=offs < N, other=0.0).to(tl.float32)
    tl.store(OUT + OFF + tl.program_id(0), tl.sum(g * g, axis=0))


@triton_op("trainer_triton::grad_norm", mutates_args={})
def grad_norm(grads: list[Tensor], grad_scale: Optional[Tensor] = None) -> Tensor:
    if len(grads) == 0:
        return torch.zeros((), dtype=torch.float32)
    dev = grads[0].device
    grads = [g.contiguous() for g in grads]
    groups = []
    total = 0
    for dtype, idx in mt.by_dtype(grads).items():
        for lo, hi, starts in mt.launches([grads[i].numel() for i in idx], BLOCK):
            groups.append((idx[lo:hi], starts, total))
            total += starts[-1]
    partial = torch.zeros(max(total, 1), dtype=torch.float32, device=dev)
    for ids, starts, off in groups:
        if starts[-1] == 0:
            continue
        args = []
        for i in ids:
            args += [grads[i], grads[i].numel()]
        kernel = mt.get_kernel(__name__, "_sumsq_body", ("G",), ("OUT", "OFF"), ("BLOCK",), len(ids))
        wrap_triton(kernel)[(starts[-1],)](*args, *starts, 0, partial, off, BLOCK=BLOCK)
    norm = partial.double().sum().sqrt().float()
    if grad_scale is not None:
        norm = norm / grad_scale.to(device=dev, dtype=torch.float32).reshape(())
    return norm
