"""Hyper-parameter files as Lightning reads and writes them (``lightning.pytorch.core.saving``):
a logger's ``hparams.yaml`` and the legacy ``meta_tags.csv`` (``key,value`` rows). Paths may be
local or any fsspec URL.
"""
from __future__ import annotations

import ast
import csv
import os
import warnings
from argparse import Namespace
from typing import Any, Dict, Mapping, Union

import fsspec
import yaml

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


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


__all__ = ["load_hparams_from_tags_csv", "load_hparams_from_yaml", "save_hparams_to_tags_csv",
           "save_hparams_to_yaml"]
