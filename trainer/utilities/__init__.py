"""Small helpers shared across the package: collections, batch sizes, attribute dicts.

Lightning's public helpers live in submodules at Lightning's paths (``trainer.utilities.combined_loader``,
``trainer.utilities.rank_zero``, ``trainer.utilities.grads``) and are exported from here too, as
``lightning.pytorch.utilities`` exports them.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

import torch


class AttributeDict(dict):
    """A dict whose keys read and write as attributes (Lightning's ``hparams`` type)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exp:
            raise AttributeError(f"Missing attribute {key!r}") from exp

    def __setattr__(self, key: str, val: Any) -> None:
        self[key] = val

    def __delattr__(self, item: str) -> None:
        if item not in self:
            raise AttributeError(item)
        del self[item]

    def __repr__(self) -> str:
        if not len(self):
            return ""
        max_key_length = max(len(str(k)) for k in self)
        tmp_name = "{:" + str(max_key_length + 3) + "s} {}"
        rows = [tmp_name.format(f'"{n}":', self[n]) for n in sorted(self.keys())]
        return "\n".join(rows)


def apply_to_collection(data: Any, dtype: Union[Type, Tuple[Type, ...]], fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Applies ``fn`` to every element of type ``dtype`` in nested lists/tuples/dicts/dataclasses."""
    if isinstance(data, dtype):
        return fn(data, *args, **kwargs)
    if isinstance(data, Mapping):
        return type(data)({k: apply_to_collection(v, dtype, fn, *args, **kwargs) for k, v in data.items()}) \
            if not hasattr(data, "default_factory") else {k: apply_to_collection(v, dtype, fn, *args, **kwargs)
                                                          for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_collection(d, dtype, fn, *args, **kwargs) for d in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_collection(d, dtype, fn, *args, **kwargs) for d in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_collection(getattr(data, f.name), dtype, fn, *args, **kwargs)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def move_data_to_device(batch: Any, device: torch.device) -> Any:
    """Moves every tensor (and every object with a ``.to`` method) in a nested batch to ``device``."""
    non_blocking = device.type == "cuda"

    def _move(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            if t.device == device:
                return t
            return t.to(device, non_blocking=non_blocking)
        out = t.to(device)
        return t if out is None else out  # some user .to() methods work in place and return None

    if isinstance(batch, torch.Tensor):
        return _move(batch)
    return apply_to_collection(batch, _Movable, _move)


class _MovableMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor) or (
            callable(getattr(obj, "to", None)) and not isinstance(obj, (type, str, bytes))
            and not isinstance(obj, (Mapping, list, tuple)) and not dataclasses.is_dataclass(obj)
        )


class _Movable(metaclass=_MovableMeta):
    """isinstance target: tensors and objects with ``.to`` (Lightning's ``_TransferableDataType``)."""


def extract_batch_size(batch: Any) -> int:
    """Batch size of the first tensor found in ``batch`` (its first dimension), as Lightning infers it."""

    def _find(b: Any) -> Optional[int]:
        if isinstance(b, torch.Tensor):
            return 1 if b.ndim == 0 else int(b.size(0))
        if isinstance(b, (str, bytes)):
            return None
        if isinstance(b, Mapping):
            for v in b.values():
                r = _find(v)
                if r is not None:
                    return r
            return None
        if dataclasses.is_dataclass(b) and not isinstance(b, type):
            for f in dataclasses.fields(b):
                r = _find(getattr(b, f.name))
                if r is not None:
                    return r
            return None
        if isinstance(b, Sequence):
            for v in b:
                r = _find(v)
                if r is not None:
                    return r
            return None
        return None

    size = _find(batch)
    if size is None:
        from trainer.exceptions import MisconfigurationException

        raise MisconfigurationException(
            "We could not infer the batch_size from the batch. Either simplify its structure or provide the"
            " batch_size as `self.log(..., batch_size=batch_size)`."
        )
    return size


def is_param_in_signature(fn: Callable, name: str, min_args: Optional[int] = None) -> bool:
    """Whether ``fn`` accepts an argument ``name`` (or at least ``min_args`` positional ones, or ``*args``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    if name in parameters:
        return True
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters.values()):
        return True
    if min_args is not None:
        positional = [
            p for p in parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        return len(positional) >= min_args
    return False


def to_float_dict(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Host-side conversion of metric tensors to Python numbers: one device-to-host copy per device.

    Like Lightning's ``.item()``: floating tensors become floats, integer tensors ints; Python
    numbers pass through unchanged.
    """
    out: Dict[str, Any] = {}
    tensors = [(k, v) for k, v in metrics.items() if isinstance(v, torch.Tensor)]
    if tensors:
        by_device: Dict[torch.device, list] = {}
        for k, v in tensors:
            by_device.setdefault(v.device, []).append((k, v))
        for items in by_device.values():
            stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for _, v in items]).cpu().tolist()
            for (k, v), val in zip(items, stacked):
                is_int = not (v.is_floating_point() or v.is_complex())
                out[k] = int(val) if is_int and v.dtype != torch.bool else (bool(val) if v.dtype == torch.bool else val)
    for k, v in metrics.items():
        if isinstance(v, numbers.Number):
            out[k] = v
    return {k: out[k] for k in metrics if k in out}


def is_picklable(obj: object) -> bool:
    """Whether ``obj`` can be pickled (Lightning's ``utilities.is_picklable``: checkpoints pickle hparams)."""
    import pickle

    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, RuntimeError, TypeError):
        return False
    return True


# Lightning's public helpers at Lightning's paths, also importable from here (imported last: they use the above)
from trainer.utilities._helpers import (  # noqa: E402
    disable_possible_user_warnings,
    is_shared_filesystem,
    measure_flops,
    suggested_max_num_workers,
)
from trainer.utilities.combined_loader import CombinedLoader  # noqa: E402
from trainer.utilities.enums import GradClipAlgorithmType, LightningEnum  # noqa: E402
from trainer.utilities.grads import grad_norm  # noqa: E402
from trainer.utilities.parameter_tying import find_shared_parameters, set_shared_parameters  # noqa: E402
from trainer.utilities.rank_zero import (  # noqa: E402
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
