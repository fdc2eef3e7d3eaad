"""Checkpoint files: Lightning's layout, atomic writes, clear errors on bad files, and restore.

A local write goes to a temporary file in the destination folder, is flushed and fsynced, then
renamed over the destination: a crash or a full disk leaves the previous file intact. A path that
is a URL (``memory://``, ``s3://``, ...) is written through its fsspec filesystem in one
transaction, as Lightning does; ``http(s)://`` checkpoints can be read (``ckpt_path``,
``load_from_checkpoint``), not written.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import torch

from trainer import cloud_io
from trainer.exceptions import MisconfigurationException
from trainer.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"
_COMPAT_VERSION = "2.6.0"  # the Lightning checkpoint format these files follow
# Exact-resume data (RNG states, data position, unfinished accumulation window); Lightning ignores it.
RESUME_KEY = "trainer_resume"


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read, or does not fit the model."""


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically (temp file in the same folder, fsync, rename); a URL through fsspec."""
    path = os.fspath(path)
    if not cloud_io.is_local_path(path):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        cloud_io.write_bytes_remote(buffer.getvalue(), path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
    except OSError as err:
        raise OSError(err.errno, f"Could not write checkpoint {path!r}: {err.strerror or err}") from err


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Reads a checkpoint, raising ``CheckpointError`` naming the file when it is missing or corrupt."""
    path = os.fspath(path)
    local = cloud_io.is_local_path(path)
    if local and not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}")
    source: Any = path
    if not local:
        try:
            source = cloud_io.load_bytes_as_buffer(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"Checkpoint file not found: {path!r}") from None
    try:
        checkpoint = torch.load(source, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, pickle errors, ...
        raise CheckpointError(f"Checkpoint {path!r} is corrupted or not a checkpoint: {err}") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"Checkpoint {path!r} does not hold a dict (found {type(checkpoint).__name__}).")
    return checkpoint


def dump_checkpoint(trainer: "Trainer", weights_only: bool = False) -> Dict[str, Any]:
    """The checkpoint dict, with Lightning's top-level keys so files move both ways."""
    model = trainer.lightning_module
    datamodule = trainer.datamodule
    checkpoint: Dict[str, Any] = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        LIGHTNING_VERSION_KEY: _COMPAT_VERSION,
        "state_dict": trainer.strategy.lightning_module_state_dict(),
        "loops": {
            "fit_loop": trainer.fit_loop.state_dict(),
            "validate_loop": trainer.validate_loop.state_dict(),
            "test_loop": trainer.test_loop.state_dict(),
            "predict_loop": trainer.predict_loop.state_dict(),
        },
    }
    if not weights_only:
        callbacks: Dict[str, Any] = {}
        for cb in trainer.callbacks:
            state = cb.state_dict()
            if state:
                callbacks[cb.state_key] = state
        checkpoint["callbacks"] = callbacks
        checkpoint["optimizer_states"] = [trainer.strategy.optimizer_state(opt) for opt in trainer.optimizers]
        checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
        prec = trainer.precision_plugin
        prec_state = prec.state_dict()
        if prec_state:
            checkpoint[_precision_key(prec)] = prec_state
        if trainer.state.fn == "fit":
            checkpoint[RESUME_KEY] = trainer.fit_loop.resume_state_dict()
    for obj in (model, datamodule):
        if obj is not None and obj.hparams:
            if hasattr(obj, "_hparams_name"):
                checkpoint[obj.CHECKPOINT_HYPER_PARAMS_NAME] = obj._hparams_name
            checkpoint[obj.CHECKPOINT_HYPER_PARAMS_KEY] = dict(obj.hparams)
    if datamodule is not None:
        dm_state = trainer._hooks.call_datamodule("state_dict")  # through the profiler, as Lightning
        if dm_state:
            checkpoint[type(datamodule).__qualname__] = dm_state
    if not weights_only:
        # through the hook caller: profiled, and `self.log` there fails as in Lightning
        trainer._hooks.call_callbacks("on_save_checkpoint", checkpoint)
    trainer._hooks.call_module("on_save_checkpoint", checkpoint)
    return checkpoint


def _precision_key(prec: Any) -> str:
    # Lightning stores the precision plugin's state under its class name ("MixedPrecision")
    return type(prec).__qualname__


