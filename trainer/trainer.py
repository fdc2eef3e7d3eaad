"""The Trainer: Lightning 2.x's constructor, ``fit/validate/test/predict`` and run order.

Every constructor argument is checked here, at construction, and a bad one raises
``MisconfigurationException`` naming the argument, the value and what is allowed. Where Lightning
2.6.6 rejects the same input, the exception class and message are Lightning's (a ``TypeError`` for a
non-number ``gradient_clip_val``, a ``ValueError`` for a feature combined with ``barebones=True``),
with our details after Lightning's words (:mod:`trainer.arguments`).

Run order (``_run``), each step's constraint noted where it matters:
  connect module -> configure_callbacks (callbacks must be final before any hook runs) ->
  prepare_data -> setup hooks -> configure_model -> restore module/callbacks from ckpt ->
  strategy.setup (device move, precision cast, configure_optimizers: optimizers need the moved
  parameters) -> on_fit_start -> log hparams -> restore optimizer/loop state -> stage ->
  teardown -> on_fit_end -> teardown hooks.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Dict, Generator, Iterable, List, Optional, Union

import torch

from trainer.accelerators import Accelerator, DeviceSpec, build_accelerator, resolve_accelerator, resolve_devices
from trainer.arguments import _BAREBONES_INFO, TrainerArguments, _bad
from trainer.callbacks.callback import Callback, Checkpoint
from trainer.checkpoint import CheckpointConnector, dump_checkpoint
from trainer.datamodule import LightningDataModule
from trainer.exceptions import MisconfigurationException, _TunerExitException
from trainer.hooks import HookDispatcher, is_overridden, lightning_is_overridden
from trainer.logger_connector import LoggerConnector
from trainer.loggers.logger import Logger
from trainer.loops.evaluation import EvaluationLoop, PredictionLoop
from trainer.loops.fit import FitLoop
from trainer.module import LightningModule
from trainer.precision import Precision
from trainer.profiler import Profiler, resolve_profiler
from trainer.seed import isolate_rng
from trainer.signals import SignalConnector
from trainer.strategies import resolve_strategy
from trainer.strategies.strategy import Strategy
from trainer.utilities import move_data_to_device
from trainer.utilities.rank_zero import rank_zero_info, rank_zero_warn
from trainer.utilities.warnings import PossibleUserWarning

log = logging.getLogger(__name__)



class TrainerFn(str, Enum):
    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):
    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> Optional[str]:
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return self.value


class TrainerStatus(str, Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


@dataclass
class TrainerState:
    """The Trainer's status, function and stage; a dataclass as in Lightning, so two states with the same
    values compare equal (and repr shows them)."""

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: Optional[TrainerFn] = None
    stage: Optional[RunningStage] = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status.stopped


def _stage_flag(stage: RunningStage) -> property:
    def get(self: "Trainer") -> bool:
        return self.state.stage == stage

    def set_(self: "Trainer", value: bool) -> None:
        if value:
            self.state.stage = stage
        elif self.state.stage == stage:
            self.state.stage = None

    return property(get, set_, doc=f"Whether the Trainer is in the {stage.value!r} stage.")


def _log_device_info(accelerator: str) -> None:
    """Lightning's lines about the devices found and used, and its warning for an idle GPU."""
    cuda = torch.cuda.is_available()
    mps = not cuda and torch.backends.mps.is_available()
    gpu_type = " (cuda)" if cuda else " (mps)" if mps else ""
    rank_zero_info(f"GPU available: {cuda or mps}{gpu_type}, used: {accelerator in ('cuda', 'mps')}")
    rank_zero_info("TPU available: False, using: 0 TPU cores")  # no XLA accelerator in this Trainer
    if (cuda and accelerator != "cuda") or (mps and accelerator != "mps"):
        rank_zero_warn("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
                       category=PossibleUserWarning)


