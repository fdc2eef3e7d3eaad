"""Functional fused optimizer steps: what the optimizer classes and the compiled engine call.

Every function updates ALL tensors it is given in one multi-tensor kernel call (per dtype for
Triton), in place. Conventions shared by every backend:

- ``lr`` may be a float or a 0-dim tensor; ``step`` is the count of THIS update (1 on the first),
  already incremented by the caller, as one shared 0-dim tensor or one per parameter. Tensors
  let the values change without a recompile or a host sync.
- ``grad_scale``: gradients are divided by it (AMP unscale). ``found_inf``: when nonzero the whole
  update is skipped on the device (params and state untouched). ``clip_coef``: multiplied into
  the gradient (clip by norm, see :func:`clip_coef_from_norm`). Gradients are never written.
- Optimizer state (exp_avg, ...) is fp32; ``master_params`` (fp32 copies of low-precision params)
  are optional: when given, the update is computed on them and rounded into ``params``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ._backend import resolve_backend

TensorList = Sequence[Tensor]


_DEVICE_LR: dict[torch.device, Tensor] = {}


def _lr_tensor(lr: float | Tensor, device: torch.device, backend: str) -> Tensor:
    """``lr`` as the tensor the backend reads.

    A tensor is used as given (the way to change ``lr`` inside a user's CUDA graph). A float goes
    into a CPU scalar for the C++/CUDA kernels, which read it on the host (no copy), and into one
    device scalar per device, refreshed with ``fill_``, for the Triton and torch kernels: a kernel
    launch with the value as argument, where a new CPU tensor would cost a blocking host-to-device
    copy every step. The fill and the kernels that read it are ordered on the same stream.
    """
    if isinstance(lr, Tensor):
        return lr
    if backend in ("cpp", "cuda") or device.type == "cpu":
        return torch.tensor(float(lr), dtype=torch.float32)
    t = _DEVICE_LR.get(device)
    if t is None:
        t = _DEVICE_LR[device] = torch.empty((), dtype=torch.float32, device=device)
    return t.fill_(float(lr))


def _steps_list(step: Tensor | TensorList) -> list[Tensor]:
    return [step] if isinstance(step, Tensor) else list(step)


def _ns(backend: str):
    return torch.ops.trainer_triton if backend == "triton" else torch.ops.trainer


def _device_of(params: TensorList) -> torch.device:
    return params[0].device if len(params) else torch.device("cpu")


def fused_adamw_(
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    max_exp_avg_sqs: TensorList,
    step: Tensor | TensorList,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    clip_coef: Tensor | None = None,
    *,
    master_params: TensorList | None = None,
    decoupled: bool = True,
    backend: str | None = None,
) -> None:
    """One AdamW (``decoupled=True``) or Adam (``decoupled=False``, L2 penalty) step for all tensors."""
    if len(params) == 0:
        return
    be = resolve_backend(_device_of(params), backend)
    lr_t = _lr_tensor(lr, params[0].device, be)
    steps = _steps_list(step)
    masters = list(master_params) if master_params is not None else []
    maxs = list(max_exp_avg_sqs) if amsgrad else []
    if be == "torch":
        _torch_adam(params, grads, exp_avgs, exp_avg_sqs, maxs, masters, steps, lr_t, beta1, beta2, eps,
                    weight_decay, amsgrad, maximize, decoupled, grad_scale, found_inf, clip_coef)
        return
    _ns(be).fused_adamw_(list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), maxs, masters, steps, lr_t,
                         beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, grad_scale, found_inf,
                         clip_coef)


def fused_adam_(*args, **kwargs) -> None:
    """Adam (L2 weight decay added to the gradient): :func:`fused_adamw_` with ``decoupled=False``."""
    kwargs["decoupled"] = False
    fused_adamw_(*args, **kwargs)


def fused_sgd_(
    params: TensorList,
    grads: TensorList,
    momentum_buffers: TensorList,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    is_first_step: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    clip_coef: Tensor | None = None,
    *,
    master_params: TensorList | None = None,
    backend: str | None = None,
) -> None:
    """One SGD step (torch.optim.SGD semantics). With ``is_first_step`` the buffers are set to the gradient."""
    if len(params) == 0:
        return
    be = resolve_backend(_device_of(params), backend)
    lr_t = _lr_tensor(lr, params[0].device, be)
    masters = list(master_params) if master_params is not None else []
    bufs = list(momentum_buffers) if momentum != 0 else []
    if be == "torch":
        _torch_sgd(params, grads, bufs, masters, lr_t, momentum, dampening, weight_decay, nesterov, maximize,
                   is_first_step, grad_scale, found_inf, clip_coef)
        return
    _ns(be).fused_sgd_(list(params), list(grads), bufs, masters, lr_t, momentum, dampening, weight_decay, nesterov,
                       maximize, is_first_step, grad_scale, found_inf, clip_coef)


def fused_lion_(
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    clip_coef: Tensor | None = None,
    *,
    master_params: TensorList | None = None,
    backend: str | None = None,
) -> None:
    """One Lion step: ``p -= lr * (sign(b1*m + (1-b1)*g) + wd*p)``, then ``m = b2*m + (1-b2)*g``."""
    if len(params) == 0:
        return
    be = resolve_backend(_device_of(params), backend)
    lr_t = _lr_tensor(lr, params[0].device, be)
    masters = list(master_params) if master_params is not None else []
    if be == "torch":
        _torch_lion(params, grads, exp_avgs, masters, lr_t, beta1, beta2, weight_decay, maximize, grad_scale,
                    found_inf, clip_coef)
        return
    _ns(be).fused_lion_(list(params), list(grads), list(exp_avgs), masters, lr_t, beta1, beta2, weight_decay,
                        maximize, grad_scale, found_inf, clip_coef)


def grad_norm(grads: TensorList, grad_scale: Tensor | None = None, *, backend: str | None = None) -> Tensor:
    """Global L2 norm of all ``grads`` (of ``grads / grad_scale`` if given) as a 0-dim fp32 tensor.

    One pass over memory; inf/NaN anywhere makes the norm inf/NaN (see :func:`found_inf_from_norm`).
    """
    be = resolve_backend(_device_of(grads), backend)
    if be == "torch" or len(grads) == 0:
        if len(grads) == 0:
            return torch.zeros((), dtype=torch.float32)
        norms = torch._foreach_norm([g.float() for g in grads], 2.0)
        n = torch.linalg.vector_norm(torch.stack(norms))
        return n / grad_scale if grad_scale is not None else n
    return _ns(be).grad_norm(list(grads), grad_scale)


def clip_coef_from_norm(total_norm: Tensor, max_norm: float, eps: float = 1e-6) -> Tensor:
    """``min(1, max_norm / (norm + eps))``, as ``torch.nn.utils.clip_grad_norm_`` computes it."""
    return torch.clamp(max_norm / (total_norm + eps), max=1.0)


def found_inf_from_norm(total_norm: Tensor) -> Tensor:
    """1.0 where the norm is inf/NaN (some gradient overflowed), else 0.0; stays on the device."""
    return (~torch.isfinite(total_norm)).to(torch.float32)


# ------------------------------------------------------------------------------------------------
# The `torch` backend: torch's own fused kernels, with fp32 state for low-precision params.
# ------------------------------------------------------------------------------------------------
def _grad_mult(grad_scale: Tensor | None, clip_coef: Tensor | None) -> Tensor | None:
    m = None
    if clip_coef is not None:
        m = clip_coef.float()
    if grad_scale is not None:
        m = (1.0 / grad_scale.float()) if m is None else m / grad_scale.float()
    return m


def _fp32_views(params: TensorList, grads: TensorList, masters: list[Tensor], mult: Tensor | None):
    """fp32 working params (the params, the masters, or upcast copies) and fp32 gradients."""
    lowp = any(p.dtype != torch.float32 for p in params)
    work = list(masters) if masters else ([p.float() for p in params] if lowp else list(params))
    # torch's fused kernels walk grads in their params' memory order (wrong results otherwise): a
    # contiguous copy was wrong for channels_last params, so copy into the working param's layout
    g32 = [g if g.dtype == torch.float32 and (g.stride() == w.stride() or g.numel() <= 1)
           else torch.empty_like(w, dtype=torch.float32).copy_(g) for g, w in zip(grads, work)]
    if mult is not None:
        g32 = torch._foreach_mul(g32, mult.to(g32[0].device))
    copy_back = lowp or bool(masters)
    return work, g32, copy_back


def _torch_adam(params, grads, exp_avgs, exp_avg_sqs, maxs, masters, steps, lr, beta1, beta2, eps, weight_decay,
                amsgrad, maximize, decoupled, grad_scale, found_inf, clip_coef) -> None:
    work, g32, copy_back = _fp32_views(params, grads, masters, _grad_mult(grad_scale, clip_coef))
    steps = steps * len(params) if len(steps) == 1 else steps
    fn = torch._fused_adamw_ if decoupled else torch._fused_adam_
    fn(work, g32, list(exp_avgs), list(exp_avg_sqs), maxs, steps, lr=lr.to(work[0].device), beta1=beta1,
       beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize, grad_scale=None,
       found_inf=found_inf)
    if copy_back:
        torch._foreach_copy_(list(params), work)


def _torch_sgd(params, grads, bufs, masters, lr, momentum, dampening, weight_decay, nesterov, maximize,
               is_first_step, grad_scale, found_inf, clip_coef) -> None:
    work, g32, copy_back = _fp32_views(params, grads, masters, _grad_mult(grad_scale, clip_coef))
    torch._fused_sgd_(work, g32, bufs, weight_decay=weight_decay, momentum=momentum, lr=lr.to(work[0].device),
                      dampening=dampening, nesterov=nesterov, maximize=maximize, is_first_step=is_first_step,
                      grad_scale=None, found_inf=found_inf)
    if copy_back:
        torch._foreach_copy_(list(params), work)


def _torch_lion(params, grads, exp_avgs, masters, lr, beta1, beta2, weight_decay, maximize, grad_scale, found_inf,
                clip_coef) -> None:
    # No torch kernel for Lion: foreach ops, and a host check of found_inf (this fallback syncs).
    if found_inf is not None and bool(found_inf.item()):
        return
    work, g32, copy_back = _fp32_views(params, grads, masters, _grad_mult(grad_scale, clip_coef))
    if maximize:
        g32 = torch._foreach_neg(g32)
    lr_f = float(lr.item())
    c = torch._foreach_mul(list(exp_avgs), beta1)
    torch._foreach_add_(c, g32, alpha=1.0 - beta1)
    torch._foreach_sign_(c)
    if weight_decay != 0:
        torch._foreach_mul_(work, 1.0 - lr_f * weight_decay)
    torch._foreach_add_(work, c, alpha=-lr_f)
    torch._foreach_mul_(list(exp_avgs), beta2)
    torch._foreach_add_(list(exp_avgs), g32, alpha=1.0 - beta2)
    if copy_back:
        torch._foreach_copy_(list(params), work)
