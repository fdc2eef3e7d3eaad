"""``WandbLogger``: log to Weights & Biases with Lightning's arguments, step metric and checkpoint artifacts.

Metrics logged with a step carry ``trainer/global_step``, which the run defines as every metric's step axis.
``offline=True`` (or ``WANDB_MODE=offline``) writes the run under ``save_dir/wandb`` for a later ``wandb sync``.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from torch import nn

from trainer.exceptions import MisconfigurationException
from trainer.loggers.logger import Logger
from trainer.loggers.utilities import (
    _add_prefix,
    _checkpoint_metadata,
    _convert_json_serializable,
    _convert_params,
    _sanitize_callable_params,
    _scan_checkpoints,
    rank_zero_experiment,
    rank_zero_only,
)

if TYPE_CHECKING:  # pragma: no cover
    from wandb import Artifact
    from wandb.wandb_run import Run

    from trainer.callbacks.model_checkpoint import ModelCheckpoint

_WANDB_AVAILABLE = importlib.util.find_spec("wandb") is not None
_MISSING_WANDB = (
    "`WandbLogger` needs the `wandb` package, which is not installed."
    " HINT: Try running `pip install wandb` (or `pip install 'trainer[loggers]'`)."
)
_STEP_METRIC = "trainer/global_step"


def _require_wandb() -> None:
    if not _WANDB_AVAILABLE:
        raise ModuleNotFoundError(_MISSING_WANDB)


def _check_media_list(kind: str, items: Any, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-item keyword arguments for ``log_image``/``log_audio``/``log_video`` (each kwarg is a list as long as
    ``items``)."""
    if not isinstance(items, list):
        raise TypeError(f'Expected a list as "{kind}", found {type(items)}')
    n = len(items)
    for key, values in kwargs.items():
        if len(values) != n:
            raise ValueError(f"Expected {n} items but only found {len(values)} for {key}")
    return [{key: kwargs[key][i] for key in kwargs} for i in range(n)]


