"""Checkpoint and resume under the compiled engine: a run resumed from a mid-training checkpoint
ends with the weights and optimizer state of the uninterrupted compiled run."""
from __future__ import annotations

import os

import pytest
import torch

import trainer as L
from trainer.callbacks import Callback, ModelCheckpoint

from .models import MLP, max_rel_diff


class SaveAt(Callback):
    """Writes a checkpoint after training batch ``batch`` of epoch 0 (mid accumulation window if k > 1)."""

    def __init__(self, path: str, batch: int) -> None:
        self.path, self.batch = path, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            trainer.save_checkpoint(self.path)


def _trainer(root, callbacks=(), **kw):
    return L.Trainer(max_epochs=2, compile=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=root, callbacks=list(callbacks), **kw)


def _assert_resumed_equals_uninterrupted(full, resumed):
    assert resumed.compile_report.mode == "full" and resumed.compile_report.fallback_reason is None
    assert resumed.global_step == full.global_step
    assert max_rel_diff(resumed.lightning_module, full.lightning_module) < 1e-6
    sf, sr = full.optimizers[0].state_dict(), resumed.optimizers[0].state_dict()
    assert sf["param_groups"] == sr["param_groups"]
    for i, st in sf["state"].items():
        assert st.keys() == sr["state"][i].keys()
        for k, v in st.items():
            torch.testing.assert_close(sr["state"][i][k], v, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opt, k, save_batch", [("adamw", 1, None), ("sgd", 3, 4)], ids=["adamw_step_ckpt",
                                                                                        "sgd_accum3_mid_window"])
def test_resume_matches_uninterrupted(tmp_path, opt, k, save_batch):
    root = str(tmp_path)
    if save_batch is None:  # Lightning's step checkpoint: written after global step 3
        ckpt_cb = ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1, filename="{step}")
        cbs, ckpt = [ckpt_cb], os.path.join(root, "step=3.ckpt")
    else:  # after batch 4 of a k=3 window (batches 3, 4, 5): one micro-batch accumulated; the
        # validation after batch 2 set .grad to None (on_validation_model_zero_grad) before it
        ckpt = os.path.join(root, "mid.ckpt")
        cbs = [SaveAt(ckpt, save_batch)]
    from .test_eval import EvalMLP

    model_cls = MLP if save_batch is None else EvalMLP
    extra = {} if save_batch is None else dict(val_check_interval=3)
    full = _trainer(root, cbs, accumulate_grad_batches=k, enable_checkpointing=save_batch is None, **extra)
    full.fit(model_cls(opt=opt, sched="step"))
    assert os.path.exists(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    # the optimizer state in the file is torch.optim's own format
    ref = MLP(opt=opt).configure_optimizers()
    ref = ref["optimizer"] if isinstance(ref, dict) else ref
    st = saved["optimizer_states"][0]
    assert set(ref.state_dict()["param_groups"][0]) <= set(st["param_groups"][0])  # (+ the scheduler's initial_lr)
    if opt == "adamw":
        assert set(st["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
        assert st["state"][0]["step"].dtype == torch.float32 and st["state"][0]["step"].ndim == 0
        assert st["state"][0]["step"].item() == 3
        ref.load_state_dict(st)  # loads into a plain torch.optim.AdamW
    if save_batch is not None:
        assert all(g is not None for g in saved["trainer_resume"]["accumulated_grads"])  # the window is saved
    resumed = _trainer(root, accumulate_grad_batches=k, enable_checkpointing=False, **extra)
    resumed.fit(model_cls(opt=opt, sched="step"), ckpt_path=ckpt)
    _assert_resumed_equals_uninterrupted(full, resumed)


def test_accumulation_schedule_and_mid_window_validation_match_eager(tmp_path):
    """k changes at epoch 1 (GradientAccumulationScheduler) and validation runs inside windows
    (Lightning zeroes .grad before it, dropping the window's first micro-batches): as in eager."""
    from trainer.callbacks import GradientAccumulationScheduler

    from .test_eval import EvalMLP

    runs = {}
    for compile in (False, True):
        model = EvalMLP()
        trainer = L.Trainer(max_epochs=2, compile=compile, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            val_check_interval=3, default_root_dir=str(tmp_path),
                            callbacks=[GradientAccumulationScheduler({0: 2, 1: 3})])
        trainer.fit(model)
        runs[compile] = trainer
    eager, compiled = runs[False], runs[True]
    assert compiled.compile_report.mode == "full" and compiled.compile_report.fallback_reason is None
    assert compiled.global_step == eager.global_step
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-5
