"""``PyTorchProfiler``: torch.profiler (Kineto) around the run, with Lightning's schedule per step kind, file names
and report. Each step action (``...training_step``, ``...validation_step``, ...) advances the schedule; a finished
cycle is written by ``tensorboard_trace_handler`` as ``<dirpath>/<stage>-<action>.<id>.pt.trace.json`` (a Chrome
trace that TensorBoard's profiler plugin reads). The compiled training step appears as its graphs
(``[trainer][compiled]step`` ...) inside the step's action."""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerAction, ProfilerActivity, tensorboard_trace_handler

from trainer.exceptions import MisconfigurationException
from trainer.profilers.profiler import Profiler

log = logging.getLogger(__name__)

_STEP_KINDS = ("training_step", "validation_step", "test_step", "predict_step")


def _tracing() -> bool:
    """TorchDynamo or make_fx is tracing the step (a record_function there would break or enter the graph)."""
    if torch.compiler.is_compiling():
        return True
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None


class RegisterRecordFunction:
    """While entered, every submodule's forward runs inside ``record_function("[pl][module]<class>: <name>")``."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._records: Dict[str, record_function] = {}
        self._handles: List[Any] = []

    def _start(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any) -> Any:
            if _tracing():  # the compiled engine captures the step: its regions are the graphs, not modules
                return inputs
            record = record_function(f"[pl][module]{type(module).__module__}.{type(module).__qualname__}: {name}")
            record.__enter__()
            self._records[name] = record
            return inputs
        return hook

    def _stop(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, outputs: Any) -> Any:
            record = self._records.pop(name, None)
            if record is not None:
                record.__exit__(None, None, None)
            return outputs
        return hook

    def __enter__(self) -> None:
        for name, module in self._model.named_modules():
            if name:
                self._handles.append(module.register_forward_pre_hook(self._start(name)))
                self._handles.append(module.register_forward_hook(self._stop(name)))

    def __exit__(self, *args: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ScheduleWrapper:
    """Runs the user's (or the default) schedule separately for each step kind, so validation inside a training
    epoch does not advance the training cycle; a kind stops recording once its cycle was saved."""

    def __init__(self, schedule: Callable) -> None:
        self._schedule = schedule
        self.reset()

    def reset(self) -> None:
        self._steps = dict.fromkeys(_STEP_KINDS, 0)
        self._finished = dict.fromkeys(_STEP_KINDS, False)
        self._current_action: Optional[str] = None
        self._prev_schedule_action: Optional[ProfilerAction] = None
        self._start_action_name: Optional[str] = None

    def setup(self, start_action_name: str) -> None:
        self._start_action_name = start_action_name

    def pre_step(self, current_action: str) -> None:
        self._current_action = current_action

    @property
    def _kind(self) -> Optional[str]:
        action = self._current_action or ""
        return next((kind for kind in _STEP_KINDS if action.endswith(kind)), None)

    is_training = property(lambda self: self._kind == "training_step")
    is_validating = property(lambda self: self._kind == "validation_step")
    is_testing = property(lambda self: self._kind == "test_step")
    is_predicting = property(lambda self: self._kind == "predict_step")

    @property
    def num_step(self) -> int:
        kind = self._kind
        return self._steps[kind] if kind else 0

    def _step(self) -> None:
        kind = self._kind
        if kind is None:
            return
        if kind == "validation_step" and (self._start_action_name or "").endswith("on_fit_start"):
            if self._steps["training_step"] == 0:  # the sanity check does not count
                return
        self._steps[kind] += 1

    @property
    def has_finished(self) -> bool:
        kind = self._kind
        return self._finished[kind] if kind else False

    def __call__(self, num_step: int) -> ProfilerAction:
        if self._current_action is None or self.has_finished:
            return ProfilerAction.NONE
        self._step()
        action = self._schedule(max(self.num_step, 0))
        if self._prev_schedule_action == ProfilerAction.RECORD and action == ProfilerAction.WARMUP:
            action = ProfilerAction.RECORD  # validation recorded before training's warm-up: keep recording
        if action == ProfilerAction.RECORD_AND_SAVE and self._kind is not None:
            self._finished[self._kind] = True
        self._prev_schedule_action = action
        return action


@lru_cache(1)
def _default_schedule() -> Callable:
    return torch.profiler.schedule(wait=1, warmup=1, active=3)


class PyTorchProfiler(Profiler):
    """Lightning's arguments: ``group_by_input_shapes``, ``emit_nvtx``, ``export_to_chrome``, ``row_limit``,
    ``sort_by_key``, ``record_module_names``, ``table_kwargs`` and ``torch.profiler.profile``'s own keywords
    (``schedule``, ``activities``, ``record_shapes``, ``profile_memory``, ``with_stack``, ...)."""

    STEP_FUNCTIONS = set(_STEP_KINDS)
    AVAILABLE_SORT_KEYS = {
        "cpu_time", "cuda_time", "cpu_time_total", "cuda_time_total", "cpu_memory_usage", "cuda_memory_usage",
        "self_cpu_memory_usage", "self_cuda_memory_usage", "count",
    }

    def __init__(
        self,
        dirpath: Optional[Union[str, Path]] = None,
        filename: Optional[str] = None,
        group_by_input_shapes: bool = False,
        emit_nvtx: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: Optional[str] = None,
        record_module_names: bool = True,
        table_kwargs: Optional[Dict[str, Any]] = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self._group_by_input_shapes = group_by_input_shapes and profiler_kwargs.get("record_shapes", False)
        self._emit_nvtx = emit_nvtx
        self._export_to_chrome = export_to_chrome
        self._row_limit = row_limit
        self._sort_by_key = sort_by_key or ("cuda_time_total" if _uses_cuda(profiler_kwargs) else "cpu_time_total")
        self._record_module_names = record_module_names
        self._profiler_kwargs = profiler_kwargs
        self._table_kwargs = table_kwargs if table_kwargs is not None else {}
        self.profiler: Any = None
        self.function_events: Any = None
        self._lightning_module: Optional[nn.Module] = None  # set by the Trainer before a run
        self._register: Optional[RegisterRecordFunction] = None
        self._parent_profiler: Any = None
        self._recording_map: Dict[str, record_function] = {}
        self._schedule: Optional[ScheduleWrapper] = None
        self._init_kineto(profiler_kwargs)
        if self._sort_by_key not in self.AVAILABLE_SORT_KEYS:
            raise MisconfigurationException(
                f"Found sort_by_key: {self._sort_by_key}. Should be within {self.AVAILABLE_SORT_KEYS}. "
            )
        valid_table_keys = set(inspect.signature(torch.autograd.profiler_util.EventList.table).parameters) - {
            "self", "sort_by", "row_limit"}
        for key in self._table_kwargs:
            if key in {"sort_by", "row_limit"}:
                raise KeyError(
                    f"Found invalid table_kwargs key: {key}. This is already a positional argument of the Profiler."
                )
            if key not in valid_table_keys:
                raise KeyError(f"Found invalid table_kwargs key: {key}. Should be within {valid_table_keys}.")

    def _init_kineto(self, profiler_kwargs: Dict[str, Any]) -> None:
        has_schedule = "schedule" in profiler_kwargs
        self._has_on_trace_ready = "on_trace_ready" in profiler_kwargs
        schedule = profiler_kwargs.get("schedule", None)
        if schedule is not None:
            if not callable(schedule):
                raise MisconfigurationException(f"Schedule should be a callable. Found: {schedule}")
            action = schedule(0)
            if not isinstance(action, ProfilerAction):
                raise MisconfigurationException(
                    f"Schedule should return a `torch.profiler.ProfilerAction`. Found: {action}"
                )
        schedule = schedule if has_schedule else _default_schedule()
        self._schedule = ScheduleWrapper(schedule) if schedule is not None else None
        self._profiler_kwargs["schedule"] = self._schedule
        activities = profiler_kwargs.get("activities", None)
        self._profiler_kwargs["activities"] = activities or self._default_activities()
        self._export_to_flame_graph = profiler_kwargs.get("export_to_flame_graph", False)
        self._metric = profiler_kwargs.get("metric", "self_cpu_time_total")
        self._profiler_kwargs["with_stack"] = profiler_kwargs.get("with_stack", False) or self._export_to_flame_graph

    def _default_activities(self) -> List[ProfilerActivity]:
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        return activities

    @property
    def _total_steps(self) -> Union[int, float]:
        assert self._schedule is not None and self._lightning_module is not None
        trainer = self._lightning_module.trainer
        if self._schedule.is_training:
            return trainer.num_training_batches
        if self._schedule.is_validating:
            return sum(trainer.num_val_batches) + sum(trainer.num_sanity_val_batches)
        if self._schedule.is_testing:
            return sum(trainer.num_test_batches)
        if self._schedule.is_predicting:
            return sum(trainer.num_predict_batches)
        raise NotImplementedError("Unsupported schedule")

    def _should_override_schedule(self) -> bool:
        return (
            self._lightning_module is not None
            and self._schedule is not None
            and self._total_steps < 5
            and self._schedule._schedule == _default_schedule()
        )

    def start(self, action_name: str) -> None:
        if self.profiler is None:
            if torch.autograd._profiler_enabled():  # another (legacy) profiler is running: ours replaces it
                torch.autograd._disable_profiler()
            if self._schedule is not None:
                self._schedule.setup(action_name)
            self._create_profilers()
            profiler = self.profiler.__enter__()
            if profiler is not None:
                self.profiler = profiler
            if self._parent_profiler is not None:
                self._parent_profiler.__enter__()
        if self._lightning_module is not None and self._register is None and self._record_module_names:
            self._register = RegisterRecordFunction(self._lightning_module)
            self._register.__enter__()
        if self.profiler is not None and action_name not in self._recording_map:
            recording = record_function("[pl][profile]" + action_name)  # Lightning's prefix: tools key on it
            recording.__enter__()
            self._recording_map[action_name] = recording

    def stop(self, action_name: str) -> None:
        if action_name in self._recording_map:
            self._recording_map.pop(action_name).__exit__(None, None, None)
        if self._emit_nvtx or self.profiler is None:
            return
        if not any(action_name.endswith(kind) for kind in _STEP_KINDS):
            return
        if self._schedule is not None:
            self._schedule.pre_step(action_name)
        if self._should_override_schedule():
            warnings.warn("The PyTorch Profiler default schedule will be overridden as there is not enough "
                          "steps to properly record traces.")
            self._schedule = None
            self.profiler.schedule = torch.profiler.profiler._default_schedule_fn
        if not self._has_on_trace_ready:
            self.profiler.on_trace_ready = self._trace_handler(action_name)
        if self._schedule is not None:
            self.profiler.step_num = self._schedule.num_step
        self.profiler.step()
        self.profiler.add_metadata("Framework", "trainer")

    def _trace_handler(self, action_name: str) -> Callable:
        def on_trace_ready(profiler: Any) -> None:
            if self.dirpath is None:
                warnings.warn("The PyTorchProfiler failed to export trace as `dirpath` is None")
                return
            if self._export_to_chrome:
                tensorboard_trace_handler(str(self.dirpath),
                                          self._prepare_filename(action_name=action_name, extension=""))(profiler)
            if self._export_to_flame_graph:
                path = os.path.join(self.dirpath, self._prepare_filename(action_name=action_name, extension=".stack"))
                profiler.export_stacks(path, metric=self._metric)
        return on_trace_ready

    def summary(self) -> str:
        if not self._profiler_kwargs.get("enabled", True) or self._emit_nvtx:
            return ""
        self._delete_profilers()
        if not self.function_events:
            return ""
        data = self.function_events.key_averages(group_by_input_shapes=self._group_by_input_shapes)
        table = data.table(sort_by=self._sort_by_key, row_limit=self._row_limit, **self._table_kwargs)
        return self._stats_to_str({"records": table})

    def _create_profilers(self) -> None:
        if self.profiler is not None:
            return
        if self._emit_nvtx:
            if self._parent_profiler is None:
                self._parent_profiler = torch.cuda.profiler.profile()
            self.profiler = self._create_profiler(torch.autograd.profiler.emit_nvtx)
        else:
            self._parent_profiler = None
            self.profiler = self._create_profiler(torch.profiler.profile)

    def _create_profiler(self, profiler: type) -> Any:
        accepted = inspect.signature(profiler.__init__).parameters
        return profiler(**{k: v for k, v in self._profiler_kwargs.items() if k in accepted})

    def _cache_functions_events(self) -> None:
        if not self._emit_nvtx:
            self.function_events = self.profiler.events()

    def _delete_profilers(self) -> None:
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            self._cache_functions_events()
            self.profiler = None
        if self._schedule is not None:
            self._schedule.reset()
        if self._parent_profiler is not None:
            self._parent_profiler.__exit__(None, None, None)
            self._parent_profiler = None
        if self._register is not None:
            self._register.__exit__(None, None, None)
            self._register = None

    def teardown(self, stage: Optional[str]) -> None:
        self._delete_profilers()
        for record in list(self._recording_map.values()):
            record.__exit__(None, None, None)
        self._recording_map = {}
        super().teardown(stage=stage)


def _uses_cuda(profiler_kwargs: Dict[str, Any]) -> bool:
    activities = profiler_kwargs.get("activities")
    if activities is not None:
        return ProfilerActivity.CUDA in activities
    return torch.cuda.is_available()
