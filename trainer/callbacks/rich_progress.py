"""``RichProgressBar``: Lightning's progress bar drawn with `rich <https://github.com/Textualize/rich>`_.

One ``rich.progress.Progress`` display holds the bars of a run: sanity check, training (one bar reused across
epochs unless ``leave=True``), validation, test and predict. The training bar shows the progress-bar metrics
(``v_num`` and ``self.log(..., prog_bar=True)`` values) beside it.

Differences from Lightning's implementation, on purpose:

* no background refresh thread: the display is redrawn from the hooks, at most ``refresh_rate`` times a second
  (and always at the end of a bar), so nothing runs concurrently with the training step;
* ``console_kwargs`` builds a private ``rich.console.Console`` instead of reconfiguring rich's global console,
  so a captured/redirected console does not leak into other code;
* finished validation/test/predict tasks are removed from the display instead of being kept hidden.

When the console is not a terminal (a file, a pipe, CI logs) rich does not redraw in place; the final state of the
display is written once when it stops.
"""
from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from trainer.callbacks.progress.progress_bar import _SwitchableBar

_RICH_AVAILABLE = importlib.util.find_spec("rich") is not None

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.progress import Progress, Task, TaskID
    from rich.style import Style

    from trainer.module import LightningModule
    from trainer.trainer import Trainer


@dataclass
class RichProgressBarTheme:
    """Styles of the bar's parts (see https://rich.readthedocs.io/en/stable/style.html).

    Args:
        description: the bar description ("Epoch 0/9", "Validation", ...).
        progress_bar: the bar while in progress.
        progress_bar_finished: a finished bar.
        progress_bar_pulse: the bar of an iterable without length.
        batch_progress: the "n/total" batches column.
        time: the elapsed and remaining time column.
        processing_speed: the "it/s" column.
        metrics: the metrics text.
        metrics_text_delimiter: the text between two metrics.
        metrics_format: format spec of a numeric metric.
    """

    description: Union[str, "Style"] = ""
    progress_bar: Union[str, "Style"] = "#6206E0"
    progress_bar_finished: Union[str, "Style"] = "#6206E0"
    progress_bar_pulse: Union[str, "Style"] = "#6206E0"
    batch_progress: Union[str, "Style"] = ""
    time: Union[str, "Style"] = "dim"
    processing_speed: Union[str, "Style"] = "dim underline"
    metrics: Union[str, "Style"] = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


def _rich_total(total: Union[int, float, None]) -> Optional[float]:
    """rich's total: ``None`` (a pulsing bar, no ETA) for an iterable without length."""
    if total is None or (isinstance(total, float) and (math.isinf(total) or math.isnan(total))):
        return None
    return total


def _columns(bar: "RichProgressBar", trainer: "Trainer") -> List[Any]:
    from rich.progress import BarColumn, ProgressColumn, TextColumn
    from rich.text import Text

    theme = bar.theme

    class BatchesProcessedColumn(ProgressColumn):
        def render(self, task: "Task") -> Text:
            total = "--" if task.total is None else int(task.total)
            return Text(f"{int(task.completed)}/{total}", style=theme.batch_progress)

    class TimeColumn(ProgressColumn):
        max_refresh = 0.5  # redraw twice a second at most, so the numbers do not jitter

        def render(self, task: "Task") -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            remaining = task.time_remaining
            elapsed_s = "-:--:--" if elapsed is None else str(timedelta(seconds=int(elapsed)))
            remaining_s = "-:--:--" if remaining is None else str(timedelta(seconds=int(remaining)))
            return Text(f"{elapsed_s} • {remaining_s}", style=theme.time)

    class SpeedColumn(ProgressColumn):
        def render(self, task: "Task") -> Text:
            speed = f"{task.speed:>.2f}" if task.speed is not None else "0.00"
            return Text(f"{speed}it/s", style=theme.processing_speed)

    class MetricsColumn(ProgressColumn):
        """The metrics, on the training bar only (and only while fitting, outside the sanity check)."""

        def render(self, task: "Task") -> Text:
            if (
                _fn(trainer) != "fit"
                or trainer.sanity_checking
                or bar.train_progress_bar_id is None
                or task.id != bar.train_progress_bar_id
            ):
                return Text()
            return Text(bar._metrics_text(), justify="left", style=theme.metrics)

    return [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(
            complete_style=theme.progress_bar,
            finished_style=theme.progress_bar_finished,
            pulse_style=theme.progress_bar_pulse,
        ),
        BatchesProcessedColumn(),
        TimeColumn(),
        SpeedColumn(),
        MetricsColumn(),
    ]


