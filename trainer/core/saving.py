"""Hyper-parameter files as Lightning reads and writes them (``lightning.pytorch.core.saving``):
a logger's ``hparams.yaml`` and the legacy ``meta_tags.csv`` (``key,value`` rows), local or any fsspec
URL; and the steps of ``load_from_checkpoint`` shared by LightningModule and LightningDataModule
(read the file, build the object from its hyper-parameters, load the weights).
"""
from __future__ import annotations

import ast
import csv
import inspect
import os
import warnings
from argparse import Namespace
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

import fsspec
import yaml

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

_PATH = Union[str, "os.PathLike[str]"]


def load_hparams_from_yaml(config_yaml: _PATH, use_omegaconf: bool = True) -> Dict[str, Any]:
    """The hyper-parameters in ``config_yaml``; a missing file gives ``{}`` with Lightning's RuntimeWarning.

    ``use_omegaconf`` is accepted for Lightning's signature; OmegaConf is not used (not a dependency).
    """
    fs, path = fsspec.core.url_to_fs(os.fspath(config_yaml))
    if not fs.exists(path):
        warnings.warn(f"Missing Tags: {os.fspath(config_yaml)}.", RuntimeWarning)
        return {}
    with fs.open(path, "r") as f:
        return dict(yaml.full_load(f) or {})


def save_hparams_to_yaml(config_yaml: _PATH, hparams: Union[Mapping[str, Any], Namespace],
                         use_omegaconf: bool = True) -> None:
    """Writes ``hparams`` as the loggers do (values YAML cannot dump are skipped with a warning)."""
    from trainer.loggers.utilities import save_hparams_to_yaml as _save

    _save(os.fspath(config_yaml), hparams)


def load_hparams_from_tags_csv(tags_csv: _PATH) -> Dict[str, Any]:
    """``key,value`` rows after a header; values are Python literals where they parse, else strings."""
    fs, path = fsspec.core.url_to_fs(os.fspath(tags_csv))
    if not fs.exists(path):
        warnings.warn(f"Missing Tags: {os.fspath(tags_csv)}.", RuntimeWarning)
        return {}
    with fs.open(path, "r", newline="") as f:
        rows = list(csv.reader(f, delimiter=","))
    return {row[0]: _literal(row[1]) for row in rows[1:]}


def save_hparams_to_tags_csv(tags_csv: _PATH, hparams: Union[Mapping[str, Any], Namespace]) -> None:
    fs, path = fsspec.core.url_to_fs(os.fspath(tags_csv))
    folder = os.path.dirname(path)
    if not fs.isdir(folder):
        raise RuntimeError(f"Missing folder: {os.path.dirname(os.fspath(tags_csv))}.")
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    with fs.open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "value"])
        writer.writerow({"key": "key", "value": "value"})
        for key, value in hparams.items():
            writer.writerow({"key": key, "value": value})


def read_checkpoint_for(
    cls: type, checkpoint_path: Any, map_location: Any, hparams_file: Optional[str], overrides: Dict[str, Any]
) -> Dict[str, Any]:
    """The checkpoint dict with ``cls``'s hyper-parameters replaced by ``hparams_file`` and updated by ``overrides``."""
    from trainer.checkpoint import load_checkpoint_file
    from trainer.module import LightningModule

    checkpoint = load_checkpoint_file(checkpoint_path, map_location=map_location or keep_device_if_available)
    if hparams_file is not None:
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = _read_hparams_file(hparams_file)
    hparams: Dict[str, Any] = {}
    if issubclass(cls, LightningModule):  # checkpoints of Lightning 0.7 kept them under older keys
        for old_key in _PAST_HPARAMS_KEYS:
            hparams.update(_as_dict(checkpoint.get(old_key)))
    hparams.update(_as_dict(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY)))
    hparams.update(overrides)
    checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = hparams
    return checkpoint


def keep_device_if_available(storage: Any, location: str) -> Any:
    """``torch.load``'s default placement (a tensor saved on ``cuda:0`` comes back there), except onto an
    accelerator this machine lacks: those tensors load on the CPU (Lightning's default ``map_location``)."""
    import torch

    if (location.startswith("cuda") and not torch.cuda.is_available()) or (
        location.startswith("mps") and not torch.backends.mps.is_available()
    ):
        return storage.cpu()
    return None


_PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


def _as_dict(hparams: Any) -> Dict[str, Any]:
    return dict(vars(hparams) if isinstance(hparams, Namespace) else (hparams or {}))


