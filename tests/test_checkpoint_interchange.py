"""Checkpoints move both ways between `trainer` and pytorch-lightning 2.6.6.

(a) a file written by our ``Trainer.save_checkpoint``/``ModelCheckpoint`` loads with Lightning's
    ``load_from_checkpoint`` (hyper-parameters restored) and resumes with Lightning's ``Trainer.fit(ckpt_path=...)``
    to the weights of our uninterrupted run;
(b) a Lightning-written file loads with our ``load_from_checkpoint`` and resumes with our ``Trainer.fit`` the same;
(c) a truncated file, or one whose keys/shapes do not fit, raises an error naming the file, and nothing is written.

End-of-epoch checkpoints only (mid-epoch resume is tested elsewhere). Same module code under both frameworks; SGD
with momentum and a StepLR scheduler so optimizer and scheduler state must travel too.
"""
from __future__ import annotations

import functools
import os
from types import ModuleType

import pytest
import torch
from helpers import make_loader, mlp_module_class

from trainer.checkpoint import CheckpointError

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

EPOCHS = 3  # uninterrupted length; resumes start from the end of epoch 0


@functools.lru_cache(maxsize=None)
def _net(L: ModuleType) -> type:
    class Net(mlp_module_class(L)):
        def __init__(self, lr: float = 0.1, hidden: int = 8, seed: int = 0, gamma: float = 0.5):
            super().__init__(lr=lr, seed=seed, hidden=hidden)
            self.save_hyperparameters()

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(batch))

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=self.hparams.gamma)]

    return Net


def _trainer(L: ModuleType, root, max_epochs: int, every_epoch: bool = True):
    callbacks = __import__(f"{L.__name__}.callbacks", fromlist=["ModelCheckpoint"])
    ckpt = callbacks.ModelCheckpoint(dirpath=str(root), filename="{epoch}", save_top_k=-1) if every_epoch else None
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0,
        callbacks=[ckpt] if ckpt else None, enable_checkpointing=every_epoch,
    )