def _warn_missing_callbacks(states: Optional[Dict[Any, Any]], callbacks: List[Any]) -> None:
    """Lightning's warning when the checkpoint holds state for callbacks this Trainer was not given (their state
    would be silently dropped)."""
    if not states:
        return
    known = {cb.state_key for cb in callbacks} | {type(cb).__qualname__ for cb in callbacks}
    missing = [key for key in states if key not in known]
    if missing:
        rank_zero_warn(
            "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided during"
            f" `Trainer` instantiation. Please add the following callbacks: {missing}.",
            stacklevel=5,
        )


class CheckpointConnector:
    """Restores a run from ``ckpt_path`` in Lightning's order: modules and callbacks, then training state."""

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self._loaded: Optional[Dict[str, Any]] = None
        self._ckpt_path: Optional[str] = None
        self.restored_loops = False  # this run's loops came from a checkpoint (Lightning then skips the sanity check)

    def select_ckpt_path(self, fn: str, ckpt_path: Optional[PathLike], model_provided: bool, model_connected: bool) -> Optional[str]:  # noqa: E501
        trainer = self.trainer
        if ckpt_path is None:
            if model_provided or not model_connected:
                return None
            ckpt_path = "best"
            from trainer.callbacks.on_exception_checkpoint import OnExceptionCheckpoint

            ft_tip = (
                " There is also an on-exception checkpoint available, however it is used by default only when fitting."
                if any(isinstance(cb, OnExceptionCheckpoint) for cb in trainer.callbacks) else ""
            )
            rank_zero_warn(
                f"`.{fn}(ckpt_path=None)` was called without a model. The best model of the previous `fit` call will"
                f" be used.{ft_tip} You can pass `.{fn}(ckpt_path='best')` to use the best model or"
                f" `.{fn}(ckpt_path='last')` to use the last model. If you pass a value, this warning will be"
                " silenced.",
                stacklevel=5,
            )
        ckpt_path = os.fspath(ckpt_path)
        if ckpt_path in ("best", "last", "hpc", "registry"):
            if ckpt_path in ("hpc", "registry"):
                raise ValueError(f"`ckpt_path={ckpt_path!r}` is not supported by this Trainer.")
            cbs = trainer.checkpoint_callbacks
            if ckpt_path == "best":
                if len(cbs) > 1:
                    import warnings

                    warnings.warn(
                        f'`.{fn}(ckpt_path="best")` is called with Trainer configured with multiple'
                        " `ModelCheckpoint` callbacks. It will use the best checkpoint path from first checkpoint"
                        " callback."
                    )
                if not cbs:
                    raise ValueError(
                        f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.'
                    )
                best = getattr(cbs[0], "best_model_path", "")
                if not best:
                    if trainer.fast_dev_run:
                        raise ValueError(
                            f'You cannot execute `.{fn}(ckpt_path="best")` with `fast_dev_run=True`.'
                            f" Please pass an exact checkpoint path to `.{fn}(ckpt_path=...)`"
                        )
                    raise ValueError(
                        f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured to save the best'
                        " model."
                    )
                return best
            # "last": the newest last*.ckpt in any ModelCheckpoint's folder (Lightning's lookup)
            found = set()
            for cb in cbs:
                if hasattr(cb, "_find_last_checkpoints"):
                    found |= cb._find_last_checkpoints(trainer)
                if getattr(cb, "last_model_path", ""):
                    found.add(cb.last_model_path)
            candidates = [c for c in found if c and cloud_io.exists(c)]
            if not candidates:
                import warnings

                warnings.warn(
                    f'.{fn}(ckpt_path="last") is set, but there is no last checkpoint available.'
                    " No checkpoint will be loaded. HINT: Set `ModelCheckpoint(..., save_last=True)`."
                )
                return None
            return max(candidates, key=cloud_io.modified_time)
        return ckpt_path

    def resume_start(self, ckpt_path: Optional[str]) -> None:
        self._ckpt_path = ckpt_path
        self._loaded = None
        self.restored_loops = False
        if ckpt_path is None:
            return
        rank_zero_info(f"Restoring states from the checkpoint path at {ckpt_path}")
        self._loaded = self.trainer.strategy.load_checkpoint(ckpt_path)

    def restore_modules_and_callbacks(self) -> None:
        ckpt = self._loaded
        if ckpt is None:
            return
        trainer = self.trainer
        model = trainer.lightning_module
        trainer._hooks.call_module("on_load_checkpoint", ckpt)
        if "state_dict" not in ckpt:
            raise CheckpointError(f"Checkpoint {self._ckpt_path!r} has no 'state_dict' key.")
        try:
            trainer.strategy.load_model_state_dict(ckpt["state_dict"], strict=model.strict_loading)
        except RuntimeError as err:
            raise CheckpointError(f"Checkpoint {self._ckpt_path!r} does not fit {type(model).__name__}: {err}") from err
        dm = trainer.datamodule
        if dm is not None:
            key = type(dm).__qualname__
            if key in ckpt:
                trainer._hooks.call_datamodule("load_state_dict", ckpt[key])
        _warn_missing_callbacks(ckpt.get("callbacks"), trainer.callbacks)
        trainer._hooks.call_callbacks("on_load_checkpoint", ckpt)
        states = ckpt.get("callbacks") or {}
        for cb in trainer.callbacks:
            state = states.get(cb.state_key, states.get(type(cb).__qualname__))
            if state:
                cb.load_state_dict(dict(state))

    def restore(self, ckpt_path: PathLike) -> None:
        """Lightning's ``restore``: puts everything ``ckpt_path`` holds back now, in the middle of a call (the
        tuner returns the run to where it was before its trials). The loop counters are restored; this
        Trainer's own resume extras (RNG states, data position) are not, as Lightning restores neither; and
        the compiled step sets up again, since the optimizer's state tensors were replaced."""
        self.resume_start(os.fspath(ckpt_path))
        try:
            self.restore_modules_and_callbacks()
            self.restore_training_state(resume_extras=False)
        finally:
            self.resume_end()
        self.restored_loops = False
        self.trainer.fit_loop.epoch_loop.automatic_optimization.drop_compiled_engine()
        if self.trainer.is_global_zero:
            log.info(f"Restored all states from the checkpoint at {ckpt_path}")

    def restore_training_state(self, resume_extras: bool = True) -> None:
        ckpt = self._loaded
        if ckpt is None:
            return
        trainer = self.trainer
        prec = trainer.precision_plugin
        key = _precision_key(prec)
        if key in ckpt:
            prec.load_state_dict(ckpt[key])
        if trainer.state.fn != "fit":
            return
        if "optimizer_states" not in ckpt or "lr_schedulers" not in ckpt:
            raise CheckpointError(
                f"Checkpoint {self._ckpt_path!r} holds only weights (`weights_only=True`): it cannot resume training."
                " Load it with `LightningModule.load_from_checkpoint` instead."
            )
        states = ckpt["optimizer_states"]
        if len(states) != len(trainer.optimizers):
            raise CheckpointError(
                f"Checkpoint {self._ckpt_path!r} has {len(states)} optimizer state(s) but the module configures"
                f" {len(trainer.optimizers)}."
            )
        for opt, state in zip(trainer.optimizers, states):
            try:
                opt.load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as err:
                raise CheckpointError(f"Optimizer state in {self._ckpt_path!r} does not fit: {err}") from err
        scheds = ckpt["lr_schedulers"]
        for config, state in zip(trainer.lr_scheduler_configs, scheds):
            config.scheduler.load_state_dict(state)
        # loops last: finishing an interrupted epoch may step a plateau scheduler
        loops = ckpt.get("loops")
        if loops is not None and "fit_loop" in loops:
            resume = ckpt.get(RESUME_KEY) if resume_extras else None
            if resume is not None and resume.get("callback_metrics"):
                trainer._logger_connector._callback_metrics.update(resume["callback_metrics"])
            trainer.fit_loop.load_state_dict(loops["fit_loop"])
            trainer.fit_loop._restore_after_load(resume)
            self.restored_loops = True
        _check_max_epochs_not_passed(trainer)

    def resume_end(self) -> None:
        if self._ckpt_path:
            done = "Restored all states" if self.trainer.state.fn == "fit" else "Loaded model weights"
            rank_zero_info(f"{done} from the checkpoint at {self._ckpt_path}")
        self._loaded = None
        self._ckpt_path = None


def _check_max_epochs_not_passed(trainer: "Trainer") -> None:
    """A resumed fit whose checkpoint is already past ``max_epochs`` is a configuration error, as in Lightning
    (same class and wording), rather than a fit that silently trains nothing."""
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs != -1 and trainer.current_epoch > max_epochs:
        raise MisconfigurationException(
            f"You restored a checkpoint with current_epoch={trainer.current_epoch},"
            f" but you have set Trainer(max_epochs={max_epochs})."
        )


__all__ = ["atomic_save", "load_checkpoint_file", "dump_checkpoint", "CheckpointConnector", "CheckpointError"]
