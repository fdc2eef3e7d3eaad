"""Triton multi-tensor SGD (momentum, dampening, nesterov, weight decay):
``torch.ops.trainer_triton.fused_sgd_``, same schema and semantics as ``torch.ops.trainer.fused_sgd_``."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from . import _multi_tensor as mt

BLOCK = 1024


@triton.jit
def _sgd_body(P, G, B, W, N, blk, IDX, SC, FI, momentum, dampening, wd,
              BLOCK: tl.constexpr, MOMENTUM: tl.constexpr, MASTER: tl.constexpr, NESTEROV: tl.constexpr,
              FIRST: tl.constexpr, HAS_FI: tl.constexpr):
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if HAS_FI:
        # overflow: an empty range, so the update is skipped on the device without a host sync
        # (arithmetic rather than `mask & scalar_bool`, which the interpreter rejects)
        mask = offs < N * (tl.load(FI) == 0).to(tl.int64)
    else:
        mask = offs < N
    gmul = tl.load(SC)
    lr = tl.load(SC + 1)
    if MASTER:
        p = tl.load(W + offs, mask=mask, other=0.0)
    else:
        p = tl.load(P + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32) * gmul + wd * p
    if MOMENTUM:
        if FIRST:
            b = g  # torch.optim.SGD: the first buffer is a copy of the gradient
        else:
            b = momentum * tl.load(B + offs, mask=mask, other=0.0) + (1.0 - dampening) * g
        tl.store(B + offs, b, mask=mask)
        if NESTEROV:
            g = g + momentum * b
        else:
            g = b
    p = p - lr * g
    if MASTER:
        tl.store(W + offs, p, mask=mask)
    tl.store(P + offs, p.to(P.dtype.element_ty), mask=mask)


_SLOTS = ("P", "G", "B", "W")
_COMMON = ("SC", "FI", "momentum", "dampening", "wd")
_CONSTS = ("BLOCK", "MOMENTUM", "MASTER", "NESTEROV", "FIRST", "HAS_FI")


@triton_op("trainer_triton::fused_sgd_", mutates_args={"params", "momentum_buffers", "master_params"})
def fused_sgd_(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor], master_params: list[Tensor],
               lr: Tensor, momentum: float, dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
               is_first_step: bool, grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
               clip_coef: Optional[Tensor] = None) -> None:
    if len(params) == 0:
        return
    dev = params[0].device
    mom = momentum != 0.0
    master = len(master_params) > 0
    grads = mt.flat_operands(params, grads, {"momentum_buffers": momentum_buffers if mom else [],
                                             "master_params": master_params})
    sc = torch.cat([mt.grad_multiplier(params[0], maximize, grad_scale, clip_coef),
                    lr.to(device=dev, dtype=torch.float32).reshape(1)])
    fi = found_inf.to(device=dev, dtype=torch.float32).reshape(1) if found_inf is not None else sc
    for dtype, idx in mt.by_dtype(params).items():
        for lo, hi, starts in mt.launches([params[i].numel() for i in idx], BLOCK):
            if starts[-1] == 0:
                continue
            args = []
            for j in range(lo, hi):
                i = idx[j]
                p = params[i]
                args += [p, grads[i], momentum_buffers[i] if mom else p, master_params[i] if master else p,
                         p.numel()]
            kernel = mt.get_kernel(__name__, "_sgd_body", _SLOTS, _COMMON, _CONSTS, hi - lo)
            wrap_triton(kernel)[(starts[-1],)](
                *args, *starts, 0, sc, fi, momentum, dampening, weight_decay,
                BLOCK=BLOCK, MOMENTUM=mom, MASTER=master, NESTEROV=nesterov, FIRST=is_first_step,
                HAS_FI=found_inf is not None)