def _fit(L: ModuleType, root, max_epochs: int = EPOCHS, ckpt_path=None, model=None, every_epoch: bool = True):
    model = model if model is not None else _net(L)(lr=0.2, hidden=6, gamma=0.7)
    trainer = _trainer(L, root, max_epochs, every_epoch)
    trainer.fit(model, make_loader(16, 4), make_loader(8, 4, seed=1), ckpt_path=ckpt_path)
    return model, trainer


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype == torch.float32, k
        assert torch.allclose(sa[k], sb[k], rtol=1e-6, atol=1e-7), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs of both frameworks, with a checkpoint at every epoch end and a final save_checkpoint."""
    import pytorch_lightning as PL

    import trainer as TL

    out = {}
    for L in (TL, PL):
        root = tmp_path_factory.mktemp(L.__name__)
        model, trainer = _fit(L, root)
        trainer.save_checkpoint(str(root / "final.ckpt"))
        out[L.__name__] = (root, model, trainer)
    return out


def test_uninterrupted_runs_agree(runs):
    _, ours, ours_trainer = runs["trainer"]
    _, ref, ref_trainer = runs["pytorch_lightning"]
    _assert_same_weights(ours, ref)
    assert ours_trainer.global_step == ref_trainer.global_step == EPOCHS * 4
    assert sorted(os.listdir(runs["trainer"][0])) == sorted(os.listdir(runs["pytorch_lightning"][0]))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_file_layout_matches_lightning(runs):
    """Same top-level keys (ours adds only ``trainer_resume``), callback state keys and fit-loop counters."""
    for name in ("epoch=0.ckpt", "epoch=2.ckpt", "final.ckpt"):
        ours = torch.load(runs["trainer"][0] / name, weights_only=True)  # Lightning's default loader must accept it
        ref = torch.load(runs["pytorch_lightning"][0] / name, weights_only=True)
        assert set(ours) - set(ref) <= {"trainer_resume"} and set(ref) <= set(ours)
        assert ours["callbacks"].keys() == ref["callbacks"].keys()
        assert _flat(ours["loops"]["fit_loop"]) == _flat(ref["loops"]["fit_loop"])
        assert (ours["epoch"], ours["global_step"]) == (ref["epoch"], ref["global_step"])
        assert ours["hyper_parameters"] == ref["hyper_parameters"]
        assert ours["lr_schedulers"] == ref["lr_schedulers"]


# ------------------------------------------------------------------------------------------ (a) ours -> Lightning


def test_ours_loads_with_lightning_load_from_checkpoint(runs):
    import pytorch_lightning as PL

    root, ours, _ = runs["trainer"]
    for name in ("epoch=2.ckpt", "final.ckpt"):
        loaded = _net(PL).load_from_checkpoint(str(root / name))
        assert dict(loaded.hparams) == {"lr": 0.2, "hidden": 6, "seed": 0, "gamma": 0.7}
        _assert_same_weights(loaded, ours)


def test_ours_resumes_with_lightning_fit(runs, tmp_path):
    import pytorch_lightning as PL

    root, ours, ours_trainer = runs["trainer"]
    ckpt = str(root / "epoch=0.ckpt")
    before = open(ckpt, "rb").read()
    resumed, trainer = _fit(PL, tmp_path, ckpt_path=ckpt, model=_net(PL)(lr=0.2, hidden=6, gamma=0.7))
    assert trainer.global_step == ours_trainer.global_step
    assert trainer.current_epoch == EPOCHS
    _assert_same_weights(resumed, ours)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == EPOCHS
    assert open(ckpt, "rb").read() == before  # the source file is only read


# ------------------------------------------------------------------------------------------ (b) Lightning -> ours


def test_lightning_file_loads_with_our_load_from_checkpoint(runs):
    import trainer as TL

    root, ref, _ = runs["pytorch_lightning"]
    for name in ("epoch=2.ckpt", "final.ckpt"):
        loaded = _net(TL).load_from_checkpoint(str(root / name))
        assert dict(loaded.hparams) == {"lr": 0.2, "hidden": 6, "seed": 0, "gamma": 0.7}
        _assert_same_weights(loaded, ref)


def test_lightning_file_resumes_with_our_fit(runs, tmp_path):
    import trainer as TL

    root, ref, ref_trainer = runs["pytorch_lightning"]
    _, ours, _ = runs["trainer"]
    resumed, trainer = _fit(TL, tmp_path, ckpt_path=str(root / "epoch=0.ckpt"),
                            model=_net(TL)(lr=0.2, hidden=6, gamma=0.7))
    assert trainer.global_step == ref_trainer.global_step
    assert trainer.current_epoch == EPOCHS
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == EPOCHS
    _assert_same_weights(resumed, ref)
    _assert_same_weights(resumed, ours)
    # the resumed run writes the remaining epochs' files, the same bytes-level content keys as Lightning's
    assert sorted(os.listdir(tmp_path)) == ["epoch=1.ckpt", "epoch=2.ckpt"]
    ours_file = torch.load(tmp_path / "epoch=2.ckpt", weights_only=False)
    ref_file = torch.load(root / "epoch=2.ckpt", weights_only=False)
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks",
            "hyper_parameters"} <= ours_file.keys()
    assert (ours_file["epoch"], ours_file["global_step"]) == (ref_file["epoch"], ref_file["global_step"])
    assert ours_file["lr_schedulers"] == ref_file["lr_schedulers"]


def test_final_checkpoint_resumes_further_both_ways(runs, tmp_path):
    """A checkpoint written after fit (``Trainer.save_checkpoint``) continues to more epochs in the other
    framework exactly like in its own."""
    import pytorch_lightning as PL

    import trainer as TL

    results = {}
    for writer, reader in (("trainer", PL), ("pytorch_lightning", TL), ("trainer", TL)):
        path = str(runs[writer][0] / "final.ckpt")
        model, trainer = _fit(reader, tmp_path / f"{writer}-{reader.__name__}", max_epochs=EPOCHS + 1,
                              ckpt_path=path, model=_net(reader)(lr=0.2, hidden=6, gamma=0.7), every_epoch=False)
        assert trainer.global_step == (EPOCHS + 1) * 4
        results[(writer, reader.__name__)] = model
    models = list(results.values())
    for other in models[1:]:
        _assert_same_weights(models[0], other)


# ------------------------------------------------------------------------------------------ (c) bad files


def _snapshot(folder) -> dict:
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))}


@pytest.fixture
def bad_files(runs, tmp_path):
    import trainer as TL
    from trainer.checkpoint import atomic_save

    src = runs["trainer"][0] / "epoch=0.ckpt"
    folder = tmp_path / "ckpts"
    folder.mkdir()
    data = open(src, "rb").read()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    ckpt = torch.load(src, weights_only=False)
    renamed = dict(ckpt, state_dict={k.replace("net.", "body."): v for k, v in ckpt["state_dict"].items()})
    atomic_save(renamed, folder / "wrong_keys.ckpt")
    other = _net(TL)(hidden=5)
    reshaped = dict(ckpt, state_dict=other.state_dict())  # hparams still say hidden=6
    atomic_save(reshaped, folder / "wrong_shapes.ckpt")
    return folder


@pytest.mark.parametrize("name", ["truncated.ckpt", "wrong_keys.ckpt", "wrong_shapes.ckpt"])
def test_bad_file_fit_raises_naming_the_file_and_writes_nothing(bad_files, tmp_path, name):
    import trainer as TL

    path = str(bad_files / name)
    model = _net(TL)(lr=0.2, hidden=6, gamma=0.7)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = _snapshot(bad_files)
    trainer = _trainer(TL, bad_files, EPOCHS)  # its ModelCheckpoint writes into the same folder
    with pytest.raises(CheckpointError) as info:
        trainer.fit(model, make_loader(16, 4), make_loader(8, 4, seed=1), ckpt_path=path)
    assert path in str(info.value)
    assert trainer.global_step == 0
    assert _snapshot(bad_files) == before  # no file replaced, none added
    if name == "truncated.ckpt":  # nothing was read: the module is untouched
        for k, v in model.state_dict().items():
            assert torch.equal(v, weights[k]), k


@pytest.mark.parametrize("name", ["truncated.ckpt", "wrong_keys.ckpt", "wrong_shapes.ckpt"])
def test_bad_file_load_from_checkpoint_raises_naming_the_file(bad_files, name):
    import trainer as TL

    path = str(bad_files / name)
    before = _snapshot(bad_files)
    with pytest.raises(RuntimeError) as info:  # CheckpointError is a RuntimeError
        _net(TL).load_from_checkpoint(path)
    assert _snapshot(bad_files) == before
    assert path in str(info.value)
