"""End-to-end: the same script under pytorch-lightning and under ``trainer`` must leave the same
checkpoint files, best score, early-stopping epoch, CSV columns and LR-monitor rows.

The ``trainer`` side skips only while ``trainer/trainer.py`` has not landed (tests/helpers/frameworks.py).
"""
from __future__ import annotations

import csv
import os

import pytest
import torch
from helpers import make_loader, mlp_module_class

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

# Validation values forced per epoch so the monitored metric does not depend on floating-point noise.
FORCED_VAL = [3.0, 1.0, 2.0, 0.5, 0.7, 0.9, 0.8]


def _module_class(L):
    base = mlp_module_class(L)

    class Logged(base):
        def __init__(self, forced=None, scheduler=False, **kw):
            super().__init__(**kw)
            self.forced = forced
            self.use_scheduler = scheduler

        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            if self.forced is not None:
                self.log("forced", torch.tensor(self.forced[self.current_epoch]))

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
            if not self.use_scheduler:
                return opt
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Logged


def _fit(L, root, callbacks, logger="csv", max_epochs=4, module_kw=None, ckpt_path=None, **trainer_kw):
    from importlib import import_module

    loggers = import_module(f"{L.__name__}.loggers")
    if logger == "csv":
        logger = loggers.CSVLogger(str(root), name="run")
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=logger,
        default_root_dir=str(root),
        callbacks=callbacks,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    kwargs.update(trainer_kw)
    trainer = L.Trainer(**kwargs)
    torch.manual_seed(0)
    model = _module_class(L)(**(module_kw or {}))
    trainer.fit(model, make_loader(16, 4, seed=0), make_loader(8, 4, seed=1), ckpt_path=ckpt_path)
    return trainer, model


def _tree(root):
    return sorted(
        os.path.relpath(os.path.join(r, f), root)
        for r, _, fs in os.walk(root)
        for f in fs
        if not f.startswith("events.out.tfevents")
    )


def _ckpt_summary(cb, root):
    return dict(
        files=_tree(cb.dirpath),
        dir=os.path.relpath(cb.dirpath, root),
        best=os.path.relpath(cb.best_model_path, root) if cb.best_model_path else "",
        score=None if cb.best_model_score is None else round(float(cb.best_model_score), 6),
        topk=sorted(os.path.basename(k) for k in cb.best_k_models),
        last=os.path.basename(cb.last_model_path),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(monitor="forced", save_top_k=2, save_last=True),
        dict(monitor="forced", mode="max", filename="{epoch}-{forced:.2f}"),
        dict(every_n_train_steps=3, save_top_k=-1),
    ],
    ids=["default", "top2_last", "max_template", "every_3_steps"],
)
def test_model_checkpoint_parity(PL, TL, tmp_path, kwargs):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        cb = L.callbacks.ModelCheckpoint(**kwargs)
        _fit(L, tmp_path / sub, [cb], module_kw=dict(forced=FORCED_VAL))
        got.append(_ckpt_summary(cb, tmp_path / sub))
    assert got[0] == got[1]
    assert got[0]["files"]