def _read_hparams_file(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """Hyper-parameters from a logger's ``hparams.yaml`` (or a legacy tags ``.csv``), as Lightning reads them."""
    extension = os.fspath(path).rsplit(".", 1)[-1].lower()
    if extension == "csv":
        return load_hparams_from_tags_csv(path)
    if extension in ("yml", "yaml"):
        return load_hparams_from_yaml(path)
    raise ValueError(".csv, .yml or .yaml is required for `hparams_file`")


def instantiate_from_checkpoint(cls: type, checkpoint: Dict[str, Any], overrides: Dict[str, Any]) -> Any:
    """``cls(...)`` from the checkpoint's hyper-parameters: all of them for an ``__init__`` taking ``**kwargs``,
    else only its named arguments; saved as one object (``save_hyperparameters(hparams)``), they go back whole."""
    hparams: Dict[str, Any] = dict(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    params = {
        name: p for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    accepts_kwargs = any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()
    )
    instantiator = _trusted_instantiator(cls, hparams.pop("_instantiator", None), hparams.get("_class_path"))
    saved_as = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_NAME)
    if saved_as and saved_as in params:
        init_kwargs = {saved_as: hparams, **overrides}
    else:
        init_kwargs = hparams
    if not accepts_kwargs:
        init_kwargs = {k: v for k, v in init_kwargs.items() if k in params or k == "_class_path"}
        if instantiator is None:
            init_kwargs.pop("_class_path", None)
    return instantiator(cls, init_kwargs) if instantiator is not None else cls(**init_kwargs)


#: the instantiators a checkpoint may name (Lightning's allowlist against code execution; a checkpoint written by
#: Lightning's CLI is rebuilt by ours)
_ALLOWED_INSTANTIATORS = {"trainer.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module",
                          "lightning.pytorch.cli.instantiate_module"}


def _trusted_instantiator(cls: type, path: Any, class_path: Any) -> Optional[Any]:
    """The function that rebuilds ``cls`` from a CLI's saved config, or ``None`` (``cls(**hparams)``); raises for
    an instantiator or a class path the checkpoint may not name (Lightning's errors)."""
    if path is None:
        return None
    if not isinstance(path, str) or path not in _ALLOWED_INSTANTIATORS:
        raise ValueError(
            f"The instantiator {path!r} from the checkpoint is not in the allowlist of trusted"
            " instantiators and was blocked to prevent arbitrary code execution. If you trust this checkpoint,"
            " add the path to `trainer.core.saving._ALLOWED_INSTANTIATORS` before loading."
        )
    if class_path is not None and not _is_imported_subclass(class_path, cls):
        raise ValueError(
            f"The class {class_path!r} requested by the checkpoint does not resolve to an already imported"
            f" subclass of {cls.__name__} and was blocked to prevent arbitrary code execution. If you trust this"
            " checkpoint, import the module that defines the class before loading."
        )
    from trainer.cli import instantiate_module

    return instantiate_module


def _is_imported_subclass(class_path: str, cls: type) -> bool:
    import sys

    module_name, _, name = class_path.rpartition(".")
    module = sys.modules.get(module_name)
    found = getattr(module, name, None) if module is not None else None
    return isinstance(found, type) and issubclass(found, cls)


def load_weights(model: "nn.Module", state_dict: Mapping[str, Any], strict: bool, checkpoint_path: Any) -> None:
    """``load_state_dict`` naming the file on a mismatch; with ``strict=False``, Lightning's two warnings."""
    try:
        keys = model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:
        from trainer.checkpoint import CheckpointError

        raise CheckpointError(
            f"Checkpoint {_describe_path(checkpoint_path)} does not fit {type(model).__name__}: {err}"
        ) from err
    if strict:
        return
    if keys.missing_keys:
        warnings.warn(f"Found keys that are in the model state dict but not in the checkpoint: {keys.missing_keys}")
    if keys.unexpected_keys:
        warnings.warn(
            f"Found keys that are not in the model state dict but in the checkpoint: {keys.unexpected_keys}"
        )


def _describe_path(checkpoint_path: Any) -> str:
    try:
        return repr(os.fspath(checkpoint_path))
    except TypeError:  # a file object
        return repr(checkpoint_path)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


__all__ = ["instantiate_from_checkpoint", "keep_device_if_available", "load_hparams_from_tags_csv", "load_hparams_from_yaml", "load_weights",  # noqa: E501
           "read_checkpoint_for", "save_hparams_to_tags_csv", "save_hparams_to_yaml"]
