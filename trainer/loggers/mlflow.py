"""``MLFlowLogger``: log to an MLflow tracking store (Lightning's arguments, run layout and checkpoint artifacts).

Without ``tracking_uri`` (and no ``MLFLOW_TRACKING_URI``) runs go to the local file store ``file:<save_dir>``.
The experiment and run are created on first use of :attr:`MLFlowLogger.experiment` (an ``MlflowClient``).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import tempfile
import time
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Union

import yaml

from trainer.loggers.logger import Logger
from trainer.loggers.utilities import (
    _add_prefix,
    _checkpoint_metadata,
    _convert_params,
    _flatten_dict,
    _scan_checkpoints,
    rank_zero_experiment,
    rank_zero_only,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.tracking import MlflowClient

    from trainer.callbacks.model_checkpoint import ModelCheckpoint

log = logging.getLogger(__name__)

LOCAL_FILE_URI_PREFIX = "file:"
_MLFLOW_AVAILABLE = importlib.util.find_spec("mlflow") is not None
_MISSING_MLFLOW = (
    "`MLFlowLogger` needs the `mlflow` package, which is not installed."
    " HINT: Try running `pip install mlflow` (or `pip install mlflow-skinny`, or `pip install 'trainer[loggers]'`)."
)
# MLflow's status names for a Trainer's finalize status
_RUN_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}
_ALLOWED_METRIC_CHARS = re.compile("[^a-zA-Z0-9_/. -]+")


def _mlflow_version_at_least(version: str) -> bool:
    import mlflow
    from packaging.version import Version

    return Version(mlflow.__version__) >= Version(version)


class MLFlowLogger(Logger):
    """Log using `MLflow <https://mlflow.org>`_ (``pip install mlflow`` or ``mlflow-skinny``).

    Args:
        experiment_name: The experiment's name (created when it does not exist).
        run_name: Name of the new run, stored as the ``mlflow.runName`` tag (overriding one in ``tags``).
        tracking_uri: Address of a local or remote tracking server; defaults to ``MLFLOW_TRACKING_URI``, else
            ``file:<save_dir>``.
        tags: Tags of the run.
        save_dir: Local folder of the runs when no ``tracking_uri`` is given.
        log_model: Log ``ModelCheckpoint`` files as artifacts: ``"all"`` as they are written; ``True`` at the
            end of training (as they are written when ``save_top_k == -1``); ``False`` never.
        prefix: A string put at the beginning of metric keys (joined with ``"-"``).
        artifact_location: Where the experiment stores artifacts (the server's default when ``None``).
        run_id: Resume this run instead of starting a new one.
        synchronous: Whether each logging call blocks until done (mlflow >= 2.8).

    Raises:
        ModuleNotFoundError: ``mlflow`` is not installed, or ``synchronous`` is given with mlflow < 2.8.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: Optional[str] = None,
        tracking_uri: Optional[str] = os.getenv("MLFLOW_TRACKING_URI"),
        tags: Optional[dict[str, Any]] = None,
        save_dir: Optional[str] = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: Optional[str] = None,
        run_id: Optional[str] = None,
        synchronous: Optional[bool] = None,
    ) -> None:
        if not _MLFLOW_AVAILABLE:
            raise ModuleNotFoundError(_MISSING_MLFLOW)
        if synchronous is not None and not _mlflow_version_at_least("2.8.0"):
            raise ModuleNotFoundError("`synchronous` requires mlflow>=2.8.0")
        if log_model not in (True, False, "all"):
            raise ValueError(f"`log_model` must be True, False or 'all', got {log_model!r}.")
        super().__init__()
        self._experiment_name = experiment_name
        self._experiment_id: Optional[str] = None
        self._tracking_uri = tracking_uri or f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._run_name = run_name
        self._run_id = run_id
        self.tags = tags
        self._log_model = log_model
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callback: Optional["ModelCheckpoint"] = None
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._initialized = False

        from mlflow.tracking import MlflowClient

        self._mlflow_client = MlflowClient(self._tracking_uri)

    @property
    @rank_zero_experiment
    def experiment(self) -> "MlflowClient":  # type: ignore[override]
        """The ``MlflowClient``; the experiment and run are found or created on first use."""
        if self._initialized:
            return self._mlflow_client
        import mlflow

        mlflow.set_tracking_uri(self._tracking_uri)
        if self._run_id is not None:  # resuming: the run names its experiment
            self._experiment_id = self._mlflow_client.get_run(self._run_id).info.experiment_id
        else:
            if self._experiment_id is None:
                self._experiment_id = self._find_or_create_experiment()
            self._run_id = self._create_run()
        self._initialized = True
        return self._mlflow_client

    def _find_or_create_experiment(self) -> str:
        found = self._mlflow_client.get_experiment_by_name(self._experiment_name)
        if found is not None and found.lifecycle_stage != "deleted":
            return found.experiment_id
        log.warning(f"Experiment with name {self._experiment_name} not found. Creating it.")
        return self._mlflow_client.create_experiment(
            name=self._experiment_name, artifact_location=self._artifact_location
        )

    def _create_run(self) -> str:
        if self._run_name is not None:
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

            self.tags = self.tags or {}
            if MLFLOW_RUN_NAME in self.tags:
                log.warning(
                    f"The tag {MLFLOW_RUN_NAME} is found in tags. The value will be overridden by {self._run_name}."
                )
            self.tags[MLFLOW_RUN_NAME] = self._run_name
        # MLflow's context tags (user, source name, git commit) are added as `mlflow.start_run` would
        run = self._mlflow_client.create_run(experiment_id=self._experiment_id, tags=_resolve_tags()(self.tags))
        return run.info.run_id

    @property
    def run_id(self) -> Optional[str]:
        """The run's id (creating the experiment and run if needed)."""
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> Optional[str]:
        """The experiment's id (creating the experiment and run if needed)."""
        _ = self.experiment
        return self._experiment_id

    @rank_zero_only
    def log_hyperparams(self, params: Union[dict[str, Any], Namespace]) -> None:  # type: ignore[override]
        from mlflow.entities import Param

        flat = _flatten_dict(_convert_params(params))
        # MLflow caps a param value's length and a batch's size
        params_list = [Param(key=k, value=str(v)[:250]) for k, v in flat.items()]
        for start in range(0, len(params_list), 100):
            self.experiment.log_batch(
                run_id=self.run_id, params=params_list[start : start + 100], **self._log_batch_kwargs
            )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        from mlflow.entities import Metric

        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        timestamp_ms = int(time.time() * 1000)
        metrics_list = []
        for key, value in metrics.items():
            if isinstance(value, str):
                log.warning(f"Discarding metric with string value {key}={value}.")
                continue
            clean = _ALLOWED_METRIC_CHARS.sub("", key)
            if clean != key:
                warnings.warn(
                    "MLFlow only allows '_', '/', '.' and ' ' special characters in metric name."
                    f" Replacing {key} with {clean}.",
                    RuntimeWarning,
                )
            value = value.item() if hasattr(value, "item") else value
            metrics_list.append(Metric(key=clean, value=value, timestamp=timestamp_ms, step=step or 0))
        self.experiment.log_batch(run_id=self.run_id, metrics=metrics_list, **self._log_batch_kwargs)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        status = _RUN_STATUS.get(status, status)
        if self._checkpoint_callback is not None:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        if self.experiment.get_run(self.run_id):
            self.experiment.set_terminated(self.run_id, status)

    @property
    def save_dir(self) -> Optional[str]:
        """The local folder of the file store, ``None`` when the tracking URI is not a local file store."""
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX) :]
        return None

    @property
    def name(self) -> Optional[str]:
        """The experiment id (Lightning's choice: a file store's folders are named by ids)."""
        return self.experiment_id

    @property
    def version(self) -> Optional[str]:
        """The run id."""
        return self.run_id

    def after_save_checkpoint(self, checkpoint_callback: "ModelCheckpoint") -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._scan_and_log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback  # logged at `finalize`

    def _scan_and_log_checkpoints(self, checkpoint_callback: "ModelCheckpoint") -> None:
        """Upload each new checkpoint file to the artifact folder named after the file (its stem), with a
        ``metadata.yaml`` and an ``aliases.txt`` beside it."""
        for mtime, path, score, _ in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = _checkpoint_metadata(
                checkpoint_callback, path, score, "Checkpoint", extra_keys=("_every_n_val_epochs",)
            )
            aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
            artifact_path = os.path.splitext(os.path.basename(path))[0]
            self.experiment.log_artifact(self._run_id, path, artifact_path)
            with tempfile.TemporaryDirectory() as tmp_dir:
                with open(os.path.join(tmp_dir, "metadata.yaml"), "w") as f:
                    yaml.dump(metadata, f, default_flow_style=False)
                with open(os.path.join(tmp_dir, "aliases.txt"), "w") as f:
                    f.write(str(aliases))
                self.experiment.log_artifacts(self._run_id, tmp_dir, artifact_path)
            self._logged_model_time[path] = mtime


def _resolve_tags() -> Callable[[Optional[dict[str, Any]]], dict[str, Any]]:
    """MLflow's ``resolve_tags`` (its location changed across versions), or the identity when absent."""
    from mlflow.tracking import context

    if hasattr(context, "resolve_tags"):
        return context.resolve_tags
    if hasattr(context, "registry"):
        from mlflow.tracking.context.registry import resolve_tags

        return resolve_tags
    return lambda tags: tags or {}
