"""Lightning's ``utilities.memory``: out-of-memory checks and clean-up (shared with the batch-size finder)."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from trainer.tuner.batch_size_scaling import (
    garbage_collection_cuda,
    is_cuda_out_of_memory,
    is_cudnn_snafu,
    is_oom_error,
    is_out_of_cpu_memory,
)
from trainer.utilities import apply_to_collection


def recursive_detach(in_dict: Any, to_cpu: bool = False) -> Any:
    """Every tensor in ``in_dict`` (nested collections too) detached, and moved to the CPU with ``to_cpu``."""

    def detach(t: Tensor) -> Tensor:
        t = t.detach()
        return t.cpu() if to_cpu else t

    return apply_to_collection(in_dict, Tensor, detach)


__all__ = ["garbage_collection_cuda", "is_cuda_out_of_memory", "is_cudnn_snafu", "is_oom_error", "is_out_of_cpu_memory",
           "recursive_detach"]
