"""Paths that are URLs (issue 18, item 6): ``ModelCheckpoint(dirpath=...)``, ``CSVLogger(save_dir=...)``
and ``ckpt_path`` on fsspec filesystems (``memory://`` here; ``s3://`` where s3fs is installed), and
checkpoints read from ``http://``, as Lightning does through fsspec. Local writes stay atomic.

Each test runs the same script under pytorch-lightning 2.6.6 (asserted first) and under `trainer`,
each in its own ``memory://`` root, and compares the files written and what was restored.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
import uuid
from types import ModuleType
from typing import Any, Dict, List

import fsspec
import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

FRAMEWORKS = ("lightning", "trainer")


def _memory_root(name: str) -> str:
    return f"memory://{name}-{uuid.uuid4().hex[:8]}"


def _listing(root: str) -> List[str]:
    fs, path = fsspec.core.url_to_fs(root)
    return sorted(p[len(path):].lstrip("/") for p in fs.find(path))


def _kwargs(tmp_path, **kw: Any) -> dict:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return base


def _run_on_memory(L: ModuleType, tmp_path) -> Dict[str, Any]:
    root = _memory_root(L.__name__)
    model = boring_model_class(L)(n=8)
    chk = L.callbacks.ModelCheckpoint(dirpath=f"{root}/ckpts", save_last=True, save_top_k=2, monitor="val_loss",
                                      every_n_epochs=1)

    class Logs(boring_model_class(L)):
        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

    model = Logs(n=8)
    logger = L.loggers.CSVLogger(save_dir=f"{root}/logs", name="exp")
    trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=3, enable_checkpointing=True, logger=logger,
                                  log_every_n_steps=1, num_sanity_val_steps=0), callbacks=[chk])
    trainer.fit(model)
    files = _listing(root)
    fs, _ = fsspec.core.url_to_fs(root)
    with fs.open(f"{root}/logs/exp/version_0/metrics.csv") as f:
        header = f.readline().decode().strip().split(",")

    resumed = Logs(n=8)
    trainer2 = L.Trainer(**_kwargs(tmp_path, max_epochs=4, enable_checkpointing=False, logger=False,
                                   num_sanity_val_steps=0))
    trainer2.fit(resumed, ckpt_path=chk.last_model_path)
    best_loaded = type(model).load_from_checkpoint(chk.best_model_path, n=8)
    return dict(
        files=files,
        header=header,
        last=chk.last_model_path[len(root):],
        best_in_dir=chk.best_model_path.startswith(f"{root}/ckpts/"),
        best_k=len(chk.best_k_models),
        resumed_epoch=trainer2.current_epoch,
        resumed_step=trainer2.global_step,
        best_loads=type(best_loaded).__name__,
        version_next=L.loggers.CSVLogger(save_dir=f"{root}/logs", name="exp").version,
        log_dir=logger.log_dir[len(root):],
    )


def test_checkpoints_logs_and_resume_on_memory_urls(tmp_path):
    got = {name: _run_on_memory(import_framework(name), tmp_path) for name in FRAMEWORKS}
    lightning = got["lightning"]
    assert "ckpts/last.ckpt" in lightning["files"]
    assert "logs/exp/version_0/metrics.csv" in lightning["files"]
    assert sum(f.startswith("ckpts/epoch=") for f in lightning["files"]) == 2  # save_top_k=2 removed one
    assert lightning["last"] == "/ckpts/last.ckpt"
    assert (lightning["resumed_epoch"], lightning["version_next"]) == (4, 1)
    assert got["trainer"] == lightning


def test_ckpt_path_last_finds_the_file_on_a_url(tmp_path):
    def run(L):
        root = _memory_root(L.__name__)
        chk = L.callbacks.ModelCheckpoint(dirpath=f"{root}/ckpts", save_last=True)
        model = boring_model_class(L)(n=8)
        L.Trainer(**_kwargs(tmp_path, max_epochs=1, enable_checkpointing=True), callbacks=[chk]).fit(model)
        chk2 = L.callbacks.ModelCheckpoint(dirpath=f"{root}/ckpts", save_last=True)
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=2, enable_checkpointing=True), callbacks=[chk2])
        trainer.fit(model, ckpt_path="last")
        return trainer.current_epoch, trainer.global_step  # 2 epochs of 2 steps: the first came from last.ckpt

    got = {name: run(import_framework(name)) for name in FRAMEWORKS}
    assert got["lightning"] == (2, 4)
    assert got["trainer"] == got["lightning"]


def test_missing_checkpoint_on_a_url_raises_file_not_found(tmp_path):
    def run(L):
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=1))
        try:
            trainer.fit(boring_model_class(L)(n=8), ckpt_path=f"{_memory_root('missing')}/nope.ckpt")
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return None

    got = {name: run(import_framework(name)) for name in FRAMEWORKS}
    assert got["lightning"] == "FileNotFoundError"
    assert got["trainer"] == got["lightning"]


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over ``tmp_path / "www"`` (no network needed)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ckpt_path_over_http(tmp_path, http_root, monkeypatch):
    www, url = http_root
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # Lightning downloads through torch.hub

    def run(L):
        model = boring_model_class(L)(n=8)
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=1))
        trainer.fit(model)
        name = f"{L.__name__}.ckpt"
        trainer.save_checkpoint(str(www / name))
        resumed = boring_model_class(L)(n=8, seed=5)
        trainer2 = L.Trainer(**_kwargs(tmp_path, max_epochs=2))
        trainer2.fit(resumed, ckpt_path=f"{url}/{name}")
        loaded = type(model).load_from_checkpoint(f"{url}/{name}")
        return (trainer2.current_epoch, trainer2.global_step,
                torch.equal(loaded.layer.weight, model.layer.weight))

    got = {name: run(import_framework(name)) for name in FRAMEWORKS}
    assert got["lightning"] == (2, 4, True)
    assert got["trainer"] == got["lightning"]


def test_http_checkpoint_cannot_be_written(tmp_path):
    from trainer.checkpoint import atomic_save

    with pytest.raises(ValueError, match="read-only"):
        atomic_save({"v": 1}, "http://127.0.0.1:9/x.ckpt")


def test_local_save_stays_atomic_on_a_crash(tmp_path, monkeypatch):
    """A local checkpoint is written beside and renamed: a write that dies leaves the last good file whole,
    and no fsspec path is taken for it."""
    from trainer import checkpoint as ckpt_mod

    path = tmp_path / "a.ckpt"
    ckpt_mod.atomic_save({"v": 1}, path)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    monkeypatch.setattr(ckpt_mod.cloud_io, "write_bytes_remote", lambda *a: pytest.fail("local path went remote"))
    with pytest.raises(OSError):
        ckpt_mod.atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["a.ckpt"]  # the temporary file is cleaned up


def test_s3_checkpoint_dir_when_s3fs_is_installed(tmp_path):
    """``s3://`` reaches s3fs through the same code path as ``memory://`` (only the filesystem differs)."""
    pytest.importorskip("s3fs")
    from trainer.cloud_io import get_filesystem, is_local_path

    assert not is_local_path("s3://bucket/ckpts")
    assert type(get_filesystem("s3://bucket/ckpts")).__name__ == "S3FileSystem"
