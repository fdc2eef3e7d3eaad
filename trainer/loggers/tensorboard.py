"""``TensorBoardLogger``: real TensorBoard event files via ``torch.utils.tensorboard``, Lightning's layout.

Event files go to ``save_dir/name/version_N[/sub_dir]``; ``hparams.yaml`` is written there at ``save()`` when it
does not exist yet (Lightning's rule), and hyperparameters also go to TensorBoard's HPARAMS tab with the
placeholder metric ``hp_metric = -1`` unless ``default_hp_metric=False``.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

from torch import Tensor
from torch.nn import Module

from trainer.loggers.logger import Logger
from trainer.loggers.utilities import (
    _add_prefix,
    _convert_params,
    _flatten_dict,
    _next_version,
    _sanitize_params,
    rank_zero_experiment,
    rank_zero_only,
    save_hparams_to_yaml,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

_TENSORBOARD_AVAILABLE = importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(Logger):
    r"""Log to the local file system in TensorBoard format.

    Args:
        save_dir: Save directory.
        name: Experiment name; ``""``/``None`` means no per-experiment subfolder.
        version: Experiment version; ``None`` picks the next free ``version_N``; a string is used as the folder name.
        log_graph: Add the model graph (needs ``model.example_input_array``).
        default_hp_metric: Log the placeholder ``hp_metric = -1`` with the hyperparameters.
        prefix: A string put at the beginning of metric keys (joined with ``"-"``).
        sub_dir: Extra subfolder of the version folder for the event files.
        \**kwargs: Passed to ``SummaryWriter`` (e.g. ``max_queue``, ``flush_secs``).
    """

    NAME_HPARAMS_FILE = "hparams.yaml"
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike],
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: Optional[Union[str, os.PathLike]] = None,
        **kwargs: Any,
    ) -> None:
        if not _TENSORBOARD_AVAILABLE:
            raise ModuleNotFoundError(
                "`tensorboard` is not available, `TensorBoardLogger` needs it. Try `pip install tensorboard`"
                " or use `CSVLogger`."
            )
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._kwargs = kwargs
        self._experiment: Optional["SummaryWriter"] = None
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> Union[int, str]:
        if self._version is None:
            self._version = _next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self.save_dir, self.name)

    @property
    def sub_dir(self) -> Optional[str]:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        log_dir = os.path.join(self.root_dir, version)
        if isinstance(self.sub_dir, str):
            log_dir = os.path.join(log_dir, self.sub_dir)
        return os.path.expanduser(os.path.expandvars(log_dir))

    @property
    @rank_zero_experiment
    def experiment(self) -> "SummaryWriter":  # type: ignore[override]
        """The ``SummaryWriter``, created (with its folder) on first use."""
        if self._experiment is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.root_dir:
                os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        for key, value in metrics.items():
            if isinstance(value, Tensor):
                value = value.item()
            if isinstance(value, dict):
                self.experiment.add_scalars(key, value, step)
                continue
            try:
                self.experiment.add_scalar(key, value, step)
            except Exception as ex:
                raise ValueError(
                    f"\n you tried to log {value} which is currently not supported. Try a dict or a scalar/tensor."
                ) from ex

    @rank_zero_only
    def log_hyperparams(  # type: ignore[override]
        self,
        params: Union[dict[str, Any], Namespace],
        metrics: Optional[Union[dict[str, Any], float]] = None,
        step: Optional[int] = None,
    ) -> None:
        params = _convert_params(params)
        # The YAML keeps the nested structure; TensorBoard needs flat primitive values.
        self.hparams.update(params)
        flat = _sanitize_params(_flatten_dict(params))

        if metrics is None:
            if self._default_hp_metric:
                metrics = {"hp_metric": -1}
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}

        if metrics:
            self.log_metrics(metrics, step)
            from torch.utils.tensorboard.summary import hparams

            exp, ssi, sei = hparams(flat, metrics)
            writer = self.experiment._get_file_writer()
            writer.add_summary(exp, step)
            writer.add_summary(ssi, step)
            writer.add_summary(sei, step)

    @rank_zero_only
    def log_graph(self, model: Module, input_array: Optional[Any] = None) -> None:
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array` attribute"
                " is not set or `input_array` was not given."
            )
            return
        if not isinstance(input_array, (Tensor, tuple)):
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `input_array` or `model.example_input_array`"
                f" has type {type(input_array)} which can't be traced by TensorBoard. Make the input array a tuple"
                " representing the positional arguments to the model's `forward()` implementation."
            )
            return
        # Run the module's batch-transfer hooks when it has them (a LightningModule), so the input is on its device.
        before = getattr(model, "_on_before_batch_transfer", None)
        apply = getattr(model, "_apply_batch_transfer_handler", None)
        if callable(before) and callable(apply):
            input_array = apply(before(input_array))
        self.experiment.add_graph(model, input_array)

    @rank_zero_only
    def save(self) -> None:
        self.experiment.flush()
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if os.path.isdir(self.log_dir) and not os.path.isfile(hparams_file):
            save_hparams_to_yaml(hparams_file, self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
            self.experiment.close()
        if status == "success":
            self.save()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None  # a SummaryWriter holds threads and open files
        return state
