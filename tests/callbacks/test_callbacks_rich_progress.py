"""RichProgressBar: renders every stage into a captured console with the progress-bar metrics and ``v_num``,
the same text as pytorch-lightning's bar (timings masked), works on a non-terminal console, and disables cleanly."""
from __future__ import annotations

import io
import re

import pytest
import rich  # noqa: E402,F401  (test extra: missing rich fails)
import torch
from helpers import boring_model_class

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(autouse=True)
def _restore_rich_console():
    """Lightning's bar applies ``console_kwargs`` to rich's global console (``rich.reconfigure``); put it back so
    later tests do not print into this test's buffer."""

    console = rich.get_console()
    saved = dict(console.__dict__)
    yield
    console.__dict__ = saved


def _callbacks(L):
    return __import__(f"{L.__name__}.callbacks", fromlist=["RichProgressBar"])


def _logged_model(L):
    class Logged(boring_model_class(L)):
        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss, prog_bar=True)
            self.log("hidden", loss)  # not prog_bar: must not be shown
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(batch), prog_bar=True)

    return Logged


def _fit(L, root, bar, stages=("fit",), max_epochs=2, **kw):
    from importlib import import_module

    logger = import_module(f"{L.__name__}.loggers").CSVLogger(str(root), name="run", version=7)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, callbacks=[bar], logger=logger, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=str(root), log_every_n_steps=1, **kw,
    )
    model = _logged_model(L)()
    for stage in stages:
        if stage == "fit":
            trainer.fit(model)
        else:
            getattr(trainer, stage)(model, verbose=False) if stage != "predict" else trainer.predict(model)
    return trainer


def _mask(text: str) -> str:
    text = re.sub(r"\d+\.\d+it/s", "<speed>", text)
    return re.sub(r"\d:\d\d:\d\d", "<t>", text)


def test_renders_all_stages_with_metrics_like_lightning(TL, PL, tmp_path):
    outputs = {}
    for L in (TL, PL):
        buf = io.StringIO()
        bar = _callbacks(L).RichProgressBar(console_kwargs={"file": buf, "width": 140, "force_terminal": False})
        _fit(L, tmp_path / L.__name__, bar, stages=("fit", "validate", "test", "predict"))
        outputs[L.__name__] = buf.getvalue()
    ours, ref = outputs["trainer"], outputs["pytorch_lightning"]
    assert "Epoch 1/1" in ours and "v_num: 7.000" in ours and "train_loss: " in ours and "val_loss: " in ours
    assert "hidden" not in ours
    for name in ("Validation", "Testing", "Predicting"):
        assert name in ours
    assert _mask(ours) == _mask(ref)


def test_metrics_values_come_from_progress_bar_metrics(TL, tmp_path):
    buf = io.StringIO()
    bar = TL.callbacks.RichProgressBar(console_kwargs={"file": buf, "width": 160})
    trainer = _fit(TL, tmp_path, bar, max_epochs=1)
    shown = dict(re.findall(r"(\w+): (-?\d+\.\d+)", buf.getvalue()))
    pbar = trainer.progress_bar_metrics
    assert set(shown) == {"v_num", *pbar}
    for k, v in pbar.items():
        assert float(shown[k]) == pytest.approx(float(v), abs=5e-4), k
    assert bar.get_metrics(trainer, trainer.lightning_module)["v_num"] == 7


def test_terminal_console_draws_live(TL, tmp_path):
    buf = io.StringIO()
    bar = TL.callbacks.RichProgressBar(refresh_rate=1000, console_kwargs={"file": buf, "width": 120,
                                                                          "force_terminal": True})
    _fit(TL, tmp_path, bar, max_epochs=2)
    raw = buf.getvalue()
    assert "\x1b[" in raw  # redrawn in place with cursor controls
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "Sanity Checking" in text and "Epoch 0/1" in text and "Epoch 1/1" in text
    assert "1/4" in text and "4/4" in text and "train_loss:" in text
    assert bar._progress_stopped  # stopped at teardown


@pytest.mark.parametrize("leave", [False, True])
def test_leave_keeps_each_epoch(TL, PL, tmp_path, leave):
    texts = {}
    for L in (TL, PL):
        buf = io.StringIO()
        bar = _callbacks(L).RichProgressBar(leave=leave, console_kwargs={"file": buf, "width": 140})
        _fit(L, tmp_path / L.__name__, bar, max_epochs=3)
        texts[L.__name__] = buf.getvalue()
    epochs = [e for e in range(3) if f"Epoch {e}/2" in texts["trainer"]]
    assert epochs == ([0, 1, 2] if leave else [2])
    assert _mask(texts["trainer"]) == _mask(texts["pytorch_lightning"])


@pytest.mark.parametrize("how", ["refresh_rate", "disable"])
def test_disabled_bar_draws_nothing(TL, tmp_path, how):
    buf = io.StringIO()
    kw = {"refresh_rate": 0} if how == "refresh_rate" else {}
    bar = TL.callbacks.RichProgressBar(console_kwargs={"file": buf}, **kw)
    if how == "disable":
        bar.disable()
    trainer = _fit(TL, tmp_path, bar, stages=("fit", "test"), max_epochs=1)
    assert bar.is_disabled and bar.progress is None and buf.getvalue() == ""
    assert trainer.global_step == 4


def test_exception_stops_the_display(TL, tmp_path):
    class Boom(_logged_model(TL)):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise ValueError("boom")
            return super().training_step(batch, batch_idx)

    buf = io.StringIO()
    bar = TL.callbacks.RichProgressBar(console_kwargs={"file": buf, "width": 120})
    trainer = TL.Trainer(accelerator="cpu", max_epochs=1, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(Boom())
    assert bar._progress_stopped and "2/4" in buf.getvalue()
    trainer2 = TL.Trainer(accelerator="cpu", max_epochs=1, callbacks=[bar], logger=False, enable_checkpointing=False,
                          enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer2.fit(_logged_model(TL)())  # a new run starts a new display on the same bar
    assert trainer2.global_step == 4 and not bar.progress.live.is_started


def test_infinite_train_loader(TL, tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            for _ in range(6):
                yield torch.randn(8, generator=g), torch.randn(2, generator=g)

    buf = io.StringIO()
    bar = TL.callbacks.RichProgressBar(console_kwargs={"file": buf, "width": 120})
    trainer = TL.Trainer(accelerator="cpu", max_epochs=1, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0)
    trainer.fit(boring_model_class(TL)(), torch.utils.data.DataLoader(Stream(), batch_size=2))
    assert "3/--" in buf.getvalue()


def test_theme_and_exports(TL, PL):
    C = TL.callbacks
    assert issubclass(C.RichProgressBar, C.ProgressBar)
    from trainer.callbacks.progress import RichProgressBar, RichProgressBarTheme

    assert RichProgressBar is C.RichProgressBar
    ours, ref = RichProgressBarTheme(), PL.callbacks.progress.rich_progress.RichProgressBarTheme()
    assert vars(ours) == vars(ref)
    bar, ref_bar = C.RichProgressBar(), PL.callbacks.RichProgressBar()
    assert bar.refresh_rate == ref_bar.refresh_rate and bar._leave == ref_bar._leave
    assert "progress" not in {k for k, v in bar.__getstate__().items() if v is not None}


def test_default_bar_is_rich_like_lightning(TL, PL, tmp_path):
    for L in (TL, PL):
        trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=str(tmp_path))
        assert type(trainer.progress_bar_callback).__name__ == "RichProgressBar", L.__name__
    assert isinstance(TL.Trainer(accelerator="cpu", logger=False).progress_bar_callback, TL.callbacks.RichProgressBar)
