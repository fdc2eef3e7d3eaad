"""Small public helpers Lightning exports from ``lightning.pytorch.utilities`` (re-exported there)."""
from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignores ``PossibleUserWarning`` (from every module, or from modules matching ``module``)."""
    from trainer.utilities.warnings import PossibleUserWarning

    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


def _num_cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for ``DataLoader(num_workers=...)``: the CPUs this process may use, shared by the
    ``local_world_size`` processes of this machine, one left for each main process (at least 1)."""
    if local_world_size < 1:
        raise ValueError(f"`local_world_size` should be >= 1, got {local_world_size}.")
    return max(1, _num_cpus_available() // local_world_size - 1)


def measure_flops(model: torch.nn.Module, forward_fn: Callable[[], torch.Tensor],
                  loss_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> int:
    """FLOPs of ``forward_fn()`` (and, with ``loss_fn``, of the loss and its backward), counted by torch's
    ``FlopCounterMode`` (a model on the "meta" device costs nothing to measure)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = forward_fn()
        if loss_fn is not None:
            loss_fn(out).backward()
    return counter.get_total_flops()


def is_shared_filesystem(strategy: Any, path: Optional[Union[str, Path]] = None, timeout: int = 3) -> bool:
    """Whether ``path`` (default: the working directory) is one filesystem for every process of ``strategy``:
    rank 0 writes a file there and every rank must see it within ``timeout`` seconds. A URL (``s3://...``) or a
    single process counts as shared. Call it on every rank (it synchronises them)."""
    if path is not None and "://" in str(path) and not str(path).startswith("file://"):
        return True
    if getattr(strategy, "world_size", 1) == 1:
        return True
    path = Path(Path.cwd() if path is None else path).resolve()
    if not strategy.reduce_boolean_decision(strategy.broadcast(path) == path, all=True):
        return False
    if not strategy.reduce_boolean_decision(path.exists(), all=True):
        raise FileNotFoundError(
            f"Unable to determine if the path belongs to a shared filesystem. The path does not exist: {path}")
    folder = path.parent if path.is_file() else path
    check = folder / f".trainer_shared_fs_check_{strategy.broadcast(uuid.uuid4().hex)}"
    if strategy.is_global_zero:
        check.touch()
    strategy.barrier()
    deadline = time.monotonic() + timeout
    found = check.exists()
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = check.exists()
    shared = strategy.reduce_boolean_decision(found, all=True)
    strategy.barrier()
    if strategy.is_global_zero:
        check.unlink(missing_ok=True)
    return shared


__all__ = ["disable_possible_user_warnings", "is_shared_filesystem", "measure_flops", "suggested_max_num_workers"]