def test_early_stopping_parity(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        es = L.callbacks.EarlyStopping(monitor="forced", patience=2)
        trainer, _ = _fit(L, tmp_path / sub, [es], max_epochs=7, module_kw=dict(forced=FORCED_VAL))
        got.append((es.stopped_epoch, es.wait_count, float(es.best_score), trainer.current_epoch, trainer.global_step))
    assert got[0] == got[1]
    assert got[0][0] == 5  # 0.5 at epoch 3, then 0.7 and 0.9 do not improve


def _csv(root):
    path = os.path.join(root, "run", "version_0", "metrics.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    return header, rows


def test_csv_logger_parity(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        _fit(L, tmp_path / sub, [], max_epochs=2)
        got.append(_csv(tmp_path / sub))
    (h_pl, rows_pl), (h_ours, rows_ours) = got
    assert h_ours == h_pl
    assert [r["step"] for r in rows_ours] == [r["step"] for r in rows_pl]
    assert [r["epoch"] for r in rows_ours] == [r["epoch"] for r in rows_pl]
    for a, b in zip(rows_pl, rows_ours):
        for key in h_pl:
            if a[key] and key not in ("step", "epoch"):
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-7), key
            else:
                assert a[key] == b[key], key


def test_lr_monitor_parity(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        cb = L.callbacks.LearningRateMonitor(log_momentum=True)
        _fit(L, tmp_path / sub, [cb], max_epochs=2, module_kw=dict(scheduler=True))
        header, rows = _csv(tmp_path / sub)
        got.append((header, [(r["step"], r["lr-SGD"], r["lr-SGD-momentum"]) for r in rows if r["lr-SGD"]], cb.lrs))
    assert got[0] == got[1]


def test_default_logger_and_checkpoint_layout(PL, TL, tmp_path):
    import tensorboard  # noqa: F401  (test extra: a missing package fails)
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        trainer, _ = _fit(L, tmp_path / sub, None, logger=True, max_epochs=2, enable_checkpointing=True)
        got.append((_tree(tmp_path / sub), os.path.relpath(trainer.log_dir, tmp_path / sub)))
    assert got[0] == got[1]
    assert "lightning_logs/version_0/checkpoints/epoch=1-step=4.ckpt" in got[0][0]


def test_tqdm_progress_bar_and_summary(PL, TL, tmp_path, capsys):
    # Explicit callbacks: with `rich` installed, Lightning's defaults are RichProgressBar/RichModelSummary.
    outputs = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        bar = L.callbacks.TQDMProgressBar()
        trainer, _ = _fit(L, tmp_path / sub, [bar, L.callbacks.ModelSummary()], logger=False, max_epochs=1,
                          enable_progress_bar=True, enable_model_summary=True, enable_checkpointing=False)
        assert trainer.progress_bar_callback is bar
        outputs.append((bar.train_progress_bar.n, bar.train_progress_bar.desc, sorted(bar.train_progress_bar.postfix.split(", "))))  # noqa: E501
        out = capsys.readouterr().out
        assert "Epoch 0" in out
    assert outputs[0][:2] == outputs[1][:2]
    assert [p.split("=")[0] for p in outputs[0][2]] == [p.split("=")[0] for p in outputs[1][2]]


def test_lambda_and_timer(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        epochs = []
        lam = L.callbacks.LambdaCallback(on_train_epoch_end=lambda trainer, module: epochs.append(trainer.current_epoch))
        timer = L.callbacks.Timer(duration=dict(days=1))
        trainer, _ = _fit(L, tmp_path / sub, [lam, timer], max_epochs=2)
        got.append(epochs)
        assert timer.time_elapsed("train") > 0 and timer.time_remaining() > 0
    assert got[0] == got[1] == [0, 1]


def test_timer_zero_duration_stops_after_first_step(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        trainer, _ = _fit(L, tmp_path / sub, [L.callbacks.Timer(duration=dict(seconds=0))], max_epochs=3)
        got.append((trainer.global_step, trainer.current_epoch))
    assert got[0] == got[1]


def test_resume_restores_checkpoint_and_early_stopping_state(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        root = tmp_path / sub
        mc = L.callbacks.ModelCheckpoint(monitor="forced", save_top_k=2, save_last=True)
        es = L.callbacks.EarlyStopping(monitor="forced", patience=3)
        _fit(L, root, [mc, es], max_epochs=2, module_kw=dict(forced=FORCED_VAL))
        ckpt = torch.load(mc.last_model_path, weights_only=False)
        keys = sorted(ckpt["callbacks"])
        mc2 = L.callbacks.ModelCheckpoint(monitor="forced", save_top_k=2, save_last=True)
        es2 = L.callbacks.EarlyStopping(monitor="forced", patience=3)
        _fit(L, root, [mc2, es2], max_epochs=4, module_kw=dict(forced=FORCED_VAL), ckpt_path=mc.last_model_path)
        got.append((keys, _ckpt_summary(mc2, root), es2.wait_count, float(es2.best_score)))
    assert got[0] == got[1]


def test_save_on_exception(PL, TL, tmp_path):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        class Boom(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 3:
                    raise RuntimeError("boom")

        mc = L.callbacks.ModelCheckpoint(save_on_exception=True, save_last=True)
        with pytest.raises(RuntimeError, match="boom"):
            _fit(L, tmp_path / sub, [Boom(), mc], max_epochs=3)
        got.append(_tree(mc.dirpath))
    assert got[0] == got[1] and got[0]


@pytest.mark.parametrize("val_check_interval", [0.5, 1])
def test_mid_epoch_validation_checkpoints(PL, TL, tmp_path, val_check_interval):
    got = []
    for L, sub in ((PL, "pl"), (TL, "ours")):
        mc = L.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=-1)
        es = L.callbacks.EarlyStopping(monitor="val_loss", patience=100)
        _fit(L, tmp_path / sub, [mc, es], max_epochs=2, val_check_interval=val_check_interval, limit_train_batches=4)
        got.append((_ckpt_summary(mc, tmp_path / sub)["files"], es._check_on_train_epoch_end))
    assert got[0] == got[1]
