"""``TQDMProgressBar``: the default progress bar, Lightning's layout and update rules.

Bars: sanity check, training (one bar reused across epochs unless ``leave=True``), validation (nested under
the training bar), test and predict. Like Lightning 2.6 they write to ``sys.stdout``.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Optional, Union

from trainer.callbacks.progress.progress_bar import _SwitchableBar

if importlib.util.find_spec("ipywidgets") is not None:  # notebook-aware bars when the widgets exist
    from tqdm.auto import tqdm as _tqdm
else:
    from tqdm import tqdm as _tqdm

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

_PAD_SIZE = 5


class Tqdm(_tqdm):
    """tqdm that pads floats/strings in the postfix to a fixed width, so the line does not flicker."""

    @staticmethod
    def format_num(n: Union[int, float, str]) -> str:
        should_be_padded = isinstance(n, (float, str))
        if not isinstance(n, str):
            n = _tqdm.format_num(n)
        assert isinstance(n, str)
        if should_be_padded and "e" not in n:
            if "." not in n and len(n) < _PAD_SIZE:
                try:
                    float(n)
                except ValueError:
                    return n
                n += "."
            n += "0" * (_PAD_SIZE - len(n))
        return n


class TQDMProgressBar(_SwitchableBar):
    r"""The default progress bar, built on ``tqdm``.

    Args:
        refresh_rate: Update the bars every this many batches (0 disables them).
        process_position: Offset the bars by this many lines (for several bars at once).
        leave: Keep each finished epoch's bar on screen.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        self._refresh_rate = self._resolve_refresh_rate(refresh_rate)
        self._process_position = process_position
        self._enabled = True
        self._train_progress_bar: Optional[_tqdm] = None
        self._val_progress_bar: Optional[_tqdm] = None
        self._test_progress_bar: Optional[_tqdm] = None
        self._predict_progress_bar: Optional[_tqdm] = None
        self._leave = leave

    def __getstate__(self) -> dict:
        return {k: (None if isinstance(v, _tqdm) else v) for k, v in vars(self).items()}  # tqdm can't pickle

    def _bar(self, attr: str) -> _tqdm:
        bar = getattr(self, f"_{attr}")
        if bar is None:
            raise TypeError(f"The `{self.__class__.__name__}._{attr}` reference has not been set yet.")
        return bar

    @property
    def train_progress_bar(self) -> _tqdm:
        return self._bar("train_progress_bar")

    @train_progress_bar.setter
    def train_progress_bar(self, bar: _tqdm) -> None:
        self._train_progress_bar = bar

    @property
    def val_progress_bar(self) -> _tqdm:
        return self._bar("val_progress_bar")

    @val_progress_bar.setter
    def val_progress_bar(self, bar: _tqdm) -> None:
        self._val_progress_bar = bar

    @property
    def test_progress_bar(self) -> _tqdm:
        return self._bar("test_progress_bar")

    @test_progress_bar.setter
    def test_progress_bar(self, bar: _tqdm) -> None:
        self._test_progress_bar = bar

    @property
    def predict_progress_bar(self) -> _tqdm:
        return self._bar("predict_progress_bar")

    @predict_progress_bar.setter
    def predict_progress_bar(self, bar: _tqdm) -> None:
        self._predict_progress_bar = bar

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    # ------------------------------------------------------------------ bar factories (override to customise)

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.sanity_check_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def init_predict_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.predict_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def init_validation_tqdm(self) -> Tqdm:
        # Under ``trainer.validate()`` there is no training bar to nest under.
        has_main_bar = _fn(self.trainer) != "validate"
        return Tqdm(
            desc=self.validation_description,
            position=2 * self.process_position + has_main_bar,
            disable=self.is_disabled,
            leave=not has_main_bar,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(
            desc="Testing",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    # ------------------------------------------------------------------ hooks

    def on_sanity_check_start(self, *_: Any) -> None:
        self.val_progress_bar = self.init_sanity_tqdm()
        self.train_progress_bar = Tqdm(disable=True)  # placeholder so the validation hooks find a train bar

    def on_sanity_check_end(self, *_: Any) -> None:
        self.val_progress_bar.close()
        self.train_progress_bar.close()

    def on_train_start(self, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: "Trainer", *_: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self._reset(self.train_progress_bar, self.total_train_batches, f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = batch_idx + 1
        if self._train_progress_bar is not None and self._should_update(n, self.train_progress_bar.total):
            _update_n(self.train_progress_bar, n)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        if self._leave:
            self.train_progress_bar.close()

    def on_train_end(self, *_: Any) -> None:
        self.train_progress_bar.close()

    def on_validation_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not trainer.sanity_checking:
            self.val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
        self._reset(self.val_progress_bar, self.total_val_batches_current_dataloader, f"{desc} DataLoader {dataloader_idx}")

    def on_validation_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = batch_idx + 1
        if self._val_progress_bar is not None and self._should_update(n, self.val_progress_bar.total):
            _update_n(self.val_progress_bar, n)

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if self._train_progress_bar is not None and _fn(trainer) == "fit":
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_test_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        self._reset(
            self.test_progress_bar,
            self.total_test_batches_current_dataloader,
            f"{self.test_description} DataLoader {dataloader_idx}",
        )

    def on_test_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = batch_idx + 1
        if self._test_progress_bar is not None and self._should_update(n, self.test_progress_bar.total):
            _update_n(self.test_progress_bar, n)

    def on_test_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.test_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        self._reset(
            self.predict_progress_bar,
            self.total_predict_batches_current_dataloader,
            f"{self.predict_description} DataLoader {dataloader_idx}",
        )

    def on_predict_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = batch_idx + 1
        if self._predict_progress_bar is not None and self._should_update(n, self.predict_progress_bar.total):
            _update_n(self.predict_progress_bar, n)

    def on_predict_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self.predict_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Write through the active bar (``tqdm.write``) so the bar is redrawn below the text."""
        for bar in (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar):
            if bar is not None and not bar.disable:
                bar.write(sep.join(map(str, args)), **kwargs)
                return

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _reset(bar: _tqdm, total: Optional[Union[int, float]], description: str) -> None:
        bar.reset()
        bar.total = convert_inf(total)
        bar.initial = 0
        bar.set_description(description)

    def _should_update(self, current: int, total: Optional[Union[int, float]]) -> bool:
        return self.is_enabled and (current % self.refresh_rate == 0 or current == total)

    @staticmethod
    def _resolve_refresh_rate(refresh_rate: int) -> int:
        if os.getenv("COLAB_GPU") and refresh_rate == 1:
            return 20  # Colab's output cell chokes on per-batch redraws
        if "TQDM_MINITERS" in os.environ:
            return max(int(os.environ["TQDM_MINITERS"]), refresh_rate)
        return refresh_rate


def _fn(trainer: Any) -> Optional[str]:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return getattr(fn, "value", fn)


def convert_inf(x: Optional[Union[int, float]]) -> Optional[Union[int, float]]:
    """``None`` for an infinite/unknown total (tqdm then shows a counter without a bar)."""
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return x


def _update_n(bar: _tqdm, value: int) -> None:
    if not bar.disable:
        bar.n = value
        bar.refresh()
