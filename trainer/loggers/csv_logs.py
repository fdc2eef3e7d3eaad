"""``CSVLogger``: metrics to ``metrics.csv`` and hyperparameters to ``hparams.yaml``, Lightning's layout.

Files land in ``save_dir/name/version_N/``; ``save_dir`` may be an fsspec URL (``memory://``, ``s3://``), where
each flush rewrites ``metrics.csv`` whole (object stores have no append). Rows are buffered and appended every
``flush_logs_every_n_steps``
steps (and at ``save``/``finalize``); the header is the sorted union of every key seen, and the file is rewritten
with the wider header when a new key appears, exactly as Lightning does, so the two produce identical CSVs.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from argparse import Namespace
from typing import Any, Optional, Union

from torch import Tensor

from trainer import cloud_io
from trainer.loggers.logger import Logger
from trainer.loggers.utilities import (
    _add_prefix,
    _convert_params,
    _next_version,
    rank_zero_experiment,
    rank_zero_only,
    save_hparams_to_yaml,
)


class ExperimentWriter:
    """Buffers metric rows and writes them to ``log_dir/metrics.csv``; writes ``log_dir/hparams.yaml``."""

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self._local = cloud_io.is_local_path(log_dir)
        self._check_log_dir_exists()
        cloud_io.makedirs(log_dir)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics_dict: dict[str, Any], step: Optional[int] = None) -> None:
        if step is None:
            step = len(self.metrics)
        row = {k: (v.item() if isinstance(v, Tensor) else v) for k, v in metrics_dict.items()}
        row["step"] = step
        self.metrics.append(row)

    def save(self) -> None:
        if not self.metrics:
            return
        new_keys = self._record_new_keys()
        if not self._local:
            self._save_remote()
            return
        file_exists = os.path.isfile(self.metrics_file_path)
        if new_keys and file_exists:
            self._rewrite_with_new_header(self.metrics_keys)
        with open(self.metrics_file_path, "a" if file_exists else "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            if not file_exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []

    def _save_remote(self) -> None:
        """Rows on disk plus the buffered ones, under the current header, written as one file."""
        rows: list[dict[str, Any]] = []
        if cloud_io.exists(self.metrics_file_path):
            rows = list(csv.DictReader(io.StringIO(cloud_io.read_bytes(self.metrics_file_path).decode())))
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows + self.metrics)
        cloud_io.write_bytes_remote(out.getvalue().encode(), self.metrics_file_path)
        self.metrics = []

    def _record_new_keys(self) -> set[str]:
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        self.metrics_keys.extend(new_keys)
        self.metrics_keys.sort()
        return new_keys

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        # Write beside and replace, so a crash here cannot lose rows already on disk.
        tmp_path = self.metrics_file_path + ".tmp"
        with open(tmp_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp_path, self.metrics_file_path)

    def _check_log_dir_exists(self) -> None:
        if cloud_io.list_dir(self.log_dir):
            warnings.warn(
                f"Experiment logs directory {self.log_dir} exists and is not empty."
                " Previous log files in this directory will be deleted when the new ones are saved!"
            )
            if cloud_io.exists(self.metrics_file_path):
                cloud_io.remove(self.metrics_file_path)


class CSVLogger(Logger):
    r"""Log to the local file system in YAML (hparams) and CSV (metrics) format.

    Args:
        save_dir: Save directory.
        name: Experiment name (``None`` or ``""``: versions go straight under ``save_dir``).
        version: Experiment version; ``None`` picks the next free ``version_N``; a string is used as the folder name.
        prefix: A string put at the beginning of metric keys (joined with ``"-"``).
        flush_logs_every_n_steps: How often (in steps) buffered rows are written to disk.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike],
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._experiment: Optional[ExperimentWriter] = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> Union[int, str]:
        if self._version is None:
            self._version = _next_version(os.path.join(self._save_dir, self.name))
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        """The ``ExperimentWriter``, created (with its folder) on first use."""
        if self._experiment is None:
            cloud_io.makedirs(self.root_dir)
            self._experiment = ExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Optional[Union[dict[str, Any], Namespace]] = None) -> None:  # type: ignore[override]
        self.experiment.log_hparams(_convert_params(params))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Union[Tensor, float]], step: Optional[int] = None) -> None:
        metrics = dict(_add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR))
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics, step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        self.experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is None:
            # Nothing was logged (e.g. a non-zero rank): don't create folders now.
            return
        self.save()