class WandbLogger(Logger):
    r"""Log using `Weights and Biases <https://docs.wandb.ai>`_ (``pip install wandb``).

    Args:
        name: Display name of the run.
        save_dir: Folder where the run's files are written (wandb puts them under ``save_dir/wandb``).
        version: The run id, mainly to resume a previous run.
        offline: Run offline (sync to the server later with ``wandb sync``).
        dir: Same as ``save_dir``.
        id: Same as ``version``.
        anonymous: Enable or explicitly disable anonymous logging.
        project: The project of the run; defaults to ``WANDB_PROJECT``, else ``"lightning_logs"``.
        log_model: Log ``ModelCheckpoint`` files as W&B model artifacts: ``"all"`` as they are written;
            ``True`` at the end of training (as they are written when ``save_top_k == -1``); ``False`` never.
        experiment: An existing W&B run to log to.
        prefix: A string put at the beginning of metric keys (joined with ``"-"``).
        checkpoint_name: Name of the checkpoint artifact (default ``model-<run id>``).
        add_file_policy: ``"mutable"`` copies a checkpoint to a temporary folder before upload.
        \**kwargs: Passed to ``wandb.init`` (``entity``, ``group``, ``tags``, ``mode``, ...).

    Raises:
        ModuleNotFoundError: ``wandb`` is not installed.
        MisconfigurationException: ``log_model`` together with ``offline=True`` (nothing could be uploaded).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        name: Optional[str] = None,
        save_dir: Union[str, os.PathLike] = ".",
        version: Optional[str] = None,
        offline: bool = False,
        dir: Optional[Union[str, os.PathLike]] = None,
        id: Optional[str] = None,
        anonymous: Optional[bool] = None,
        project: Optional[str] = None,
        log_model: Union[Literal["all"], bool] = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: Optional[str] = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        _require_wandb()
        if offline and log_model:
            raise MisconfigurationException(
                f"Providing log_model={log_model} and offline={offline} is an invalid configuration"
                " since model checkpoints cannot be uploaded in offline mode.\n"
                "Hint: Set `offline=False` to log your model."
            )
        if add_file_policy not in ("mutable", "immutable"):
            raise ValueError(f"`add_file_policy` must be 'mutable' or 'immutable', got {add_file_policy!r}.")
        super().__init__()
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callbacks: dict[int, "ModelCheckpoint"] = {}
        self.add_file_policy = add_file_policy

        # `save_dir` wins over `dir`, and `version` over `id` (Lightning's precedence)
        folder = (None if save_dir is None else os.fspath(save_dir)) or (None if dir is None else os.fspath(dir))
        self._wandb_init: dict[str, Any] = {
            "name": name,
            "project": project or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": folder,
            "id": version or id,
            "resume": "allow",
            "anonymous": "allow" if anonymous else None,
        }
        self._wandb_init.update(**kwargs)
        self._project = self._wandb_init.get("project")
        self._save_dir = self._wandb_init.get("dir")
        self._name = self._wandb_init.get("name")
        self._id = self._wandb_init.get("id")
        self._checkpoint_name = checkpoint_name

    def __getstate__(self) -> dict[str, Any]:
        # A run cannot be pickled: keep what is needed to attach to it again in another process.
        _ = self.experiment
        state = self.__dict__.copy()
        if self._experiment is not None:
            state["_id"] = getattr(self._experiment, "id", None)
            state["_attach_id"] = getattr(self._experiment, "_attach_id", None)
            state["_name"] = getattr(self._experiment, "name", None)
        state["_experiment"] = None
        return state

    @property
    @rank_zero_experiment
    def experiment(self) -> "Run":  # type: ignore[override]
        """The W&B run, started on first use (an active ``wandb.run`` is reused, with a warning)."""
        if self._experiment is None:
            self._experiment = self._start_run()
        return self._experiment

    def _start_run(self) -> "Run":
        import wandb

        if self._offline:
            os.environ["WANDB_MODE"] = "dryrun"
        attach_id = getattr(self, "_attach_id", None)
        if wandb.run is not None:
            warnings.warn(
                "There is a wandb run already in progress and newly created instances of `WandbLogger` will reuse"
                " this run. If this is not desired, call `wandb.finish()` before instantiating `WandbLogger`."
            )
            return wandb.run
        if attach_id is not None and hasattr(wandb, "_attach"):
            return wandb._attach(attach_id)
        run = wandb.init(**self._wandb_init)
        if getattr(run, "define_metric", None) is not None:
            if self._wandb_init.get("sync_tensorboard"):
                run.define_metric("*", step_metric="global_step")
            else:
                # every metric is plotted against the Trainer's step, whatever wandb's own step counter says
                run.define_metric(_STEP_METRIC)
                run.define_metric("*", step_metric=_STEP_METRIC, step_sync=True)
        return run

    def watch(
        self, model: nn.Module, log: Optional[str] = "gradients", log_freq: int = 100, log_graph: bool = True
    ) -> None:
        """Track the model's gradients / parameters (``wandb.watch``)."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    @rank_zero_only
    def log_hyperparams(self, params: Union[dict[str, Any], Namespace]) -> None:  # type: ignore[override]
        params = _convert_json_serializable(_sanitize_callable_params(_convert_params(params)))
        self.experiment.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is not None and not self._wandb_init.get("sync_tensorboard"):
            self.experiment.log(dict(metrics, **{_STEP_METRIC: step}))
        else:
            self.experiment.log(dict(metrics))

    @rank_zero_only
    def log_table(
        self,
        key: str,
        columns: Optional[list[str]] = None,
        data: Optional[list[list[Any]]] = None,
        dataframe: Any = None,
        step: Optional[int] = None,
    ) -> None:
        """Log a ``wandb.Table`` given ``columns`` and ``data``, or a ``dataframe``."""
        import wandb

        self.log_metrics({key: wandb.Table(columns=columns, data=data, dataframe=dataframe)}, step)

    @rank_zero_only
    def log_text(
        self,
        key: str,
        columns: Optional[list[str]] = None,
        data: Optional[list[list[str]]] = None,
        dataframe: Any = None,
        step: Optional[int] = None,
    ) -> None:
        """Log text as a table."""
        self.log_table(key, columns, data, dataframe, step)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log images (tensors, arrays, PIL images or paths); each kwarg is a per-image list (e.g. ``caption``)."""
        import wandb

        per_item = _check_media_list("images", images, kwargs)
        self.log_metrics({key: [wandb.Image(img, **kw) for img, kw in zip(images, per_item)]}, step)

    @rank_zero_only
    def log_audio(self, key: str, audios: list[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log audio (arrays or paths); each kwarg is a per-item list (e.g. ``sample_rate``)."""
        import wandb

        per_item = _check_media_list("audios", audios, kwargs)
        self.log_metrics({key: [wandb.Audio(a, **kw) for a, kw in zip(audios, per_item)]}, step)

    @rank_zero_only
    def log_video(self, key: str, videos: list[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log videos (arrays or paths); each kwarg is a per-item list (e.g. ``fps``)."""
        import wandb

        per_item = _check_media_list("videos", videos, kwargs)
        self.log_metrics({key: [wandb.Video(v, **kw) for v, kw in zip(videos, per_item)]}, step)

    @property
    def save_dir(self) -> Optional[str]:
        return self._save_dir

    @property
    def name(self) -> Optional[str]:
        """The project name (not the run's display name: that is ``experiment.name``)."""
        return self._project

    @property
    def version(self) -> Optional[str]:
        """The run id once the run exists, else the id given to the constructor."""
        return self._experiment.id if self._experiment else self._id

    def after_save_checkpoint(self, checkpoint_callback: "ModelCheckpoint") -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._scan_and_log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback  # logged at `finalize`

    @staticmethod
    @rank_zero_only
    def download_artifact(
        artifact: str,
        save_dir: Optional[Union[str, os.PathLike]] = None,
        artifact_type: Optional[str] = None,
        use_artifact: Optional[bool] = True,
    ) -> str:
        """Download ``artifact`` (through the active run when there is one); returns the local folder."""
        _require_wandb()
        import wandb

        if wandb.run is not None and use_artifact:
            found = wandb.run.use_artifact(artifact)
        else:
            found = wandb.Api().artifact(artifact, type=artifact_type)
        return found.download(root=None if save_dir is None else os.fspath(save_dir))

    def use_artifact(self, artifact: str, artifact_type: Optional[str] = None) -> "Artifact":
        """Record that this run uses ``artifact``; returns it."""
        return self.experiment.use_artifact(artifact, type=artifact_type)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # Lightning leaves the run open (wandb finishes it at exit); only pending checkpoints are logged.
        if status != "success" or self._experiment is None:
            return
        for checkpoint_callback in self._checkpoint_callbacks.values():
            self._scan_and_log_checkpoints(checkpoint_callback)

    def _scan_and_log_checkpoints(self, checkpoint_callback: "ModelCheckpoint") -> None:
        """Log each new checkpoint file as a version of the ``model`` artifact, aliased ``latest`` (and ``best``)."""
        import wandb

        for mtime, path, score, _ in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            # `__class__` (not `type()`): the callback may come as a weakref proxy
            metadata = _checkpoint_metadata(checkpoint_callback, path, score, checkpoint_callback.__class__.__name__)
            if not self._checkpoint_name:
                self._checkpoint_name = f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
            self.experiment.log_artifact(artifact, aliases=aliases)
            self._logged_model_time[path] = mtime
