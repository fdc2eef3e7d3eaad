"""OnExceptionCheckpoint: an exception in training_step leaves ``dirpath/filename.ckpt`` with the state at the
failure (same global_step/epoch/weights as pytorch-lightning's file), loadable and resumable; a run that ends
normally leaves no file."""
from __future__ import annotations

import os

import pytest
import torch
from helpers import compiled_engine, make_loader, mlp_module_class, quiet_trainer_kwargs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

FAIL_AT = 6  # 4 batches an epoch: fails at epoch 1, batch 2, after 6 optimizer steps


def _kwargs(root):
    # a Checkpoint callback needs enable_checkpointing=True (it then replaces the default ModelCheckpoint)
    return {**quiet_trainer_kwargs(root), "enable_checkpointing": True}


def _callbacks(L):
    return __import__(f"{L.__name__}.callbacks", fromlist=["OnExceptionCheckpoint"])


def _failing_module(L):
    class Failing(mlp_module_class(L)):
        def training_step(self, batch, batch_idx):
            if self.trainer.global_step == FAIL_AT:
                raise RuntimeError("boom in training_step")
            return super().training_step(batch, batch_idx)

    return Failing


def _fail(L, root):
    cb = _callbacks(L).OnExceptionCheckpoint(str(root), filename="crash")
    trainer = L.Trainer(max_epochs=3, callbacks=[cb], **_kwargs(root))
    model = _failing_module(L)()
    with pytest.raises(RuntimeError, match="boom in training_step"):
        trainer.fit(model, make_loader(16, 4))
    return cb, trainer, model


def test_arguments(L):
    C = _callbacks(L)
    with pytest.raises(ValueError, match="The filename cannot be empty"):
        C.OnExceptionCheckpoint(".", filename="")
    cb = C.OnExceptionCheckpoint("some/dir")
    assert cb.ckpt_path == os.path.join("some/dir", "on_exception.ckpt")
    assert isinstance(cb, C.Checkpoint)


@pytest.mark.parity
def test_exception_leaves_checkpoint_like_lightning(TL, PL, tmp_path):
    ours_cb, ours_trainer, ours_model = _fail(TL, tmp_path / "tl")
    ref_cb, _, _ = _fail(PL, tmp_path / "pl")
    assert ours_cb.ckpt_path == str(tmp_path / "tl" / "crash.ckpt")
    assert os.path.isfile(ours_cb.ckpt_path) and os.path.isfile(ref_cb.ckpt_path)
    ours = torch.load(ours_cb.ckpt_path, weights_only=False)
    ref = torch.load(ref_cb.ckpt_path, weights_only=False)
    assert ours["global_step"] == ref["global_step"] == FAIL_AT
    assert ours["epoch"] == ref["epoch"] == 1
    assert ours["state_dict"].keys() == ref["state_dict"].keys()
    for k in ref["state_dict"]:
        assert torch.allclose(ours["state_dict"][k], ref["state_dict"][k], rtol=1e-6, atol=1e-7 if compiled_engine() else 0), k
    assert len(ours["optimizer_states"]) == len(ref["optimizer_states"]) == 1
    # the file holds the weights at the failure
    for k, v in ours_model.state_dict().items():
        assert torch.equal(ours["state_dict"][k], v), k
    # loadable (Lightning-side loading is covered by tests/test_checkpoint_interchange.py)
    loaded = mlp_module_class(TL).load_from_checkpoint(ours_cb.ckpt_path)
    for k, v in ours_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_resume_from_exception_checkpoint(L, tmp_path):
    cb, _, _ = _fail(L, tmp_path)
    trainer = L.Trainer(max_epochs=3, **quiet_trainer_kwargs(tmp_path))
    trainer.fit(mlp_module_class(L)(), make_loader(16, 4), ckpt_path=cb.ckpt_path)
    assert trainer.current_epoch == 3
    assert trainer.global_step == 12  # resumed at 6 (epoch 1, batch 2): 3 epochs of 4 batches in all


def test_no_file_after_a_clean_run(L, tmp_path):
    cb = _callbacks(L).OnExceptionCheckpoint(str(tmp_path), filename="crash")
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], **_kwargs(tmp_path))
    trainer.fit(mlp_module_class(L)(), make_loader(8, 4))
    assert not os.path.exists(cb.ckpt_path)
