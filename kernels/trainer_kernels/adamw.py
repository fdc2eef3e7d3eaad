"""Triton multi-tensor Adam/AdamW: ``torch.ops.trainer_triton.fused_adamw_`` (same schema as
``torch.ops.trainer.fused_adamw_``). One launch per dtype per 16 tensors; each program updates
BLOCK elements of one tensor: read p, g, m, v (+ vmax, master), write p, m, v, in fp32 math.

Bias corrections are computed in fp64 by torch ops inside the op (``1 - beta2**step`` loses
three digits in fp32 at step 1 with beta2=0.999) into a per-tensor table the kernel reads, so
``lr`` and ``step`` stay device tensors: no recompile and no host sync when they change.
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
def _adamw_body(P, G, M, V, X, W, N, blk, IDX, TAB, SC, FI, omb1, beta2, omb2, eps, wd,
                BLOCK: tl.constexpr, AMSGRAD: tl.constexpr, MASTER: tl.constexpr, DECOUPLED: tl.constexpr,
                HAS_FI: tl.constexpr):
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if HAS_FI:
        # overflow: an empty range, so the update is skipped on the device without a host sync
        # (arithmetic rather than `mask & scalar_bool`, which the interpreter rejects)
        mask = offs < N * (tl.load(FI) == 0).to(tl.int64)
    else:
        mask = offs < N
    step_size = tl.load(TAB + 2 * IDX)
    bc2_rsqrt = tl.load(TAB + 2 * IDX + 1)
    gmul = tl.load(SC)
    decay = tl.load(SC + 1)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32) * gmul
    if MASTER:
        p = tl.load(W + offs, mask=mask, other=0.0)
    else:
        p = tl.load(P + offs, mask=mask, other=0.0).to(tl.float32)
    if not DECOUPLED:
        g = g + wd * p
    p = p * decay
    m = tl.load(M + offs, mask=mask, other=0.0)
    v = tl.load(V + offs, mask=mask, other=0.0)
    m = m + omb1 * (g - m)
    v = beta2 * v + omb2 * g * g
    tl.store(M + offs, m, mask=mask)
    tl.store(V + offs, v, mask=mask)
    if AMSGRAD:
        v = tl.maximum(tl.load(X + offs, mask=mask, other=0.0), v)
        tl.store(X + offs, v, mask=mask)
    p = p - step_size * m / (tl.sqrt(v) * bc2_rsqrt + eps)
    if MASTER:
        tl.store(W + offs, p, mask=mask)
    tl.store(P + offs, p.to(P.dtype.element_ty), mask=mask)


_SLOTS = ("P", "G", "M", "V", "X", "W")
# omb1, omb2: 1 - beta1, 1 - beta2 taken in Python (double) and passed as fp32, as torch.optim's reach its
# kernels; 1.0 - beta2 inside the kernel is fp32 arithmetic, 1.3e-5 relative off for beta2 = 0.999
_COMMON = ("TAB", "SC", "FI", "omb1", "beta2", "omb2", "eps", "wd")
_CONSTS = ("BLOCK", "AMSGRAD", "MASTER", "DECOUPLED", "HAS_FI")


@triton_op("trainer_triton::fused_adamw_",
           mutates_args={"params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "master_params"})
def fused_adamw_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                 max_exp_avg_sqs: list[Tensor], master_params: list[Tensor], steps: list[Tensor], lr: Tensor,
                 beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
                 decoupled: bool, grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
                 clip_coef: Optional[Tensor] = None) -> None:
    n = len(params)
    if n == 0:
        return
    dev = params[0].device
    master = len(master_params) > 0
    grads = mt.flat_operands(params, grads, {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs,
                                             "max_exp_avg_sqs": max_exp_avg_sqs if amsgrad else [],
                                             "master_params": master_params})
    lr64 = lr.to(device=dev, dtype=torch.float64).reshape(1)
    st = torch.stack([s.to(device=dev, dtype=torch.float64).reshape(()) for s in steps])
    if st.numel() == 1:
        st = st.expand(n)
    # per tensor: [lr / (1 - beta1^step), 1 / sqrt(1 - beta2^step)], in fp64 then fp32
    table = torch.stack([lr64 / (1.0 - torch.pow(beta1, st)), torch.rsqrt(1.0 - torch.pow(beta2, st))], dim=1)
    table = table.to(torch.float32).contiguous()
    decay = (1.0 - lr64 * weight_decay) if decoupled else torch.ones_like(lr64)
    sc = torch.cat([mt.grad_multiplier(params[0], maximize, grad_scale, clip_coef), decay.to(torch.float32)])
    fi = found_inf.to(device=dev, dtype=torch.float32).reshape(1) if found_inf is not None else sc
    for dtype, idx in mt.by_dtype(params).items():
        numels = [params[i].numel() for i in idx]
        for lo, hi, starts in mt.launches(numels, BLOCK):
            if starts[-1] == 0:
                continue
            args = []
            for j in range(lo, hi):
                i = idx[j]
                p = params[i]
                args += [p, grads[i], exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i] if amsgrad else p,
                         master_params[i] if master else p, p.numel()]
            kernel = mt.get_kernel(__name__, "_adamw_body", _SLOTS, _COMMON, _CONSTS, hi - lo)
            # The launch gets its own rows of the table, so slot j reads row BASE + j with BASE = 0.
            wrap_triton(kernel)[(starts[-1],)](
                *args, *starts, 0, _rows(table, idx[lo:hi]), sc, fi, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                weight_decay,
                BLOCK=BLOCK, AMSGRAD=amsgrad, MASTER=master, DECOUPLED=decoupled, HAS_FI=found_inf is not None)


def _rows(table: Tensor, rows: list[int]) -> Tensor:
    """The table rows of one launch, contiguous (a slice when the rows are consecutive)."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return table[rows[0]:rows[0] + len(rows)]
    return table[rows].contiguous()
