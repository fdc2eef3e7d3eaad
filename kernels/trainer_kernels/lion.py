"""Triton multi-tensor Lion: ``torch.ops.trainer_triton.fused_lion_`` (schema of ``torch.ops.trainer.fused_lion_``).

``p = p * (1 - lr*wd) - lr * sign(b1*m + (1-b1)*g)``; ``m = b2*m + (1-b2)*g``.
"""
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
def _lion_body(P, G, M, W, N, blk, IDX, SC, FI, beta1, beta2, omb1, omb2, wd,
               BLOCK: tl.constexpr, MASTER: tl.constexpr, HAS_FI: tl.constexpr):
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if HAS_FI:
        # overflow: an empty range, so the update is skipped on the device without a host sync
        # (arithmetic rather than `mask & scalar_bool`, which the interpreter rejects)
        mask = offs < N * (tl.load(FI) == 0).to(tl.int64)
    else:
        mask = offs < N
    gmul = tl.load(SC)
    lr = tl.load(SC + 1)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32) * gmul
    if MASTER:
        p = tl.load(W + offs, mask=mask, other=0.0)
    else:
        p = tl.load(P + offs, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(M + offs, mask=mask, other=0.0)
    c = beta1 * m + omb1 * g
    sgn = tl.where(c > 0, 1.0, tl.where(c < 0, -1.0, 0.0))
    p = p * (1.0 - lr * wd) - lr * sgn
    tl.store(M + offs, beta2 * m + omb2 * g, mask=mask)
    if MASTER:
        tl.store(W + offs, p, mask=mask)
    tl.store(P + offs, p.to(P.dtype.element_ty), mask=mask)


_SLOTS = ("P", "G", "M", "W")
_COMMON = ("SC", "FI", "beta1", "beta2", "omb1", "omb2", "wd")  # omb: 1 - beta, taken in double
_CONSTS = ("BLOCK", "MASTER", "HAS_FI")


@triton_op("trainer_triton::fused_lion_", mutates_args={"params", "exp_avgs", "master_params"})
def fused_lion_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], master_params: list[Tensor],
                lr: Tensor, beta1: float, beta2: float, weight_decay: float, maximize: bool,
                grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
                clip_coef: Optional[Tensor] = None) -> None:
    if len(params) == 0:
        return
    dev = params[0].device
    master = len(master_params) > 0
    grads = mt.flat_operands(params, grads, {"exp_avgs": exp_avgs, "master_params": master_params})
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
                args += [p, grads[i], exp_avgs[i], master_params[i] if master else p, p.numel()]
            kernel = mt.get_kernel(__name__, "_lion_body", _SLOTS, _COMMON, _CONSTS, hi - lo)
            wrap_triton(kernel)[(starts[-1],)](
                *args, *starts, 0, sc, fi, beta1, beta2, 1.0 - beta1, 1.0 - beta2, weight_decay,
                BLOCK=BLOCK, MASTER=master, HAS_FI=found_inf is not None)