class Trainer:
    """Lightning 2.x's Trainer: same arguments, hooks, metrics and results.

    One argument Lightning does not have, ``compile``: the compiled engine (the automatic-
    optimization step captured as one graph and compiled with inductor; see
    :mod:`trainer.compile`) is ON by default. ``compile=False`` runs the eager engine,
    ``"strict"`` raises where the default falls back to eager with one ``CompileWarning``, a
    :class:`trainer.compile.CompileConfig` sets the details. Left out (``None``), it is read from
    the environment variable ``TRAINER_COMPILE`` (``0``, ``1`` or ``strict``; unset means ``1``).
    ``trainer.compile_report`` says what ran after ``fit``.
    """

    def __init__(
        self,
        *,
        accelerator: Union[str, Accelerator] = "auto",
        strategy: Union[str, Strategy] = "auto",
        devices: Union[List[int], str, int] = "auto",
        num_nodes: int = 1,
        precision: Optional[Union[int, str]] = None,
        logger: Optional[Union[Logger, Iterable[Logger], bool]] = None,
        callbacks: Optional[Union[List[Callback], Callback]] = None,
        fast_dev_run: Union[int, bool] = False,
        max_epochs: Optional[int] = None,
        min_epochs: Optional[int] = None,
        max_steps: int = -1,
        min_steps: Optional[int] = None,
        max_time: Optional[Union[str, timedelta, Dict[str, int]]] = None,
        limit_train_batches: Optional[Union[int, float]] = None,
        limit_val_batches: Optional[Union[int, float]] = None,
        limit_test_batches: Optional[Union[int, float]] = None,
        limit_predict_batches: Optional[Union[int, float]] = None,
        overfit_batches: Union[int, float] = 0.0,
        val_check_interval: Optional[Union[int, float, str, timedelta, Dict[str, int]]] = None,
        check_val_every_n_epoch: Optional[int] = 1,
        num_sanity_val_steps: Optional[int] = None,
        log_every_n_steps: Optional[int] = None,
        enable_checkpointing: Optional[bool] = None,
        enable_progress_bar: Optional[bool] = None,
        enable_model_summary: Optional[bool] = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[Union[int, float]] = None,
        gradient_clip_algorithm: Optional[str] = None,
        deterministic: Optional[Union[bool, str]] = None,
        benchmark: Optional[bool] = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Optional[Union[Profiler, str]] = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Optional[Any] = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: Optional[Union[str, os.PathLike]] = None,
        enable_autolog_hparams: bool = True,
        model_registry: Optional[str] = None,
        compile: Optional[Union[bool, str, Any]] = None,
    ) -> None:
        # every argument checked and normalised before anything happens (the parameters are this frame's locals)
        args = TrainerArguments.check(**{name: value for name, value in locals().items() if name != "self"})
        self._max_time = args.max_time
        self._compile_config = args.compile_config
        self._set_up_hardware(args)
        if args.barebones:
            rank_zero_info(_BAREBONES_INFO)
        self.barebones = args.barebones
        self._set_up_state(args)
        self.loggers = self._configure_loggers(args.logger)
        self.callbacks = self._configure_callbacks(args.callbacks)  # Lightning's defaults and order
        _log_device_info(self._accelerator)
        self._set_up_debugging_flags(args)

    def _set_up_hardware(self, args: TrainerArguments) -> None:
        """Accelerator, devices, strategy (``resolve_strategy`` checks every combination), precision and
        the plugins passed."""
        precision_flag = args.precision_flag
        acc = resolve_accelerator(args.accelerator)
        self._device_spec: DeviceSpec = resolve_devices(args.devices, acc)
        self.strategy: Strategy = resolve_strategy(args.strategy, acc, self._device_spec, args.num_nodes)
        plugins = args.plugin_flags
        if precision_flag == "16-mixed" and acc == "cpu" and plugins.precision is None:
            warnings.warn(
                "You passed `Trainer(accelerator='cpu', precision='16-mixed')` but AMP with fp16 is not supported on"
                " CPU. Using `precision='bf16-mixed'` instead."
            )
            precision_flag = "bf16-mixed"
        if args.compile_config.enabled and args.compile_config.cudagraphs and acc != "cuda":
            raise MisconfigurationException(
                f"`Trainer(compile=CompileConfig(cudagraphs=True), accelerator={args.accelerator!r})`: CUDA graphs"
                f" record GPU work only, and the accelerator resolved to {acc!r}. Use accelerator='cuda' or"
                " cudagraphs=False.")
        self._accelerator = acc
        self._accelerator_obj = build_accelerator(acc)
        root_device = self._device_spec.root_device()
        self.strategy._root_device = root_device
        self.strategy.precision_plugin = (plugins.precision
                                          or self.strategy.default_precision_plugin(precision_flag, root_device.type))
        if plugins.checkpoint_io is not None:
            self.strategy.checkpoint_io = plugins.checkpoint_io
        if plugins.cluster_environment is not None and hasattr(self.strategy, "cluster_environment"):
            self.strategy.cluster_environment = plugins.cluster_environment
        if hasattr(self.strategy, "layer_sync"):  # the parallel strategies (Lightning's ``_layer_sync``)
            self.strategy.layer_sync = plugins.layer_sync
        self.strategy.precision_plugin.trainer = self
        self.strategy.trainer = self

    def _set_up_state(self, args: TrainerArguments) -> None:
        """The run state, the flags the loops and callbacks read, and the loops and connectors."""
        self.state = TrainerState()
        self.should_stop = False
        self._signal_connector = SignalConnector(self)
        self._default_root_dir = os.fspath(args.default_root_dir) if args.default_root_dir is not None else None
        self.accumulate_grad_batches = args.accumulate_grad_batches
        self.gradient_clip_val = args.gradient_clip_val
        self.gradient_clip_algorithm = args.gradient_clip_algorithm
        self.check_val_every_n_epoch = args.check_val_every_n_epoch
        self.reload_dataloaders_every_n_epochs = args.reload_dataloaders_every_n_epochs
        self.inference_mode = args.inference_mode
        self.use_distributed_sampler = args.use_distributed_sampler
        self._detect_anomaly = args.detect_anomaly
        self.sync_batchnorm = args.sync_batchnorm
        self.num_nodes = args.num_nodes
        self.enable_autolog_hparams = args.enable_autolog_hparams
        self.log_every_n_steps = 50 if args.log_every_n_steps is None else args.log_every_n_steps
        self.enable_progress_bar = True if args.enable_progress_bar is None else args.enable_progress_bar
        self.enable_model_summary = True if args.enable_model_summary is None else args.enable_model_summary
        self.enable_checkpointing = True if args.enable_checkpointing is None else args.enable_checkpointing
        self._set_determinism(args.deterministic, args.benchmark)
        self.profiler: Profiler = resolve_profiler(args.profiler)

        self.fit_loop = FitLoop(self, min_epochs=args.min_epochs, max_epochs=args.max_epochs)
        self.fit_loop.epoch_loop.min_steps = args.min_steps
        self.fit_loop.epoch_loop.max_steps = args.max_steps
        inference_mode = args.inference_mode
        self.validate_loop = EvaluationLoop(self, "validate", "validate", verbose=True, inference_mode=inference_mode)
        self.test_loop = EvaluationLoop(self, "test", "test", verbose=True, inference_mode=inference_mode)
        self.predict_loop = PredictionLoop(self, inference_mode=inference_mode)
        self._logger_connector = LoggerConnector(self)
        self._checkpoint_connector = CheckpointConnector(self)
        self._hooks = HookDispatcher(self)
        self.datamodule: Optional[LightningDataModule] = None
        self._data_sources: Dict[str, Any] = {}
        self._warned: set = set()
        self._batch_hooks_overridden = True
        self._enable_validation: Optional[bool] = None
        self._clipping_overridden = True
        self.ckpt_path: Optional[str] = None
        self.val_check_batch: Optional[Union[int, float]] = None
        # a time-based val_check_interval: seconds of training between validations (fit.py, Lightning's attribute)
        self._val_check_time_interval: Optional[float] = args.val_check_seconds
        self._eval_engine: Any = None  # trainer.compile.eval.EvalEngine, made at the first compiled eval step

    def _set_up_debugging_flags(self, args: TrainerArguments) -> None:
        """Batch limits, validation interval, sanity steps, then what ``fast_dev_run`` and
        ``overfit_batches`` override (Lightning's ``_init_debugging_flags``)."""
        limits, overfit = args.limits, args.overfit
        self.limit_train_batches = limits["limit_train_batches"]
        self.limit_val_batches = limits["limit_val_batches"]
        self.limit_test_batches = limits["limit_test_batches"]
        self.limit_predict_batches = limits["limit_predict_batches"]
        self.overfit_batches = overfit
        self.val_check_interval: Union[int, float] = 1.0 if args.val_check_interval is None else args.val_check_interval
        sanity = args.num_sanity_val_steps
        self.num_sanity_val_steps: Union[int, float] = 2 if sanity is None else (float("inf") if sanity == -1 else sanity)
        args.announce_batch_flags()
        fast_dev_run = args.fast_dev_run
        self.fast_dev_run: Union[int, bool] = True if fast_dev_run == 1 and not isinstance(fast_dev_run, bool) else fast_dev_run
        if fast_dev_run:
            self._set_up_fast_dev_run(int(fast_dev_run), overfit)
        if overfit > 0:
            self.limit_train_batches = overfit
            self.limit_val_batches = overfit

    def _set_up_fast_dev_run(self, n: int, overfit: Union[int, float]) -> None:
        if overfit <= 0:
            self.limit_train_batches = n
            self.limit_val_batches = n
        self.limit_test_batches = n
        self.limit_predict_batches = n
        self.fit_loop.epoch_loop.max_steps = n
        self.num_sanity_val_steps = 0
        self.fit_loop.max_epochs = 1
        self.val_check_interval = 1.0
        self._val_check_time_interval = None  # time does not apply to fast_dev_run (Lightning's)
        self.check_val_every_n_epoch = 1
        # Lightning's: a user's logger is swapped for one that accepts every call and writes nothing
        from trainer.loggers import DummyLogger

        self.loggers = [DummyLogger()] if self.loggers else []
        rank_zero_info(f"Running in `fast_dev_run` mode: will run the requested loop using {n} batch(es)."
                       " Logging and checkpointing is suppressed.")

    def __getstate__(self) -> Dict[str, Any]:
        """Copies and pickles leave the compiled evaluation engine behind (dynamo guards and compiled code do not
        copy; it is a cache rebuilt on the next evaluation), so ``copy.deepcopy(trainer.callbacks)`` works as in
        Lightning, whose callbacks reference the trainer too."""
        state = self.__dict__.copy()
        state["_eval_engine"] = None
        return state

    def _compiled_eval_engine(self) -> Any:
        """The engine that runs ``validation_step``/``test_step``/``predict_step`` compiled
        (:mod:`trainer.compile.eval`), made at its first use and kept for this Trainer's later stages."""
        if self._eval_engine is None:
            from trainer.compile.eval import EvalEngine

            self._eval_engine = EvalEngine(self)
        return self._eval_engine

    # ================================================================ set-up helpers
    @staticmethod
    def _set_determinism(deterministic: Optional[Union[bool, str]], benchmark: Optional[bool]) -> None:
        if deterministic:
            if benchmark:
                warnings.warn("You passed `deterministic=True` and `benchmark=True`. Note that PyTorch ignores"
                              " torch.backends.cudnn.deterministic=True when torch.backends.cudnn.benchmark=True.")
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        elif deterministic is False:
            torch.use_deterministic_algorithms(False)
        if benchmark is None:
            benchmark = False if deterministic else torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = benchmark
        if deterministic:
            torch.backends.cudnn.deterministic = True

    def _configure_loggers(self, logger: Any) -> List[Any]:
        if logger is None or logger is True:
            from trainer.loggers import default_logger

            return [default_logger(self.default_root_dir)]
        if logger is False:
            return []
        if isinstance(logger, Iterable) and not isinstance(logger, (str, bytes)):
            return list(logger)
        return [logger]

    def _configure_callbacks(self, callbacks: Optional[Union[List[Callback], Callback]]) -> List[Callback]:
        from trainer.callbacks import ModelCheckpoint, ModelSummary, ProgressBar, Timer, TQDMProgressBar

        if callbacks is None:
            cbs: List[Callback] = []
        elif isinstance(callbacks, Callback):
            cbs = [callbacks]
        else:
            cbs = list(callbacks)
            for cb in cbs:
                if not isinstance(cb, Callback):
                    raise _bad("callbacks", callbacks, f"every callback must be a Callback instance, got {type(cb).__name__}")
        has_ckpt = any(isinstance(cb, Checkpoint) for cb in cbs)
        if self.enable_checkpointing:
            if not has_ckpt:
                cbs.append(ModelCheckpoint())
        elif has_ckpt:
            raise MisconfigurationException(
                "Trainer was configured with `enable_checkpointing=False`"
                " but found `ModelCheckpoint` in callbacks list."
            )
        if self._max_time is not None and not any(isinstance(cb, Timer) for cb in cbs):
            cbs.append(Timer(duration=self._max_time, interval="step"))
        bars = [cb for cb in cbs if isinstance(cb, ProgressBar)]
        if len(bars) > 1:
            raise MisconfigurationException(
                "You added multiple progress bar callbacks to the Trainer, but currently only one"
                " progress bar is supported."
            )
        if bars and not self.enable_progress_bar:
            raise MisconfigurationException(
                f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}`"
                " in callbacks list."
            )
        if not bars and self.enable_progress_bar:
            from trainer.callbacks import RichProgressBar

            cbs.append(RichProgressBar() if _rich_available() else TQDMProgressBar())  # Lightning's rule
        if self.enable_model_summary and not any(isinstance(cb, ModelSummary) for cb in cbs):
            from trainer.callbacks import RichModelSummary

            cbs.append(RichModelSummary() if _rich_available() else ModelSummary())
        return _reorder_callbacks(cbs)

    def _attach_model_callbacks(self) -> None:
        module = self.lightning_module
        model_cbs = self._hooks.call_module("configure_callbacks")
        if not model_cbs:
            return
        model_cbs = [model_cbs] if isinstance(model_cbs, Callback) else list(model_cbs)
        model_types = {type(c) for c in model_cbs}
        kept = [c for c in self.callbacks if type(c) not in model_types]
        overridden = {type(c).__name__ for c in self.callbacks if type(c) in model_types}
        if overridden:
            log.info(
                "The following callbacks returned in `LightningModule.configure_callbacks` will override"
                f" existing callbacks passed to Trainer: {', '.join(sorted(overridden))}"
            )
        self.callbacks = _reorder_callbacks(kept + model_cbs)
        self._hooks.reset()
        del module

    def _attach_model_logging_functions(self) -> None:
        """``self.log``/``self.log_dict`` in a callback hook log through the module, as Lightning attaches them."""
        module = self.lightning_module
        for cb in self.callbacks:
            cb.log = module.log
            cb.log_dict = module.log_dict

    @contextlib.contextmanager
    def init_module(self, empty_init: Optional[bool] = None) -> Generator[None, None, None]:
        """Lightning's: modules built inside are created on the strategy's root device, in the precision's dtype
        for the "-true" precisions (float64, float16, bfloat16), and with ``empty_init=True`` without running
        their initialisation (the weights come from a checkpoint next)."""
        from trainer._empty_init import EmptyInit

        with EmptyInit(enabled=bool(empty_init)), self.strategy.root_device, \
                self.strategy.precision_plugin.tensor_init_context():
            yield

    # ================================================================ public properties
    @property
    def compile_report(self) -> Any:
        """What the compiled engine did: the last ``fit``'s training step, and (``.eval``) the compiled
        validation/test/predict steps of this Trainer (a ``trainer.compile.report.CompileReport``;
        None when nothing ran with compile on)."""
        report = self.fit_loop.epoch_loop.automatic_optimization.compile_report
        engine = self._eval_engine
        if report is None:
            if engine is None:
                return None
            from trainer.compile.report import CompileReport

            report = CompileReport(enabled=True)
        report._eval_engine = engine
        return report

    @property
    def default_root_dir(self) -> str:
        """As Lightning: the working directory when not given; a local path normalised with ``~`` expanded; a URL
        (``s3://...``, ``memory://...``) as given."""
        from trainer.cloud_io import is_local_path

        path = self._default_root_dir
        if path is None:
            return os.getcwd()
        return os.path.normpath(os.path.expanduser(path)) if is_local_path(path) else path

    @property
    def callbacks(self) -> List[Callback]:
        return self._callbacks

    @callbacks.setter
    def callbacks(self, callbacks: List[Callback]) -> None:
        """A new list (Lightning's tuner swaps it mid-fit) takes effect at the next hook: the dispatcher's
        per-hook cache of overriding callbacks is read again."""
        self._callbacks = callbacks
        hooks = self.__dict__.get("_hooks")
        if hooks is not None:
            hooks.reset()

    @property
    def lightning_module(self) -> Optional[LightningModule]:
        return self.strategy.lightning_module

    @property
    def model(self) -> Optional[torch.nn.Module]:
        return self.strategy.model

    @property
    def optimizers(self) -> List[torch.optim.Optimizer]:
        return self.strategy.optimizers

    @optimizers.setter
    def optimizers(self, new: List[torch.optim.Optimizer]) -> None:
        from trainer.core.optimizer import LightningOptimizer

        self.strategy.optimizers = new
        self.strategy._lightning_optimizers = [LightningOptimizer(o, self.strategy) for o in new]

    @property
    def lr_scheduler_configs(self) -> List[Any]:
        return self.strategy.lr_scheduler_configs

    @property
    def precision_plugin(self) -> Precision:
        return self.strategy.precision_plugin

    @property
    def precision(self) -> str:
        return self.strategy.precision_plugin.precision

    @property
    def accelerator(self) -> Accelerator:
        return self._accelerator_obj

    @property
    def device_ids(self) -> List[int]:
        return self._device_spec.device_ids

    @property
    def num_devices(self) -> int:
        return self._device_spec.num_devices

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def logger(self) -> Optional[Any]:
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Optional[Any]) -> None:
        self.loggers = [logger] if logger else []  # Lightning's rule: any falsy value clears the loggers

    @property
    def loggers(self) -> List[Any]:
        return self._loggers

    @loggers.setter
    def loggers(self, loggers: Optional[List[Any]]) -> None:
        self._loggers = loggers if loggers else []  # as Lightning: the list itself, not a copy

    @property
    def log_dir(self) -> Optional[str]:
        """Lightning's rule: the first logger's ``log_dir`` for the TensorBoard and CSV loggers, its ``save_dir``
        for any other (None for the ``fast_dev_run`` dummy logger), ``default_root_dir`` without a logger."""
        from trainer.loggers import CSVLogger, TensorBoardLogger

        logger = self.logger
        if logger is None:
            return self.default_root_dir
        if isinstance(logger, (TensorBoardLogger, CSVLogger)):
            return logger.log_dir
        return getattr(logger, "save_dir", None)

    @property
    def current_epoch(self) -> int:
        return self.fit_loop.epoch_progress.current.completed

    @property
    def global_step(self) -> int:
        return self.fit_loop.epoch_loop.global_step

    @property
    def max_epochs(self) -> Optional[int]:
        return self.fit_loop.max_epochs

    @property
    def min_epochs(self) -> Optional[int]:
        return self.fit_loop.min_epochs

    @property
    def max_steps(self) -> int:
        return self.fit_loop.max_steps

    @property
    def min_steps(self) -> Optional[int]:
        return self.fit_loop.min_steps

    @property
    def is_last_batch(self) -> bool:
        return self.fit_loop.epoch_loop.batch_progress.is_last_batch

    @property
    def num_training_batches(self) -> Union[int, float]:
        return self.fit_loop.max_batches

    @property
    def num_sanity_val_batches(self) -> List[Union[int, float]]:
        loop = self.fit_loop.epoch_loop.val_loop
        return [min(self.num_sanity_val_steps, b) for b in loop._max_batches]

    @property
    def num_val_batches(self) -> List[Union[int, float]]:
        if self.state.fn == TrainerFn.VALIDATING:
            return self.validate_loop._max_batches
        return self.fit_loop.epoch_loop.val_loop._max_batches

    @property
    def num_test_batches(self) -> List[Union[int, float]]:
        return self.test_loop._max_batches

    @property
    def num_predict_batches(self) -> List[Union[int, float]]:
        return self.predict_loop._max_batches

    @property
    def enable_validation(self) -> bool:
        cached = self._enable_validation
        if cached is None:
            from trainer.loops.data import has_source

            module = self.lightning_module
            cached = (
                module is not None
                and has_source(self, "val_dataloader")
                and is_overridden("validation_step", module)
                and self.limit_val_batches > 0
            )
            if self.state.status == TrainerStatus.RUNNING:  # fixed for the rest of this run
                self._enable_validation = cached
        return cached

    @property
    def estimated_stepping_batches(self) -> Union[int, float]:
        if self.state.fn != TrainerFn.FITTING or self.lightning_module is None:
            raise MisconfigurationException("`estimated_stepping_batches` is only available during `trainer.fit`.")
        if self.max_steps != -1:
            return self.max_steps
        self.fit_loop.setup_data()
        total = self.num_training_batches
        if total == float("inf") or self.max_epochs == -1:
            return float("inf")
        per_epoch = math.ceil(total / self.accumulate_grad_batches)
        return per_epoch * max(self.max_epochs or 1, 1)

    # running stage flags (Lightning's: setting one True selects that stage; setting it False clears it)
    training = _stage_flag(RunningStage.TRAINING)
    validating = _stage_flag(RunningStage.VALIDATING)
    testing = _stage_flag(RunningStage.TESTING)
    predicting = _stage_flag(RunningStage.PREDICTING)
    sanity_checking = _stage_flag(RunningStage.SANITY_CHECKING)

    @property
    def evaluating(self) -> bool:
        return self.state.stage in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def _evaluation_loop(self) -> EvaluationLoop:
        fn = self.state.fn
        if fn == TrainerFn.FITTING:
            return self.fit_loop.epoch_loop.val_loop
        if fn == TrainerFn.VALIDATING:
            return self.validate_loop
        if fn == TrainerFn.TESTING:
            return self.test_loop
        raise RuntimeError("The `Trainer._evaluation_loop` property isn't defined. Accessed outside of scope")

    @property
    def _active_loop(self) -> Optional[Any]:
        if self.training:
            return self.fit_loop
        if self.sanity_checking or (self.state.fn == TrainerFn.FITTING and self.validating):
            return self.fit_loop.epoch_loop.val_loop
        if self.validating:
            return self.validate_loop
        if self.testing:
            return self.test_loop
        if self.predicting:
            return self.predict_loop
        return None

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    # metrics
    @property
    def _results(self) -> Optional[Any]:
        stage = self.state.stage
        if stage == RunningStage.TRAINING:
            return self.fit_loop.epoch_loop._results
        if stage in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            if self.state.fn == TrainerFn.FITTING:
                return self.fit_loop.epoch_loop.val_loop._results
            return self.validate_loop._results
        if stage == RunningStage.TESTING:
            return self.test_loop._results
        return None

    @property
    def callback_metrics(self) -> Dict[str, Any]:
        return self._logger_connector.callback_metrics

    @property
    def logged_metrics(self) -> Dict[str, Any]:
        return self._logger_connector.logged_metrics

    @property
    def progress_bar_metrics(self) -> Dict[str, float]:
        return self._logger_connector.progress_bar_metrics

    # callbacks
    @property
    def checkpoint_callbacks(self) -> List[Checkpoint]:
        return [cb for cb in self.callbacks if isinstance(cb, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Optional[Checkpoint]:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callbacks(self) -> List[Callback]:
        from trainer.callbacks import EarlyStopping

        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> Optional[Callback]:
        cbs = self.early_stopping_callbacks
        return cbs[0] if cbs else None

    @property
    def progress_bar_callback(self) -> Optional[Callback]:
        from trainer.callbacks import ProgressBar

        for cb in self.callbacks:
            if isinstance(cb, ProgressBar):
                return cb
        return None

    @property
    def train_dataloader(self) -> Any:
        """The training loader(s) of ``fit``, in the structure they were given (Lightning's ``iterables``)."""
        return _iterables(self.fit_loop._combined_loader)

    @property
    def val_dataloaders(self) -> Any:
        """The validation loader(s) of ``fit``, else of ``validate``."""
        fit_loader = _iterables(self.fit_loop.epoch_loop.val_loop._combined_loader)
        return fit_loader if fit_loader is not None else _iterables(self.validate_loop._combined_loader)

    @property
    def test_dataloaders(self) -> Any:
        return _iterables(self.test_loop._combined_loader)

    @property
    def predict_dataloaders(self) -> Any:
        return _iterables(self.predict_loop._combined_loader)

    # ================================================================ entry points
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Optional[LightningDataModule] = None,
        ckpt_path: Optional[Union[str, os.PathLike]] = None,
        weights_only: Optional[bool] = None,
    ) -> None:
        model = _check_module(model, "fit")
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if (train_dataloaders is not None or val_dataloaders is not None) and datamodule is not None:
            raise MisconfigurationException(
                "You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.fit(datamodule=...)`"
            )
        self.state.fn = TrainerFn.FITTING
        self.state.status = TrainerStatus.RUNNING
        self.training = True
        self.should_stop = False
        self._attach(model, datamodule, train_dataloader=train_dataloaders, val_dataloader=val_dataloaders)
        self._call_and_handle_interrupt(self._fit_impl, model, ckpt_path)

    def _fit_impl(self, model: LightningModule, ckpt_path: Any) -> None:
        path = self._checkpoint_connector.select_ckpt_path(TrainerFn.FITTING.value, ckpt_path, True, False)
        self.ckpt_path = path
        self._run(model, path)
        self.training = False

    def validate(
        self,
        model: Optional[LightningModule] = None,
        dataloaders: Any = None,
        ckpt_path: Optional[Union[str, os.PathLike]] = None,
        verbose: bool = True,
        datamodule: Optional[LightningDataModule] = None,
        weights_only: Optional[bool] = None,
    ) -> List[Dict[str, float]]:
        return self._evaluate(TrainerFn.VALIDATING, model, dataloaders, ckpt_path, verbose, datamodule)

    def test(
        self,
        model: Optional[LightningModule] = None,
        dataloaders: Any = None,
        ckpt_path: Optional[Union[str, os.PathLike]] = None,
        verbose: bool = True,
        datamodule: Optional[LightningDataModule] = None,
        weights_only: Optional[bool] = None,
    ) -> List[Dict[str, float]]:
        return self._evaluate(TrainerFn.TESTING, model, dataloaders, ckpt_path, verbose, datamodule)

    def _evaluate(self, fn: TrainerFn, model: Optional[LightningModule], dataloaders: Any, ckpt_path: Any,
                  verbose: bool, datamodule: Optional[LightningDataModule]) -> List[Dict[str, float]]:
        name = fn.value
        model_provided = model is not None
        if model is None:
            if self.lightning_module is None:
                raise _no_model(name)
            model = self.lightning_module
        model = _check_module(model, name)
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        if dataloaders is not None and datamodule is not None:
            raise MisconfigurationException(f"You cannot pass both `trainer.{name}(dataloaders=..., datamodule=...)`")
        self.state.fn = fn
        self.state.status = TrainerStatus.RUNNING
        stage = RunningStage.VALIDATING if fn == TrainerFn.VALIDATING else RunningStage.TESTING
        self.state.stage = stage
        loop = self.validate_loop if fn == TrainerFn.VALIDATING else self.test_loop
        loop.verbose = verbose
        key = "val_dataloader" if fn == TrainerFn.VALIDATING else "test_dataloader"
        self._attach(model, datamodule, **{key: dataloaders}, keep_sources=not model_provided and dataloaders is None)
        return self._call_and_handle_interrupt(self._evaluate_impl, model, fn, ckpt_path, model_provided, loop)

    def _evaluate_impl(self, model: LightningModule, fn: TrainerFn, ckpt_path: Any, model_provided: bool,
                       loop: EvaluationLoop) -> List[Dict[str, float]]:
        connected = self.lightning_module is not None and not model_provided
        path = self._checkpoint_connector.select_ckpt_path(fn.value, ckpt_path, model_provided, connected)
        self.ckpt_path = path
        results = self._run(model, path)
        self.state.stage = None
        return results or []

    def predict(
        self,
        model: Optional[LightningModule] = None,
        dataloaders: Any = None,
        datamodule: Optional[LightningDataModule] = None,
        return_predictions: Optional[bool] = None,
        ckpt_path: Optional[Union[str, os.PathLike]] = None,
        weights_only: Optional[bool] = None,
    ) -> Optional[List[Any]]:
        model_provided = model is not None
        if model is None:
            if self.lightning_module is None:
                raise _no_model("predict")
            model = self.lightning_module
        model = _check_module(model, "predict")
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        if dataloaders is not None and datamodule is not None:
            raise MisconfigurationException("You cannot pass both `trainer.predict(dataloaders=..., datamodule=...)`")
        self.state.fn = TrainerFn.PREDICTING
        self.state.status = TrainerStatus.RUNNING
        self.predicting = True
        self.predict_loop.return_predictions = True if return_predictions is None else return_predictions
        self._attach(model, datamodule, predict_dataloader=dataloaders,
                     keep_sources=not model_provided and dataloaders is None)
        return self._call_and_handle_interrupt(self._predict_impl, model, ckpt_path, model_provided)

    def _predict_impl(self, model: LightningModule, ckpt_path: Any, model_provided: bool) -> Optional[List[Any]]:
        connected = self.lightning_module is not None and not model_provided
        path = self._checkpoint_connector.select_ckpt_path("predict", ckpt_path, model_provided, connected)
        self.ckpt_path = path
        results = self._run(model, path)
        self.state.stage = None
        return results

    def save_checkpoint(self, filepath: Union[str, os.PathLike], weights_only: bool = False,
                        storage_options: Optional[Any] = None) -> None:
        """Writes the checkpoint atomically: the previous file at ``filepath`` survives any failure."""
        if self.lightning_module is None:
            raise AttributeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call"
                " `Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        if storage_options is not None:
            raise TypeError("`Trainer.save_checkpoint(..., storage_options=...)` is not supported by this Trainer.")
        checkpoint = dump_checkpoint(self, weights_only)
        self.strategy.save_checkpoint(checkpoint, filepath)
        self.strategy.barrier("Trainer.save_checkpoint")

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.is_global_zero:
            print(*args, **kwargs)

    # ================================================================ internals
    def _attach(self, model: LightningModule, datamodule: Optional[LightningDataModule], keep_sources: bool = False,
                **sources: Any) -> None:
        self._enable_validation = None
        # every entry point requests its loaders again (Lightning's order of hooks) and forgets the others'
        for loop in (self.fit_loop, self.fit_loop.epoch_loop.val_loop, self.validate_loop, self.test_loop,
                     self.predict_loop):
            loop._combined_loader = None
        if not keep_sources:
            self._data_sources = {k: v for k, v in sources.items() if v is not None}
            self.datamodule = datamodule
        elif datamodule is not None:
            self.datamodule = datamodule
        if self.datamodule is not None:
            self.datamodule.trainer = self
        model.trainer = self
        self.strategy._lightning_module = model
        self.strategy._model = model

    def _call_and_handle_interrupt(self, fn: Any, *args: Any) -> Any:
        launcher = getattr(self.strategy, "launcher", None)  # distributed: start/join the processes, then run
        if launcher is not None:
            return launcher.launch(self._call_and_handle_interrupt_local, fn, *args, trainer=self)
        return self._call_and_handle_interrupt_local(fn, *args)

    def _call_and_handle_interrupt_local(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _TunerExitException:  # the tuner's search is done: end this call as a finished one (Lightning's)
            self._call_teardown_hook()
            self._teardown()
            self.state.status = TrainerStatus.FINISHED
            self.state.stage = None
            return None
        except KeyboardInterrupt as exc:
            # Lightning's behaviour: graceful shutdown, then exit(1); a second Ctrl+C is ignored meanwhile
            log.info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
            previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
            if previous is not None:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self._interrupt(exc)
                self._teardown()
            finally:
                if previous is not None:
                    signal.signal(signal.SIGINT, previous)
            sys.exit(1)
        except BaseException as exc:
            self._interrupt(exc)
            self._teardown()
            self.state.stage = None
            raise

    def _interrupt(self, exc: BaseException) -> None:
        self.state.status = TrainerStatus.INTERRUPTED
        self._hooks.call_callbacks("on_exception", exc)
        if self.datamodule is not None and hasattr(self.datamodule, "on_exception"):
            self.datamodule.on_exception(exc)
        for logger in self.loggers:
            logger.finalize("failed")

    def _verify(self, model: LightningModule) -> None:
        fn = self.state.fn
        if fn == TrainerFn.FITTING:
            if not is_overridden("training_step", model):
                raise MisconfigurationException(
                    "No `training_step()` method defined. Lightning `Trainer` expects as minimum a"
                    " `training_step()`, `train_dataloader()` and `configure_optimizers()` to be defined."
                )
            if not is_overridden("configure_optimizers", model):
                raise MisconfigurationException(
                    "No `configure_optimizers()` method defined. Lightning `Trainer` expects as minimum a"
                    " `training_step()`, `train_dataloader()` and `configure_optimizers()` to be defined."
                )
            from trainer.loops.data import has_source

            if not has_source(self, "train_dataloader"):
                raise MisconfigurationException(
                    "No `train_dataloader()` method defined. Lightning `Trainer` expects as minimum a"
                    " `training_step()`, `train_dataloader()` and `configure_optimizers()` to be defined."
                )
            has_val_loader = has_source(self, "val_dataloader")
            has_val_step = is_overridden("validation_step", model)
            if has_val_loader and not has_val_step:
                self._warn_once("You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.")
            if has_val_step and not has_val_loader:
                self._warn_once("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.",
                                category=PossibleUserWarning)
            if not model.automatic_optimization:
                if self.gradient_clip_val is not None and self.gradient_clip_val > 0:
                    raise MisconfigurationException(
                        "Automatic gradient clipping is not supported for manual optimization."
                        f" Remove `Trainer(gradient_clip_val={self.gradient_clip_val})`"
                        " or switch to automatic optimization."
                    )
                if self.accumulate_grad_batches != 1:
                    raise MisconfigurationException(
                        "Automatic gradient accumulation is not supported for manual optimization."
                        f" Remove `Trainer(accumulate_grad_batches={self.accumulate_grad_batches})`"
                        " or switch to automatic optimization."
                    )
        elif fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            step = "validation_step" if fn == TrainerFn.VALIDATING else "test_step"
            if not is_overridden(step, model):
                raise MisconfigurationException(f"No `{step}()` method defined to run `Trainer.{fn.value}`.")

    def _run(self, model: LightningModule, ckpt_path: Optional[str]) -> Any:
        fn = self.state.fn
        if fn == TrainerFn.FITTING:
            self.fit_loop.min_epochs, self.fit_loop.max_epochs = self._loop_limits()
        self.strategy.connect(model)
        self._hooks.reset()
        self._attach_model_callbacks()
        self._attach_model_logging_functions()
        self._verify(model)
        self._clipping_overridden = is_overridden("configure_gradient_clipping", model)
        self._batch_hooks_overridden = any(
            is_overridden(h, model) or (self.datamodule is not None and is_overridden(h, self.datamodule))
            for h in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
        )
        self._setup_profiler(model)
        self._prepare_data()
        for logger in self.loggers:  # create experiment folders/files before the setup hooks
            if hasattr(logger, "experiment"):
                _ = logger.experiment
        self._call_setup_hook()
        # Lightning gates these two (and only these) on its own is_overridden
        if lightning_is_overridden("configure_sharded_model", model):
            self._hooks.call_module("configure_sharded_model")
        if lightning_is_overridden("configure_model", model):
            self._hooks.call_module("configure_model")
        self._checkpoint_connector.resume_start(ckpt_path)
        self._checkpoint_connector.restore_modules_and_callbacks()
        self._logger_connector.reset_results()
        self._logger_connector.reset_metrics()
        self.strategy.setup(self)
        self._signal_connector.register()
        if fn == TrainerFn.FITTING:
            self._hooks.call_callbacks("on_fit_start")
            self._hooks.call_module("on_fit_start")
        self._log_hyperparams()
        self._checkpoint_connector.restore_training_state()
        self._checkpoint_connector.resume_end()
        results = self._run_stage()
        self._teardown()
        if fn == TrainerFn.FITTING:
            self._hooks.call_callbacks("on_fit_end")
            self._hooks.call_module("on_fit_end")
        self._call_teardown_hook()
        self.state.status = TrainerStatus.FINISHED
        self.state.stage = None
        return results

    def _setup_profiler(self, model: LightningModule) -> None:
        """As Lightning: the profiler sees the module (a weak proxy: PyTorchProfiler names its submodules' regions),
        the stage names its report, the rank only in a multi-process run, ``log_dir`` is its default folder."""
        if not self.profiler.enabled:
            return
        fn = self.state.fn
        self.profiler._lightning_module = weakref.proxy(model)
        self.profiler.setup(stage=fn.value if fn else "", local_rank=self.local_rank if self.world_size > 1 else None,
                            log_dir=self.log_dir)

    def _loop_limits(self) -> tuple:
        # from the loop's current values, as Lightning: `trainer.fit_loop.max_epochs = 4` between two fits holds
        max_epochs = self.fit_loop.max_epochs
        min_epochs = self.fit_loop.min_epochs
        if max_epochs is None:
            from trainer.callbacks import Timer

            if self.max_steps == -1 and not any(isinstance(cb, Timer) for cb in self.callbacks):
                self._warn_once("`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch"
                                " limit, set `max_epochs=-1`.", category=PossibleUserWarning)
                max_epochs = 1000
            else:
                max_epochs = -1
        if min_epochs is None and self.min_steps is not None:
            min_epochs = 1
        if min_epochs is None:
            min_epochs = 0
        return min_epochs, max_epochs

    def _prepare_data(self) -> None:
        dm = self.datamodule
        module = self.lightning_module
        if dm is not None and lightning_is_overridden("prepare_data", dm):  # gated as in Lightning
            if (dm.prepare_data_per_node and self.local_rank == 0) or (
                not dm.prepare_data_per_node and self.global_rank == 0
            ):
                self._hooks.call_datamodule("prepare_data")
        if module is not None and lightning_is_overridden("prepare_data", module):
            if (module.prepare_data_per_node and self.local_rank == 0) or (
                not module.prepare_data_per_node and self.global_rank == 0
            ):
                self._hooks.call_module("prepare_data")
        self.strategy.barrier("prepare_data")

    def _call_setup_hook(self) -> None:
        stage = self.state.fn.value if self.state.fn else None
        self.strategy.barrier("pre_setup")
        if self.datamodule is not None:
            self._hooks.call_datamodule("setup", stage=stage)
        self._hooks.call_callbacks("setup", stage=stage)
        self._hooks.call_module("setup", stage=stage)
        self.strategy.barrier("post_setup")

    def _call_teardown_hook(self) -> None:
        stage = self.state.fn.value if self.state.fn else None
        if self.datamodule is not None:
            self._hooks.call_datamodule("teardown", stage=stage)
        self._hooks.call_callbacks("teardown", stage=stage)
        self._hooks.call_module("teardown", stage=stage)
        module = self.lightning_module
        if module is not None:
            module._current_fx_name = None
        self.profiler.describe()

    def _log_hyperparams(self) -> None:
        if not self.loggers or not self.enable_autolog_hparams:
            return
        module = self.lightning_module
        dm = self.datamodule
        dm_log = dm._log_hyperparams if dm is not None else False
        hparams: Optional[Dict[str, Any]] = None
        if module._log_hyperparams and dm_log:
            mh, dh = module.hparams_initial, dm.hparams_initial  # type: ignore[union-attr]
            clash = [k for k in mh if k in dh and mh[k] != dh[k]]
            if clash:
                raise RuntimeError(
                    f"Error while merging hparams: the keys {clash} are present in both the LightningModule's"
                    " and LightningDataModule's hparams but have different values."
                )
            hparams = {**mh, **dh}
        elif module._log_hyperparams:
            hparams = module.hparams_initial
        elif dm_log:
            hparams = dm.hparams_initial  # type: ignore[union-attr]
        for logger in self.loggers:
            if hparams is not None:
                logger.log_hyperparams(hparams)
            if hasattr(logger, "log_graph"):
                logger.log_graph(module)
            logger.save()

    def _run_stage(self) -> Any:
        self.strategy.barrier("run-stage")
        self.lightning_module.zero_grad()
        fn = self.state.fn
        if fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            self.state.stage = RunningStage.VALIDATING if fn == TrainerFn.VALIDATING else RunningStage.TESTING
            return self._evaluation_loop.run()
        if fn == TrainerFn.PREDICTING:
            self.state.stage = RunningStage.PREDICTING
            return self.predict_loop.run()
        with isolate_rng():
            self._run_sanity_check()
        with torch.autograd.set_detect_anomaly(self._detect_anomaly):
            self.fit_loop.run()
        return None

    def _run_sanity_check(self) -> None:
        val_loop = self.fit_loop.epoch_loop.val_loop
        if not (self.enable_validation and self.num_sanity_val_steps > 0) or self._checkpoint_connector.restored_loops:
            return  # Lightning skips the sanity check when it restarts from a checkpoint
        stage = self.state.stage
        self.sanity_checking = True
        self._logger_connector.reset_results()
        self._logger_connector.reset_metrics()
        self._hooks.call_callbacks("on_sanity_check_start")
        val_loop.run()
        self._hooks.call_callbacks("on_sanity_check_end")
        self._logger_connector.reset_results()
        self._logger_connector.reset_metrics()
        val_loop.batch_progress.reset()
        self.state.stage = stage

    @property
    def received_sigterm(self) -> bool:
        """Whether this process received SIGTERM during the current call (the loops then stop, as Lightning's)."""
        return self._signal_connector.received_sigterm

    def _teardown(self) -> None:
        self.strategy.teardown()
        self.fit_loop.teardown()
        self._signal_connector.teardown()
        from trainer.compile import allocator

        allocator.empty_cache()  # the compiled step's cached CPU blocks (no-op when never used)
        status = "success" if self.state.status != TrainerStatus.INTERRUPTED else "failed"
        for logger in self.loggers:
            if status == "success":
                logger.finalize(status)

    def _transfer_batch(self, batch: Any, dataloader_idx: int) -> Any:
        """convert_input -> on_before_batch_transfer -> transfer_batch_to_device -> on_after_batch_transfer."""
        batch = self.strategy.precision_plugin.convert_input(batch)
        if self.profiler.enabled:  # Lightning's actions: the strategy's batch_to_device around the three hooks
            with self.profiler.profile(f"[Strategy]{type(self.strategy).__name__}.batch_to_device"):
                return self._batch_transfer_hooks(batch, dataloader_idx)
        if not self._batch_hooks_overridden:  # the defaults: one move, no hook dispatch
            device = self.strategy.root_device
            if device.type == "cpu" and type(batch) in (list, tuple) and _all_cpu_tensors(batch):
                return batch  # (x, y) already on the CPU: nothing to walk or move
            return move_data_to_device(batch, device)
        return self._batch_transfer_hooks(batch, dataloader_idx)

    def _batch_transfer_hooks(self, batch: Any, dataloader_idx: int) -> Any:
        batch = self._call_batch_hook("on_before_batch_transfer", batch, dataloader_idx)
        batch = self._call_batch_hook("transfer_batch_to_device", batch, self.strategy.root_device, dataloader_idx)
        return self._call_batch_hook("on_after_batch_transfer", batch, dataloader_idx)

    def _call_batch_hook(self, name: str, *args: Any) -> Any:
        dm = self.datamodule
        if dm is not None and lightning_is_overridden(name, dm):  # Lightning's choice of owner, exactly
            return self._hooks.call_datamodule(name, *args)
        return self._hooks.call_module(name, *args)

    def _warn_once(self, message: str, category: type = UserWarning) -> None:
        if message not in self._warned:
            self._warned.add(message)
            rank_zero_warn(message, category=category, stacklevel=4)

    def _info_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            rank_zero_info(message, stacklevel=3)


def _all_cpu_tensors(items: Any) -> bool:
    for t in items:
        if type(t) is not torch.Tensor or not t.is_cpu:
            return False
    return True


def _iterables(combined: Any) -> Any:
    return None if combined is None else combined.iterables


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _rich_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def _reorder_callbacks(callbacks: List[Callback]) -> List[Callback]:
    """Checkpoint callbacks go last so they see every other callback's updates (Lightning's order)."""
    others = [cb for cb in callbacks if not isinstance(cb, Checkpoint)]
    ckpts = [cb for cb in callbacks if isinstance(cb, Checkpoint)]
    return others + ckpts


def _check_module(model: Any, fn: str) -> LightningModule:
    """Lightning's ``_maybe_unwrap_optimized`` checks: its TypeError and wording for anything else."""
    if isinstance(model, LightningModule):
        return model
    kind = type(model)
    for base in kind.__mro__:  # a subclass of Lightning's own LightningModule: the script mixes both imports
        for other in ("pytorch_lightning", "lightning.pytorch"):
            if base.__name__ == "LightningModule" and base.__module__.startswith(other + "."):
                raise TypeError(
                    f"You passed a `{other}` object ({kind.__qualname__}) to a `trainer` Trainer (`Trainer.{fn}()`)."
                    " Please switch to a single import style."
                )
    if isinstance(getattr(model, "_orig_mod", None), LightningModule):  # torch.compile(module)
        raise TypeError(
            f"`Trainer.{fn}()` got a `{kind.__qualname__}` (the output of `torch.compile`) wrapping a LightningModule:"
            " pass the LightningModule itself; this Trainer compiles the training step on its own"
            " (`Trainer(compile=...)`)."
        )
    raise TypeError(
        f"`model` must be a `LightningModule` or `torch._dynamo.OptimizedModule`, got `{kind.__qualname__}`"
    )


def _no_model(fn: str) -> TypeError:
    """``trainer.validate/test/predict()`` without a model and none from a previous run (Lightning's wording)."""
    return TypeError(f"`Trainer.{fn}()` requires a `LightningModule` when it hasn't been passed in a previous run")


__all__ = ["Trainer", "TrainerFn", "RunningStage", "TrainerStatus", "TrainerState"]
