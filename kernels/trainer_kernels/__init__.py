"""Triton multi-tensor optimizer kernels, registered as ``torch.ops.trainer_triton.*``.

Importable without the C++ build and without triton: ``HAS_TRITON`` says whether the ops were
registered (``TRITON_ERROR`` says why not). On a machine without a GPU the kernels run under the
Triton interpreter: set ``TRITON_INTERPRET=1`` before anything imports triton.
"""
HAS_TRITON = False
TRITON_ERROR: str | None = None
try:
    import triton  # noqa: F401

    from . import adamw, grad_norm, lion, sgd  # noqa: F401  (registers the ops)

    HAS_TRITON = True
except Exception as e:  # no triton, or a triton/torch version mismatch
    TRITON_ERROR = f"{type(e).__name__}: {e}"
