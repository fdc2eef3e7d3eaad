"""Drop-in ``torch.optim`` optimizers backed by the multi-tensor kernels of :mod:`.functional`.

``param_groups`` keep torch's keys (plus ``master_weights``/``backend``), and the per-parameter
state uses torch's names (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
``momentum_buffer``), so a ``state_dict`` loads into ``torch.optim.AdamW``/``Adam``/``SGD`` and
back, and training continues identically. Differences by design: optimizer state is always fp32
(torch keeps it in the param dtype), and fp32 ``master_param`` copies are kept for bf16/fp16
params when ``master_weights=True``.

AMP: like torch's fused optimizers these set ``_step_supports_amp_scaling``, so
``torch.amp.GradScaler.step`` hands over ``grad_scale``/``found_inf`` and the kernel unscales and
skips on overflow without a host sync.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import functional as F
from ._backend import resolve_backend

_LOWP = (torch.bfloat16, torch.float16)


class _FusedOptimizer(torch.optim.Optimizer):
    _step_supports_amp_scaling = True
    # state keys holding per-element fp32 tensors (cast back to fp32 after loading torch's state)
    _fp32_state_keys: tuple[str, ...] = ()

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        lr = defaults["lr"]
        if not isinstance(lr, Tensor) and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, defaults)
        self.register_load_state_dict_post_hook(_FusedOptimizer._after_load)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dtype not in (torch.float32, *_LOWP):
                    raise TypeError(f"{type(self).__name__} supports float32/bfloat16/float16 params, got {p.dtype}")
            # Resolve now (logged once, raises for an unavailable explicit backend) rather than in step().
            if group["params"]:
                resolve_backend(group["params"][0].device, group.get("backend"))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    @staticmethod
    def _after_load(self: "_FusedOptimizer") -> None:
        # torch.optim casts loaded state to the param dtype; our kernels keep it in fp32, and keep
        # the step on the param's device so that incrementing it never syncs.
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
            for p in group["params"]:
                st = self.state.get(p)
                if not st:
                    continue
                for key in self._fp32_state_keys:
                    if isinstance(st.get(key), Tensor):
                        st[key] = st[key].to(device=p.device, dtype=torch.float32)
                if isinstance(st.get("step"), Tensor):
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
                elif "step" in st:
                    st["step"] = torch.tensor(float(st["step"]), dtype=torch.float32, device=p.device)
                if group.get("master_weights") and p.dtype in _LOWP and "master_param" not in st:
                    st["master_param"] = p.detach().float()

    def _amp_args(self, grad_scale, found_inf) -> tuple[Tensor | None, Tensor | None]:
        # GradScaler.step sets these attributes on optimizers with _step_supports_amp_scaling.
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        return grad_scale, found_inf

    def _master(self, group: dict, p: Tensor, state: dict) -> None:
        if group["master_weights"] and p.dtype in _LOWP and "master_param" not in state:
            state["master_param"] = p.detach().float()

    @staticmethod
    def _grads(group: dict) -> tuple[list[Tensor], list[Tensor]]:
        ps, gs = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("fused optimizers do not support sparse gradients")
            ps.append(p)
            gs.append(p.grad)
        return ps, gs

    @staticmethod
    def _increment(steps: list[Tensor], found_inf: Tensor | None) -> None:
        # A skipped (overflowed) step does not count, as with torch's fused optimizers.
        if found_inf is None:
            torch._foreach_add_(steps, 1.0)
        else:
            torch._foreach_add_(steps, 1.0 - found_inf.to(steps[0].device, torch.float32))


class FusedAdamW(_FusedOptimizer):
    """``torch.optim.AdamW`` (``decoupled=True``) with one multi-tensor kernel per parameter group."""

    _fp32_state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_param")
    _decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        master_weights: bool = False,
        backend: str | None = None,
    ) -> None:
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        foreach=None, capturable=False, differentiable=False, fused=None,
                        decoupled_weight_decay=self._decoupled, master_weights=master_weights, backend=backend)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, *, grad_scale: Tensor | None = None,
             found_inf: Tensor | None = None, clip_coef: Tensor | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = self._amp_args(grad_scale, found_inf)
        for group in self.param_groups:
            ps, gs = self._grads(group)
            if not ps:
                continue
            amsgrad = group["amsgrad"]
            m, v, vmax, steps, masters = [], [], [], [], []
            for p in ps:
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                if amsgrad and "max_exp_avg_sq" not in st:
                    st["max_exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                self._master(group, p, st)
                m.append(st["exp_avg"])
                v.append(st["exp_avg_sq"])
                steps.append(st["step"])
                if amsgrad:
                    vmax.append(st["max_exp_avg_sq"])
                if "master_param" in st:
                    masters.append(st["master_param"])
            if masters and len(masters) != len(ps):
                raise RuntimeError("master_weights needs every param of a group to be bf16/fp16 (or none)")
            self._increment(steps, found_inf)
            beta1, beta2 = group["betas"]
            F.fused_adamw_(ps, gs, m, v, vmax, steps, group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                           amsgrad, group["maximize"], grad_scale, found_inf, clip_coef,
                           master_params=masters or None, decoupled=group["decoupled_weight_decay"],
                           backend=group["backend"])
        return loss


class FusedAdam(FusedAdamW):
    """``torch.optim.Adam``: weight decay is an L2 term added to the gradient."""

    _decoupled = False

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 master_weights: bool = False, backend: str | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         master_weights=master_weights, backend=backend)


class FusedSGD(_FusedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay) with one kernel per group."""

    _fp32_state_keys = ("momentum_buffer", "master_param")

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 master_weights: bool = False, backend: str | None = None) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize, foreach=None, differentiable=False, fused=None,
                        master_weights=master_weights, backend=backend)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, *, grad_scale: Tensor | None = None,
             found_inf: Tensor | None = None, clip_coef: Tensor | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = self._amp_args(grad_scale, found_inf)
        if found_inf is not None and self._would_create_buffers() and bool(found_inf.item()):
            # A step that GradScaler skips must not create momentum buffers: torch.optim.SGD never
            # runs on it, so its first real step sets the buffer to that step's gradient. The host
            # read happens only while some buffer is still missing (the first steps), never after.
            return loss
        for group in self.param_groups:
            ps, gs = self._grads(group)
            if not ps:
                continue
            mom = group["momentum"] != 0
            # torch.optim.SGD sets the buffer to the gradient on a param's first step; params of a
            # group that already have a buffer and params that do not go in two kernel calls.
            split: dict[bool, tuple[list, list, list, list]] = {}
            for p, g in zip(ps, gs):
                st = self.state[p]
                first = mom and st.get("momentum_buffer") is None
                if first:
                    st["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32,
                                                             memory_format=torch.preserve_format)
                self._master(group, p, st)
                lists = split.setdefault(first, ([], [], [], []))
                lists[0].append(p)
                lists[1].append(g)
                if mom:
                    lists[2].append(st["momentum_buffer"])
                if "master_param" in st:
                    lists[3].append(st["master_param"])
            for first, (p_l, g_l, b_l, w_l) in split.items():
                F.fused_sgd_(p_l, g_l, b_l, group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                             group["nesterov"], group["maximize"], first, grad_scale, found_inf, clip_coef,
                             master_params=w_l or None, backend=group["backend"])
        return loss


    def _would_create_buffers(self) -> bool:
        """Some parameter with a gradient in a momentum group has no momentum buffer yet."""
        return any(group["momentum"] != 0 and p.grad is not None and self.state[p].get("momentum_buffer") is None
                   for group in self.param_groups for p in group["params"])


class FusedLion(_FusedOptimizer):
    """Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): sign updates, one state."""

    _fp32_state_keys = ("exp_avg", "master_param")

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, master_weights: bool = False,
                 backend: str | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                        master_weights=master_weights, backend=backend)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, *, grad_scale: Tensor | None = None,
             found_inf: Tensor | None = None, clip_coef: Tensor | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = self._amp_args(grad_scale, found_inf)
        for group in self.param_groups:
            ps, gs = self._grads(group)
            if not ps:
                continue
            m, masters = [], []
            for p in ps:
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                self._master(group, p, st)
                m.append(st["exp_avg"])
                if "master_param" in st:
                    masters.append(st["master_param"])
            beta1, beta2 = group["betas"]
            F.fused_lion_(ps, gs, m, group["lr"], beta1, beta2, group["weight_decay"], group["maximize"], grad_scale,
                          found_inf, clip_coef, master_params=masters or None, backend=group["backend"])
        return loss
