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


def _on_host(*ts: Tensor) -> bool:
    """Reading these with float() costs no device sync (CPU tensors)."""
    return all(t.device.type == "cpu" for t in ts)


@torch.library.custom_op(
    "trainer_compile::adam_param_", mutates_args=("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
)
def adam_param_(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, max_exp_avg_sq: Optional[Tensor], step: Tensor,
    lr: Tensor, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
    decoupled: bool, clip_coef: Optional[Tensor] = None, grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
) -> None:
    """torch.optim.Adam/AdamW ``_single_tensor_adam`` for one parameter (non-capturable: host step).
    ``grad_scale``/``found_inf``: GradScaler's unscale (a power of two: division is exact) and skip,
    decided on the device (:func:`_fp16_adam`)."""
    if found_inf is not None:
        return _fp16_adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                          weight_decay, amsgrad, maximize, decoupled, clip_coef, grad_scale, found_inf)
    if not _on_host(lr, step):
        # lr/step on the GPU: float() would be two host syncs per parameter per step; the same
        # update as tensor arithmetic, as torch's capturable Adam computes it
        step.add_(1)
        return foreach_adam_([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if amsgrad else [], [step],
                             lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, clip_coef, grad_scale)
    if grad_scale is not None:
        grad = grad / grad_scale
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
    grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
) -> None:
    """torch.optim.SGD ``_single_tensor_sgd`` for one parameter. The momentum buffer starts at zeros
    (torch starts it at a copy of the first gradient: identical when ``dampening == 0``, the only
    case the engine compiles). ``found_inf``: the skip decided on the device (see :func:`_fp16_adam`)."""
    if found_inf is not None:
        return foreach_sgd_([param], [grad], [momentum_buffer] if momentum != 0 else [], lr, momentum, dampening,
                            weight_decay, nesterov, maximize, clip_coef, grad_scale, found_inf)
    if not _on_host(lr):  # a device lr: tensor arithmetic rather than a host sync per parameter
        return foreach_sgd_([param], [grad], [momentum_buffer] if momentum != 0 else [], lr, momentum, dampening,
                            weight_decay, nesterov, maximize, clip_coef, grad_scale)
    if grad_scale is not None:
        grad = grad / grad_scale
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


def _fp16_adam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, max_exp_avg_sq: Optional[Tensor],
               step: Tensor, lr: Tensor, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool,
               maximize: bool, decoupled: bool, clip_coef: Optional[Tensor], grad_scale: Optional[Tensor],
               found_inf: Tensor) -> None:
    """``adam_param_`` under fp16 loss scaling without reading ``found_inf``, ``lr`` or ``step`` on the
    host (the issue: "the step skipped on the device, no host sync"): the multi-tensor expression for
    one tensor, which computes the update out of place and keeps it only where ``found_inf == 0``,
    after :func:`count_step` counted the step only if it is kept. GradScaler's semantics: a skipped
    step leaves the parameter, the moments and the step counter as they were."""
    count_step([step], found_inf)
    foreach_adam_([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if amsgrad else [], [step], lr, beta1,
                  beta2, eps, weight_decay, amsgrad, maximize, decoupled, clip_coef, grad_scale, found_inf)


# --------------------------------------------------------------------------------------------
# Multi-tensor torch expressions: the fusion target when trainer._C is not available. Plain
# foreach ops with tensor lr/step, so inductor traces and fuses them (no host sync, no recompile).
# --------------------------------------------------------------------------------------------
def foreach_adam_(
    params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
    max_exp_avg_sqs: List[Tensor], steps: List[Tensor], lr: Tensor, beta1: float, beta2: float, eps: float,
    weight_decay: float, amsgrad: bool, maximize: bool, decoupled: bool, clip_coef: Optional[Tensor] = None,
    grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
) -> None:
    if found_inf is not None:  # fp16: compute the step out of place, keep it only where found_inf == 0
        return _skippable(foreach_adam_, found_inf, [params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs], grads, steps,
                          lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, clip_coef, grad_scale)
    if grad_scale is not None:
        grads = torch._foreach_div(grads, grad_scale.reshape(()))  # GradScaler._scale is shape [1]
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
    grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None,
) -> None:
    if found_inf is not None:
        return _skippable(foreach_sgd_, found_inf, [params, momentum_buffers], grads, lr, momentum, dampening,
                          weight_decay, nesterov, maximize, clip_coef, grad_scale)
    if grad_scale is not None:
        grads = torch._foreach_div(grads, grad_scale.reshape(()))  # GradScaler._scale is shape [1]
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


def _skippable(update, found_inf: Tensor, mutated: List[List[Tensor]], grads: List[Tensor], *rest) -> None:
    """Runs ``update`` on copies of the tensors it mutates and writes them back only where
    ``found_inf == 0``: GradScaler's skipped step without a host sync (inductor fuses the selects).
    The step counts are not among them: :func:`count_step` already counted only kept steps."""
    copies = [[t.clone() for t in group] for group in mutated]
    ok = found_inf.reshape(()) == 0
    update(copies[0], grads, *copies[1:], *rest)  # (params, grads, states..., hyperparameters...)
    for group, new in zip(mutated, copies):
        for t, n in zip(group, new):
            t.copy_(torch.where(ok, n, t))


def foreach_grad_norm(grads: List[Tensor]) -> Tensor:
    """``clip_grad_norm_``'s total norm: the norm of the per-tensor norms."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)))


def foreach_grad_norm_unscaled(grads: List[Tensor], grad_scale: Tensor) -> Tensor:
    """The total norm of ``grads / grad_scale`` (what clipping sees after GradScaler's unscale_)."""
    return foreach_grad_norm(grads) / grad_scale.reshape(())


def found_inf(grads: List[Tensor]) -> Tensor:
    """GradScaler's inf/nan check over all gradients, as its shape-[1] float flag (no host sync)."""
    finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
    return torch.logical_not(finite).to(torch.float32).reshape(1)


def count_step(steps: List[Tensor], found_inf: Tensor) -> None:
    """``step += 1`` unless the step is skipped (torch.optim never runs a skipped step)."""
    inc = 1.0 - found_inf.reshape(())
    for s in steps:
        s.add_(inc)


ADAM = torch.ops.trainer_compile.adam_param_.default
SGD = torch.ops.trainer_compile.sgd_param_.default
UPDATE_OPS = (ADAM, SGD)
