"""Checkpoint files: atomic writes, clear errors on bad files, and restore checks."""
from __future__ import annotations

import os
import stat

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, quiet_trainer_kwargs
from torch import nn

import trainer as TL
from trainer.checkpoint import CheckpointError, atomic_save, load_checkpoint_file


def _linear(o=2):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(8, o)


class Net(TL.LightningModule):
    def __init__(self, width=2):
        super().__init__()
        self.layer = _linear(width)

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.layer(batch[0]).sum(1, keepdim=True), batch[1][:, :1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return make_loader(8, 4)


def _fit(tmp_path, model, ckpt_path=None, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(max_epochs=1)
    args.update(kw)
    t = TL.Trainer(**args)
    t.fit(model, ckpt_path=ckpt_path)
    return t


# ----------------------------------------------------------------------------- atomic_save
def test_atomic_save_roundtrip(tmp_path):
    path = tmp_path / "sub" / "a.ckpt"
    atomic_save({"x": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]  # no temp file left


def test_atomic_save_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    atomic_save({"v": 1}, path)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="a.ckpt"):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_atomic_save_keeps_old_file_when_serialization_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    atomic_save({"v": 1}, path)

    def bad_save(*a, **k):
        raise RuntimeError("pickling failed")

    monkeypatch.setattr(torch, "save", bad_save)
    with pytest.raises(RuntimeError, match="pickling failed"):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_atomic_save_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "a.ckpt"
    atomic_save({"v": 1}, path)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OSError, match="a.ckpt"):
            atomic_save({"v": 2}, path)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert torch.load(path) == {"v": 1}


def test_atomic_save_unwritable_destination_names_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Could not write checkpoint") as info:
        atomic_save({"v": 1}, blocker / "a.ckpt")
    assert str(blocker / "a.ckpt") in str(info.value)


def test_trainer_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    model = Net()
    t = _fit(tmp_path, model)
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="m.ckpt"):
        t.save_checkpoint(path)
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- loading
def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint_file(tmp_path / "nope.ckpt")


def test_load_truncated_file(tmp_path):
    path = tmp_path / "t.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(100)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.ckpt"):
        load_checkpoint_file(path)


def test_load_garbage_and_non_dict(tmp_path):
    (tmp_path / "g.ckpt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="g.ckpt"):
        load_checkpoint_file(tmp_path / "g.ckpt")
    torch.save([1, 2], tmp_path / "l.ckpt")
    with pytest.raises(CheckpointError, match="l.ckpt"):
        load_checkpoint_file(tmp_path / "l.ckpt")


def test_fit_with_corrupt_checkpoint_raises_checkpoint_error(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        _fit(tmp_path, Net(), ckpt_path=str(tmp_path / "bad.ckpt"))


def test_load_from_checkpoint_corrupt(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"nonsense")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        Net.load_from_checkpoint(str(tmp_path / "bad.ckpt"))


def test_resume_with_mismatched_state_dict(tmp_path):
    t = _fit(tmp_path, Net(width=2))
    t.save_checkpoint(tmp_path / "w2.ckpt")
    with pytest.raises(CheckpointError, match="w2.ckpt"):
        _fit(tmp_path, Net(width=3), ckpt_path=str(tmp_path / "w2.ckpt"), max_epochs=2)


def test_resume_with_missing_keys(tmp_path):
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 8)}, "loops": {}}, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match="partial.ckpt"):
        _fit(tmp_path, Net(), ckpt_path=str(tmp_path / "partial.ckpt"))


def test_resume_without_state_dict_key(tmp_path):
    torch.save({"epoch": 0}, tmp_path / "nostate.ckpt")
    with pytest.raises(CheckpointError, match="state_dict"):
        _fit(tmp_path, Net(), ckpt_path=str(tmp_path / "nostate.ckpt"))


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    t = _fit(tmp_path, Net())
    t.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(CheckpointError, match="weights"):
        _fit(tmp_path, Net(), ckpt_path=str(tmp_path / "w.ckpt"), max_epochs=2)
    # but it loads for evaluation and into a module
    loaded = Net.load_from_checkpoint(str(tmp_path / "w.ckpt"))
    assert torch.equal(loaded.layer.weight, t.lightning_module.layer.weight)


def test_optimizer_count_mismatch(tmp_path):
    t = _fit(tmp_path, Net())
    t.save_checkpoint(tmp_path / "o.ckpt")
    ckpt = torch.load(tmp_path / "o.ckpt", weights_only=False)
    ckpt["optimizer_states"] = ckpt["optimizer_states"] * 2
    torch.save(ckpt, tmp_path / "o2.ckpt")
    with pytest.raises(CheckpointError, match="optimizer"):
        _fit(tmp_path, Net(), ckpt_path=str(tmp_path / "o2.ckpt"), max_epochs=2)


def test_strict_loading_false_allows_partial(tmp_path):
    class Loose(Net):
        def __init__(self):
            super().__init__()
            self.register_buffer("extra", torch.zeros(1))  # not in the checkpoint
            self.strict_loading = False

    t = _fit(tmp_path, Net())
    t.save_checkpoint(tmp_path / "n.ckpt")
    model = Loose()
    t2 = _fit(tmp_path, model, ckpt_path=str(tmp_path / "n.ckpt"), max_epochs=2)
    assert t2.global_step == 4


def test_on_save_and_on_load_checkpoint_hooks(tmp_path):
    class Hooked(Net):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["mine"] = 7

        def on_load_checkpoint(self, checkpoint):
            self.got = checkpoint["mine"]

    t = _fit(tmp_path, Hooked())
    t.save_checkpoint(tmp_path / "h.ckpt")
    assert torch.load(tmp_path / "h.ckpt", weights_only=False)["mine"] == 7
    m = Hooked()
    _fit(tmp_path, m, ckpt_path=str(tmp_path / "h.ckpt"), max_epochs=2)
    assert m.got == 7
    assert Hooked.load_from_checkpoint(str(tmp_path / "h.ckpt")).got == 7


def test_mid_epoch_checkpoint_resumes_at_the_next_batch(tmp_path):
    """Saved in on_train_batch_end: that batch counts as done (as in Lightning), and the run continues
    at the next batch of the same epoch with the same data order. Lightning's warning about a loader
    that cannot restore its position is still given (issue 18), with how this Trainer replays it."""
    class SaveMid(Net):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self.global_step == 1:
                self.trainer.save_checkpoint(tmp_path / "mid.ckpt")

    _fit(tmp_path, SaveMid())
    m = Net()
    from trainer.utilities.warnings import PossibleUserWarning

    with pytest.warns(PossibleUserWarning, match="before the epoch ended.*replaying the epoch's first 1 batch"):
        t = _fit(tmp_path, m, ckpt_path=str(tmp_path / "mid.ckpt"), max_epochs=1)
    assert t.global_step == 2 and t.current_epoch == 1


def test_atomic_save_permission_denied_keeps_old_file(tmp_path, monkeypatch):
    # a read-only folder as seen by a non-root user (root ignores chmod, so fake the refusal)
    import tempfile

    path = tmp_path / "a.ckpt"
    atomic_save({"v": 1}, path)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OSError, match="a.ckpt") as info:
        atomic_save({"v": 2}, path)
    assert info.value.errno == 13
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
