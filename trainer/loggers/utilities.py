"""Helpers shared by the loggers: rank-zero gating, hparams conversion, atomic YAML writes."""
from __future__ import annotations

import functools
import inspect
import os
import tempfile
import warnings
from argparse import Namespace
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any, Callable, Optional, TypeVar, Union

import torch
import yaml

_T = TypeVar("_T")


# one rank-zero switch for the whole package (the DDP strategy sets its ``rank``)
from trainer.utilities.rank_zero import _rank_from_env, rank_zero_only  # noqa: E402,F401


class DummyExperiment:
    """What ``logger.experiment`` is on ranks other than 0: every call is a no-op (as Lightning's)."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, _: str) -> Callable:
        return self.nop

    def __getitem__(self, idx: Any) -> "DummyExperiment":
        return self

    def __setitem__(self, *args: Any) -> None:
        pass


def rank_zero_experiment(fn: Callable[..., _T]) -> Callable[..., Any]:
    """For a logger's ``experiment`` property: the real one on rank 0 only (no folders, files or
    writers from the other ranks), a :class:`DummyExperiment` elsewhere."""

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        if rank_zero_only.rank > 0:
            return DummyExperiment()
        return fn(self)

    return experiment


def _version(loggers: list, separator: str = "_") -> Union[int, str]:
    """The version shown as ``v_num``: one logger's own version, else the distinct versions joined."""
    if len(loggers) == 1:
        return loggers[0].version
    return separator.join(dict.fromkeys(str(logger.version) for logger in loggers))


def _convert_params(params: Optional[Union[Mapping[str, Any], Namespace]]) -> dict[str, Any]:
    if isinstance(params, Namespace):
        return dict(vars(params))
    if params is None:
        return {}
    return dict(params)


def _add_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> Mapping[str, Any]:
    if not prefix:
        return metrics
    return {f"{prefix}{separator}{k}": v for k, v in metrics.items()}


def _flatten_dict(params: Mapping[Any, Any], delimiter: str = "/", parent_key: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a/b': 1}``; lists of dicts are indexed (``'dl/0/a'``), as Lightning does."""
    result: dict[str, Any] = {}
    for key, value in params.items():
        new_key = f"{parent_key}{delimiter}{key}" if parent_key else str(key)
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        elif isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, MutableMapping):
            result.update(_flatten_dict(value, delimiter=delimiter, parent_key=new_key))
        elif isinstance(value, list) and value and all(isinstance(v, MutableMapping) for v in value):
            for i, item in enumerate(value):
                result.update(_flatten_dict(item, delimiter=delimiter, parent_key=f"{new_key}/{i}"))
        else:
            result[new_key] = value
    return result


def _sanitize_params(params: dict[str, Any]) -> dict[str, Any]:
    """Non-primitive values become their ``str`` (TensorBoard's hparams plugin takes only primitives)."""
    try:
        import numpy as np

        np_scalars: tuple = (np.bool_, np.integer, np.floating)
    except ImportError:  # pragma: no cover - numpy is a dependency
        np_scalars = ()
    for key in params:
        if np_scalars and isinstance(params[key], np_scalars):
            params[key] = params[key].item()
        if type(params[key]) not in (bool, int, float, str, torch.Tensor):
            params[key] = str(params[key])
    return params


def _sanitize_callable_params(params: dict[str, Any]) -> dict[str, Any]:
    def sanitize(value: Any) -> Any:
        if inspect.isclass(value):
            return value.__name__
        if callable(value):
            try:
                out = value()
                return value.__name__ if callable(out) else out
            except Exception:
                return getattr(value, "__name__", None)
        return value

    return {k: sanitize(v) for k, v in params.items()}


