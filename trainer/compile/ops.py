"""Per-parameter optimizer update ops: what the capture emits, and what the passes rewrite.

The capture writes the optimizer as one ``trainer_compile::*_param_`` node per parameter (the
semantic, unfused form). Each op's eager implementation is ``torch.optim``'s single-tensor
algorithm line for line, so a graph whose passes are all turned off still trains exactly like
the eager engine. ``optimizer_fusion`` replaces all of them by ONE multi-tensor call.

Every op takes an optional ``clip_coef`` (multiplied into the gradient first, like
``clip_grad_norm_`` does in place) so that ``clipping`` can fold clipping into the update.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor


@torch.library.custom_op(
    "trainer_compile::adam_param_", mutates_args=("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
)
def adam_param_(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, max_exp_avg_sq: Optional[Tensor], step: Tensor,
    lr: Tensor, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
    decoupled: bool, clip_coef: Optional[Tensor] = None,
) -> None:
    """torch.optim.Adam/AdamW ``_single_tensor_adam`` for one parameter (non-capturable: host step)."""
    if clip_coef is not None:
        grad = grad * clip_coef
    grad = -grad if maximize else grad
    lr_f = float(lr)
    step.add_(1)
    if weight_decay != 0:
        if decoupled:
            param.mul_(1 - lr_f * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    s = float(step)
    bias_correction1 = 1 - beta1 ** s
    bias_correction2_sqrt = (1 - beta2 ** s) ** 0.5
    if amsgrad:
        assert max_exp_avg_sq is not None
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr_f / bias_correction1)


@adam_param_.register_fake
def _adam_fake(*args, **kwargs) -> None:
    return None


@torch.library.custom_op("trainer_compile::sgd_param_", mutates_args=("param", "momentum_buffer"))
def sgd_param_(
    param: Tensor, grad: Tensor, momentum_buffer: Optional[Tensor], lr: Tensor, momentum: float, dampening: float,
    weight_decay: float, nesterov: bool, maximize: bool, clip_coef: Optional[Tensor] = None,
) -> None:
    """torch.optim.SGD ``_single_tensor_sgd`` for one parameter. The momentum buffer starts at zeros
    (torch starts it at a copy of the first gradient: identical when ``dampening == 0``, the only
    case the engine compiles)."""
    if clip_coef is not None:
        grad = grad * clip_coef
    grad = -grad if maximize else grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if momentum != 0:
        assert momentum_buffer is not None
        momentum_buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
        grad = grad.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    param.add_(grad, alpha=-float(lr))


@sgd_param_.register_fake
def _sgd_fake(*args, **kwargs) -> None:
    return None


# --------------------------------------------------------------------------------------------
# Multi-tensor torch expressions: the fusion target when trainer._C is not available. Plain
# foreach ops with tensor lr/step, so inductor traces and fuses them (no host sync, no recompile).
# --------------------------------------------------------------------------------------------
def foreach_adam_(
    params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
    max_exp_avg_sqs: List[Tensor], steps: List[Tensor], lr: Tensor, beta1: float, beta2: float, eps: float,
    weight_decay: float, amsgrad: bool, maximize: bool, decoupled: bool, clip_coef: Optional[Tensor] = None,
) -> None:
    if clip_coef is not None:
        grads = torch._foreach_mul(grads, clip_coef)
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    for i, p in enumerate(params):  # unrolled at trace time; inductor fuses the elementwise work
        s = steps[i]
        bc1 = 1 - beta1 ** s
        bc2_sqrt = (1 - beta2 ** s).sqrt()
        v = exp_avg_sqs[i]
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], v, out=max_exp_avg_sqs[i])
            v = max_exp_avg_sqs[i]
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.sub_(exp_avgs[i] / denom * (lr / bc1))


def foreach_sgd_(
    params: List[Tensor], grads: List[Tensor], momentum_buffers: List[Tensor], lr: Tensor, momentum: float,
    dampening: float, weight_decay: float, nesterov: bool, maximize: bool, clip_coef: Optional[Tensor] = None,
) -> None:
    if clip_coef is not None:
        grads = torch._foreach_mul(grads, clip_coef)
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum != 0:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_add_(momentum_buffers, grads, alpha=1 - dampening)
        grads = torch._foreach_add(grads, momentum_buffers, alpha=momentum) if nesterov else momentum_buffers
    torch._foreach_sub_(params, torch._foreach_mul(grads, lr))


def foreach_grad_norm(grads: List[Tensor]) -> Tensor:
    """``clip_grad_norm_``'s total norm: the norm of the per-tensor norms."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)))


ADAM = torch.ops.trainer_compile.adam_param_.default
SGD = torch.ops.trainer_compile.sgd_param_.default
UPDATE_OPS = (ADAM, SGD)