def _fn(trainer: Any) -> Optional[str]:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return getattr(fn, "value", fn)


class RichProgressBar(_SwitchableBar):
    """A progress bar with rich text formatting.

    Args:
        refresh_rate: Redraw the display at most this many times per second; ``0`` disables the bar.
            (Lightning 2.x's meaning and default.)
        leave: Keep each finished epoch's training bar on screen.
        theme: The styles of the bar's parts.
        console_kwargs: Keyword arguments of a ``rich.console.Console`` to draw on (for example
            ``{"file": buffer, "width": 120}``); by default rich's global console.

    Raises:
        ModuleNotFoundError: if ``rich`` is not installed.
    """

    def __init__(
        self,
        refresh_rate: int = 100,
        leave: bool = False,
        theme: RichProgressBarTheme = RichProgressBarTheme(),
        console_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not _RICH_AVAILABLE:
            raise ModuleNotFoundError(
                "`RichProgressBar` requires `rich` >= 10.2.2. Install it by running `pip install -U rich`."
            )
        if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, (int, float)) or refresh_rate < 0:
            raise ValueError(f"`RichProgressBar(refresh_rate={refresh_rate!r})`: expected a number >= 0.")
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self._console: Optional["Console"] = None
        self._console_kwargs = console_kwargs or {}
        self._enabled = True
        self.progress: Optional["Progress"] = None
        self._progress_stopped = False
        self._last_refresh = 0.0
        self._metrics: Dict[str, Any] = {}
        self.theme = theme
        self.train_progress_bar_id: Optional["TaskID"] = None
        self.val_sanity_progress_bar_id: Optional["TaskID"] = None
        self.val_progress_bar_id: Optional["TaskID"] = None
        self.test_progress_bar_id: Optional["TaskID"] = None
        self.predict_progress_bar_id: Optional["TaskID"] = None

    # ------------------------------------------------------------------ state

    @property
    def refresh_rate(self) -> float:
        return self._refresh_rate

    @property
    def console(self) -> Optional["Console"]:
        """The console the display draws on (set when the first bar of a run appears)."""
        return self._console

    def _task(self, task_id: Optional["TaskID"], name: str) -> "Task":
        if self.progress is None or task_id is None:
            raise TypeError(f"The `{self.__class__.__name__}.{name}` reference has not been set yet.")
        return self.progress._tasks[task_id]

    @property
    def train_progress_bar(self) -> "Task":
        return self._task(self.train_progress_bar_id, "train_progress_bar")

    @property
    def val_sanity_check_bar(self) -> "Task":
        return self._task(self.val_sanity_progress_bar_id, "val_sanity_check_bar")

    @property
    def val_progress_bar(self) -> "Task":
        return self._task(self.val_progress_bar_id, "val_progress_bar")

    @property
    def test_progress_bar(self) -> "Task":
        return self._task(self.test_progress_bar_id, "test_progress_bar")

    @property
    def predict_progress_bar(self) -> "Task":
        return self._task(self.predict_progress_bar_id, "predict_progress_bar")

    def configure_columns(self, trainer: "Trainer") -> List[Any]:
        """The display's columns except the metrics column (override to customise)."""
        return _columns(self, trainer)[:-1]

    # ------------------------------------------------------------------ display life cycle

    def _get_console(self) -> "Console":
        from rich import get_console
        from rich.console import Console

        if self._console_kwargs:
            if self._console is None:
                self._console = Console(**self._console_kwargs)
            return self._console
        console = get_console()
        # A display left active on the global console (a run that died before its teardown) would make rich refuse
        # the new one; Lightning clears it the same way.
        stack = getattr(console, "_live_stack", None)
        if stack:
            while console._live_stack:
                console.clear_live()
        elif stack is None and getattr(console, "_live", None) is not None:
            console.clear_live()
        return console

    def _init_progress(self, trainer: "Trainer") -> None:
        if not self.is_enabled or (self.progress is not None and not self._progress_stopped):
            return
        from rich.progress import Progress

        self._reset_progress_bar_ids()
        self._console = self._get_console()
        metrics_column = _columns(self, trainer)[-1]
        self.progress = Progress(
            *self.configure_columns(trainer),
            metrics_column,
            console=self._console,
            auto_refresh=False,  # redrawn from the hooks (see ``refresh``); no thread runs beside training
            disable=self.is_disabled,
        )
        self.progress.start()
        self._progress_stopped = False
        self._last_refresh = 0.0

    def _stop_progress(self) -> None:
        if self.progress is not None and not self._progress_stopped:
            self.progress.stop()  # draws the final state (also when the console is not a terminal)
            self._progress_stopped = True

    def _reset_progress_bar_ids(self) -> None:
        self.train_progress_bar_id = None
        self.val_sanity_progress_bar_id = None
        self.val_progress_bar_id = None
        self.test_progress_bar_id = None
        self.predict_progress_bar_id = None

    def refresh(self, hard: bool = False) -> None:
        """Redraw now if ``hard`` or if ``1 / refresh_rate`` seconds have passed since the last redraw."""
        if self.progress is None or self._progress_stopped or not self.is_enabled:
            return
        now = time.monotonic()
        if hard or now - self._last_refresh >= 1.0 / self.refresh_rate:
            self.progress.refresh()
            self._last_refresh = now

    def _add_task(self, total: Union[int, float], description: str, visible: bool = True) -> "TaskID":
        assert self.progress is not None
        if self.theme.description:
            description = f"[{self.theme.description}]{description}"
        return self.progress.add_task(description, total=_rich_total(total), visible=visible)

    def _drop_task(self, task_id: Optional["TaskID"]) -> None:
        if self.progress is not None and task_id is not None and task_id in self.progress._tasks:
            self.progress.remove_task(task_id)

    def _update(self, task_id: Optional["TaskID"], current: int, visible: bool = True) -> None:
        if self.progress is None or self._progress_stopped or not self.is_enabled or task_id is None:
            return
        self.progress.update(task_id, completed=current, visible=visible)
        task = self.progress._tasks.get(task_id)
        self.refresh(hard=task is not None and task.total is not None and current >= task.total)

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            description += f"/{max_epochs - 1}"
        if len(self.validation_description) > len(description):  # same width as "Validation": no flicker
            description = f"{description:{len(self.validation_description)}}"
        return description

    # ------------------------------------------------------------------ metrics

    def _metrics_text(self) -> str:
        parts = []
        for name, value in self._metrics.items():
            if not isinstance(value, str):
                try:
                    value = f"{value:{self.theme.metrics_format}}"
                except (TypeError, ValueError):
                    value = str(value)
            parts.append(f"{name}: {value}")
        return self.theme.metrics_text_delimiter.join(parts)

    def _update_metrics(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self.is_enabled or self.progress is None:
            return
        self._metrics = self.get_metrics(trainer, pl_module)

    # ------------------------------------------------------------------ hooks: start

    def on_sanity_check_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._init_progress(trainer)

    def on_sanity_check_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._drop_task(self.val_sanity_progress_bar_id)
        self.val_sanity_progress_bar_id = None
        self.refresh(hard=True)

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._init_progress(trainer)

    def on_validation_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._init_progress(trainer)

    def on_test_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._init_progress(trainer)

    def on_predict_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._init_progress(trainer)

    # ------------------------------------------------------------------ hooks: training

    def on_train_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self.is_disabled:
            return
        total = self.total_train_batches
        description = self._get_train_description(trainer.current_epoch)
        if self.train_progress_bar_id is not None and self._leave:  # keep the finished epoch on screen
            self._stop_progress()
            self._init_progress(trainer)
        if self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(total, description)
        else:
            self.progress.reset(
                self.train_progress_bar_id, total=_rich_total(total), description=description, visible=True
            )
        self.refresh(hard=True)

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # resumed mid-epoch: no epoch start was seen
            self.train_progress_bar_id = self._add_task(
                self.total_train_batches, self._get_train_description(trainer.current_epoch)
            )
        self._update_metrics(trainer, pl_module)
        self._update(self.train_progress_bar_id, batch_idx + 1)

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._update_metrics(trainer, pl_module)
        self.refresh(hard=True)

    # ------------------------------------------------------------------ hooks: validation

    def on_validation_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        total = self.total_val_batches_current_dataloader
        if trainer.sanity_checking:
            self._drop_task(self.val_sanity_progress_bar_id)
            self.val_sanity_progress_bar_id = self._add_task(total, self.sanity_check_description, visible=False)
        else:
            self._drop_task(self.val_progress_bar_id)
            self.val_progress_bar_id = self._add_task(total, self.validation_description, visible=False)
        self.refresh()

    def on_validation_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled:
            return
        task_id = self.val_sanity_progress_bar_id if trainer.sanity_checking else self.val_progress_bar_id
        self._update(task_id, batch_idx + 1)

    def on_validation_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self.is_enabled and _fn(trainer) == "fit" and self.val_progress_bar_id is not None:
            self._drop_task(self.val_progress_bar_id)  # validation inside fit: only the training bar stays
            self.val_progress_bar_id = None
            self.refresh()

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if _fn(trainer) == "fit":
            self._update_metrics(trainer, pl_module)
        self.reset_dataloader_idx_tracker()

    # ------------------------------------------------------------------ hooks: test / predict

    def on_test_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        if self.test_progress_bar_id is not None:
            self.progress.update(self.test_progress_bar_id, visible=False)
        self.test_progress_bar_id = self._add_task(self.total_test_batches_current_dataloader, self.test_description)
        self.refresh()

    def on_test_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled:
            return
        self._update(self.test_progress_bar_id, batch_idx + 1)

    def on_test_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.reset_dataloader_idx_tracker()

    def on_predict_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        if self.predict_progress_bar_id is not None:
            self.progress.update(self.predict_progress_bar_id, visible=False)
        self.predict_progress_bar_id = self._add_task(
            self.total_predict_batches_current_dataloader, self.predict_description
        )
        self.refresh()

    def on_predict_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled:
            return
        self._update(self.predict_progress_bar_id, batch_idx + 1)

    def on_predict_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.reset_dataloader_idx_tracker()

    # ------------------------------------------------------------------ hooks: end

    def teardown(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        self._stop_progress()

    def on_exception(self, trainer: "Trainer", pl_module: "LightningModule", exception: BaseException) -> None:
        self._stop_progress()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print above the display (rich's console keeps the bars below the text)."""
        if self.progress is not None and not self._progress_stopped and self._console is not None:
            sep = kwargs.get("sep", " ")
            self._console.print(sep.join(map(str, args)), markup=False, highlight=False)
            return
        print(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["progress"] = None  # rich's display and console hold locks and file handles
        state["_console"] = None
        return state


__all__ = ["RichProgressBar", "RichProgressBarTheme"]