def save_hparams_to_yaml(config_yaml: str, hparams: Union[Mapping[str, Any], Namespace]) -> None:
    """Write ``hparams`` to ``config_yaml`` like Lightning (values YAML cannot dump are skipped with a warning).

    The file is written to a temporary file in the same folder and moved into place with ``os.replace``, so a
    crash mid-write never leaves a truncated ``hparams.yaml`` behind.
    """
    from trainer import cloud_io

    local = cloud_io.is_local_path(config_yaml)
    folder = os.path.dirname(config_yaml)
    if not cloud_io.is_dir(folder):
        raise RuntimeError(f"Missing folder: {folder}.")
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    if not isinstance(hparams, Mapping):
        raise TypeError("hparams must be dictionary")

    allowed: dict[str, Any] = {}
    for key, value in hparams.items():
        value = value.name if isinstance(value, Enum) else value
        try:
            yaml.dump(value)
        except (TypeError, ValueError, yaml.YAMLError):
            warnings.warn(f"Skipping '{key}' parameter because it is not possible to safely dump to YAML.")
        else:
            allowed[key] = value

    if not local:  # an fsspec URL: one write in a transaction
        cloud_io.write_bytes_remote(yaml.dump(allowed).encode(), config_yaml)
        return
    fd, tmp_path = tempfile.mkstemp(prefix=".hparams-", suffix=".yaml.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="") as fp:
            yaml.dump(allowed, fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp_path, config_yaml)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _next_version(versions_root: str) -> int:
    """``max(N) + 1`` over the ``version_N`` folders under ``versions_root`` (0 when there are none)."""
    from trainer import cloud_io

    try:
        entries = cloud_io.list_dir(versions_root)
    except OSError:
        return 0
    existing = []
    for entry in entries:
        if entry.startswith("version_") and cloud_io.is_dir(os.path.join(versions_root, entry)):
            suffix = entry.split("_")[1]
            if suffix.isdigit():
                existing.append(int(suffix))
    return max(existing) + 1 if existing else 0


def _convert_json_serializable(params: dict[str, Any]) -> dict[str, Any]:
    """Values ``json`` cannot encode become their ``str`` (what W&B's config accepts)."""
    import json

    def serializable(value: Any) -> bool:
        if value is None or isinstance(value, (bool, int, float, str, list, dict)):
            return True
        try:
            json.dumps(value)
            return True
        except (TypeError, OverflowError):
            return False

    return {k: v if serializable(v) else str(v) for k, v in params.items()}


def _scan_checkpoints(checkpoint_callback: Any, logged_model_time: dict[str, float]) -> list[tuple[float, str, Any, str]]:
    """The checkpoint files of ``checkpoint_callback`` not logged yet (or rewritten since), oldest first, as
    ``(mtime, path, score, tag)``; tags are Lightning's ``latest`` / ``best`` / ``best_k``."""
    candidates: dict[str, tuple[Any, str]] = {}
    if hasattr(checkpoint_callback, "last_model_path") and hasattr(checkpoint_callback, "current_score"):
        candidates[checkpoint_callback.last_model_path] = (checkpoint_callback.current_score, "latest")
    if hasattr(checkpoint_callback, "best_model_path") and hasattr(checkpoint_callback, "best_model_score"):
        candidates[checkpoint_callback.best_model_path] = (checkpoint_callback.best_model_score, "best")
    for path, score in getattr(checkpoint_callback, "best_k_models", {}).items():
        candidates[path] = (score, "best_k")
    found = sorted(
        (os.stat(path).st_mtime, path, score, tag)
        for path, (score, tag) in candidates.items()
        if path and os.path.isfile(path)
    )
    return [c for c in found if c[1] not in logged_model_time or logged_model_time[c[1]] < c[0]]


# The settings of a ModelCheckpoint recorded in a logged checkpoint's metadata (Lightning's list).
_CHECKPOINT_METADATA_KEYS = ("monitor", "mode", "save_last", "save_top_k", "save_weights_only", "_every_n_train_steps")


def _checkpoint_metadata(checkpoint_callback: Any, path: str, score: Any, section: str, extra_keys: tuple = ()) -> dict:
    """What a logger records with an uploaded checkpoint file: score, file name, and the callback's settings."""
    return {
        "score": score.item() if isinstance(score, torch.Tensor) else score,
        "original_filename": os.path.basename(path),
        section: {
            k: getattr(checkpoint_callback, k)
            for k in _CHECKPOINT_METADATA_KEYS + extra_keys
            if hasattr(checkpoint_callback, k)
        },
    }
