"""Loads the optional kernel backends and picks one per device type, once.

Importing this module never raises: each backend sets an availability flag. The order tried for
a device is the fastest first:

- cuda tensors: ``cuda`` (the CUDA kernels of trainer._C, registered for the CUDA dispatch key of
  the same ``torch.ops.trainer.*`` ops) -> ``triton`` -> ``torch``
- cpu tensors:  ``cpp`` (trainer._C) -> ``torch``  (``triton`` only on request, under TRITON_INTERPRET=1)

``torch`` is ``torch._fused_adamw_``/``_fused_sgd_`` (present for cpu and cuda since torch 2.4) plus
a foreach Lion. An explicit ``backend=`` that is not available raises :class:`BackendUnavailable`.
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("trainer.optim")

BACKENDS = ("cuda", "triton", "cpp", "torch")

# --- trainer._C: C++ CPU kernels (+ CUDA kernels where built with a toolkit) -------------------
_C = None
_C_ERROR: str | None = None
try:
    from trainer import _C  # type: ignore[no-redef]  # registers torch.ops.trainer.*
except Exception as e:  # ImportError, or an ABI mismatch after a torch upgrade (OSError/ImportError)
    _C_ERROR = f"{type(e).__name__}: {e}"

HAS_CPP: bool = _C is not None

_CUDA_OPS = ("fused_adamw_", "fused_sgd_", "fused_lion_", "grad_norm")


def _has_cuda_kernels() -> bool:
    """trainer._C was built with CUDA and every op has a kernel for the CUDA dispatch key."""
    if not (HAS_CPP and getattr(_C, "with_cuda", 0)):
        return False
    try:
        return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"trainer::{op}", "CUDA") for op in _CUDA_OPS)
    except Exception:  # private API moved: trust the build flag
        return True


HAS_CUDA_EXT: bool = _has_cuda_kernels()

if HAS_CPP:
    # Fake (meta) implementations: the ops mutate their list arguments in place and return
    # nothing, except grad_norm which returns a 0-dim fp32 tensor. With these, torch.compile
    # traces each op as a single node and functionalizes it from the schema's (a!) annotations.
    def _no_output(*args, **kwargs) -> None:
        return None

    for _name in ("fused_adamw_", "fused_sgd_", "fused_lion_"):
        torch.library.register_fake(f"trainer::{_name}")(_no_output)

    @torch.library.register_fake("trainer::grad_norm")
    def _grad_norm_fake(grads, grad_scale=None):
        device = grads[0].device if len(grads) else torch.device("cpu")
        return torch.empty((), dtype=torch.float32, device=device)


# --- Triton kernels (kernels/trainer_kernels): importable without the C++ build --------------------------------
_TRITON_ERROR: str | None = None
try:
    import trainer_kernels as _kernels

    HAS_TRITON: bool = bool(_kernels.HAS_TRITON)
    if not HAS_TRITON:
        _TRITON_ERROR = _kernels.TRITON_ERROR
except Exception as e:
    _kernels = None
    HAS_TRITON = False
    _TRITON_ERROR = f"{type(e).__name__}: {e}"

TRITON_INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


class BackendUnavailable(RuntimeError):
    """An explicitly requested kernel backend cannot run here."""


def available_backends(device_type: str) -> list[str]:
    """Backends able to run on ``device_type``, fastest first."""
    out: list[str] = []
    if device_type == "cuda":
        if HAS_CUDA_EXT:
            out.append("cuda")
        if HAS_TRITON and torch.cuda.is_available():
            out.append("triton")
    elif device_type == "cpu":
        if HAS_CPP:
            out.append("cpp")
        if HAS_TRITON and TRITON_INTERPRET:
            out.append("triton")  # slow (the interpreter), so only on request
    out.append("torch")
    return out


def _why_unavailable(backend: str, device_type: str) -> str:
    if backend == "cpp":
        return f"trainer._C did not load ({_C_ERROR}); build it with `pip install --no-build-isolation -e .`"
    if backend == "cuda":
        if not HAS_CPP:
            return f"trainer._C did not load ({_C_ERROR})"
        return "trainer._C was built without CUDA (needs a CUDA toolkit and a CUDA build of torch)"
    if backend == "triton":
        if not HAS_TRITON:
            return f"triton kernels unavailable ({_TRITON_ERROR})"
        return f"no triton driver for {device_type} tensors (set TRITON_INTERPRET=1 to interpret on the CPU)"
    return "unknown backend"


_chosen: dict[str, str] = {}


def resolve_backend(device: torch.device | str, requested: str | None = None) -> str:
    """The backend for tensors on ``device``: ``requested`` if it can run, else the first available.

    The automatic choice is made once per device type and logged once.
    """
    device_type = torch.device(device).type
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {requested!r}")
        avail = available_backends(device_type)
        # triton on CPU is allowed whenever the interpreter is on, even if not auto-picked
        if requested not in avail:
            raise BackendUnavailable(
                f"trainer.optim backend {requested!r} is unavailable for {device_type} tensors: "
                f"{_why_unavailable(requested, device_type)}. Available: {avail}"
            )
        return requested
    choice = _chosen.get(device_type)
    if choice is None:
        choice = available_backends(device_type)[0]
        _chosen[device_type] = choice
        missing = _missing_native(device_type)
        if missing is not None:
            log.warning("trainer.optim: the %r kernels are unavailable (%s); %s tensors fall back to the slower "
                        "%r backend", missing, _why_unavailable(missing, device_type), device_type, choice)
        else:
            log.info("trainer.optim: using the %r backend for %s tensors", choice, device_type)
    return choice


def compiled_update_uses_ext(device_types: set[str] | frozenset[str]) -> bool:
    """Whether a compiled step updating parameters on ``device_types`` lowers its optimizer to
    ``torch.ops.trainer.*`` (one multi-tensor kernel per group) rather than inductor's foreach code.

    CPU needs ``trainer._C``; CUDA needs it built with its CUDA kernels (on a GPU the inductor
    update is about one kernel per parameter). A mix of devices, or any other device, uses the
    inductor path, which handles every device.
    """
    if len(device_types) != 1:
        return False
    (dev,) = device_types
    if dev == "cpu":
        return HAS_CPP
    if dev == "cuda":
        return HAS_CUDA_EXT
    return False


def _missing_native(device_type: str) -> str | None:
    """The compiled backend that should serve ``device_type`` but did not load, if any."""
    if device_type == "cpu" and not HAS_CPP:
        return "cpp"
    if device_type == "cuda" and not HAS_CUDA_EXT and torch.version.cuda is not None:
        return "cuda"
    return None
