"""Batch-size search (Lightning's ``tuner.batch_size_scaling``): run ``steps_per_trial`` steps per size, doubling
(``"power"``) or bisecting after the first OOM (``"binsearch"``), then put the run back as it was and leave the
found size in the model's/datamodule's ``batch_arg_name``."""
from __future__ import annotations

import gc
import logging
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch

from trainer.tuner import _state
from trainer.tuner._attributes import lightning_getattr, lightning_setattr

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)


def _one_message(exception: BaseException) -> str:
    """The message of a ``RuntimeError`` raised with exactly one string argument (how ATen reports running
    out of memory), else ''."""
    if isinstance(exception, RuntimeError) and len(exception.args) == 1 and isinstance(exception.args[0], str):
        return exception.args[0]
    return ""


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    message = _one_message(exception)
    return "CUDA" in message and "out of memory" in message


def is_cudnn_snafu(exception: BaseException) -> bool:
    """cuDNN's 'not supported' error, which a too large batch also raises."""
    return "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in _one_message(exception)


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    return "DefaultCPUAllocator: can't allocate memory" in _one_message(exception)


def is_oom_error(exception: BaseException) -> bool:
    """CUDA out of memory, the cuDNN 'not supported' error that means the same, or the CPU allocator failing
    (Lightning's ``utilities.memory.is_oom_error``: a ``RuntimeError`` with that one message)."""
    return is_cuda_out_of_memory(exception) or is_cudnn_snafu(exception) or is_out_of_cpu_memory(exception)


def garbage_collection_cuda() -> None:
    """Frees what Python and the CUDA caching allocator hold between trials."""
    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exception:
            if not is_oom_error(exception):
                raise


def _free_after_oom(trainer: "Trainer") -> None:
    """After a trial ran out of memory: the compiled step of that size is dropped with everything it holds (its
    capture may have seen the step raise and fallen back to eager; the next size sets up afresh), then the
    caches are emptied."""
    trainer.fit_loop.epoch_loop.automatic_optimization.drop_compiled_engine()
    garbage_collection_cuda()


def _scale_batch_size(
    trainer: "Trainer",
    mode: str = "power",
    steps_per_trial: int = 3,
    init_val: int = 2,
    max_trials: int = 25,
    batch_arg_name: str = "batch_size",
    margin: float = 0.05,
    max_val: int = 8192,
) -> Optional[int]:
    """Runs the search inside the current call (from its ``on_*_start`` hook) and restores the run."""
    assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
    if trainer.fast_dev_run:
        import warnings

        warnings.warn("Skipping batch size scaler since `fast_dev_run` is enabled.")
        return None
    ckpt_path = _state.save_initial_state(trainer, "scale_batch_size")
    params = _dump_params(trainer)
    _reset_params(trainer, steps_per_trial)
    _state.set_progress_bar(trainer, False)
    try:
        new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=init_val)
        if mode == "power":
            new_size = _run_power_scaling(trainer, new_size, batch_arg_name, max_trials, params, max_val)
        elif mode == "binsearch":
            new_size = _run_binsearch_scaling(trainer, new_size, batch_arg_name, max_trials, params, margin, max_val)
        garbage_collection_cuda()
        log.info(f"Finished batch size finder, will continue with full run using batch size {new_size}")
    finally:
        _restore_params(trainer, params)
        _state.set_progress_bar(trainer, True)
        _state.restore_initial_state(trainer, ckpt_path)
    return new_size


def _active_loop(trainer: "Trainer") -> Any:
    fn = trainer.state.fn
    if fn == "fit":
        return trainer.fit_loop
    if fn == "validate":
        return trainer.validate_loop
    if fn == "test":
        return trainer.test_loop
    return trainer.predict_loop


def _limit_name(trainer: "Trainer") -> str:
    return {"validate": "limit_val_batches", "test": "limit_test_batches"}.get(trainer.state.fn, "limit_predict_batches")


def _dump_params(trainer: "Trainer") -> Dict[str, Any]:
    params: Dict[str, Any] = {"outputs": _state.mute_outputs(trainer)}
    loop = _active_loop(trainer)
    if trainer.state.fn == "fit":
        params["max_steps"] = trainer.max_steps
        params["limit_train_batches"] = trainer.limit_train_batches
        params["limit_val_batches"] = trainer.limit_val_batches
    else:
        params["limit_eval_batches"] = getattr(trainer, _limit_name(trainer))
        params["loop_verbose"] = getattr(loop, "verbose", None)
    params["loop_state_dict"] = deepcopy(loop.state_dict())
    return params


def _reset_params(trainer: "Trainer", steps_per_trial: int) -> None:
    trainer.callbacks = []
    loop = _active_loop(trainer)
    if trainer.state.fn == "fit":
        trainer.limit_train_batches = 1.0
        trainer.limit_val_batches = steps_per_trial
        trainer.fit_loop.epoch_loop.max_steps = steps_per_trial
    else:
        setattr(trainer, _limit_name(trainer), steps_per_trial)
        if hasattr(loop, "verbose"):
            loop.verbose = False


def _restore_params(trainer: "Trainer", params: Dict[str, Any]) -> None:
    _state.unmute_outputs(trainer, params["outputs"])
    loop = _active_loop(trainer)
    if trainer.state.fn == "fit":
        trainer.fit_loop.epoch_loop.max_steps = params["max_steps"]
        trainer.limit_train_batches = params["limit_train_batches"]
        trainer.limit_val_batches = params["limit_val_batches"]
    else:
        setattr(trainer, _limit_name(trainer), params["limit_eval_batches"])
        if params.get("loop_verbose") is not None:
            loop.verbose = params["loop_verbose"]
    loop.load_state_dict(deepcopy(params["loop_state_dict"]))
    _reset_dataloaders(trainer)


def _run_power_scaling(trainer: "Trainer", new_size: int, batch_arg_name: str, max_trials: int,
                       params: Dict[str, Any], max_val: int = 8192) -> int:
    """Doubles the size after each success; after an OOM halves it and stops (or keeps halving until one
    size succeeded)."""
    any_success = False
    last_successful_size = new_size
    for i in range(max_trials):
        garbage_collection_cuda()
        _reset_progress(trainer)
        if new_size >= max_val:
            log.info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, params)
            last_successful_size = new_size
            if i + 1 >= max_trials:
                new_size = last_successful_size
                break
            new_size, changed = _adjust_batch_size(trainer, batch_arg_name, factor=2.0, desc="succeeded")
            if not changed:
                break
            _reset_dataloaders(trainer)
            any_success = True
        except RuntimeError as exception:
            if not is_oom_error(exception):
                raise
            _free_after_oom(trainer)
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, factor=0.5, desc="failed")
            _reset_dataloaders(trainer)
            if any_success:
                break
    return new_size


def _run_binsearch_scaling(trainer: "Trainer", new_size: int, batch_arg_name: str, max_trials: int,
                           params: Dict[str, Any], margin: float, max_val: int = 8192) -> int:
    """Doubles until the first OOM, then bisects between the last success and the failure; the result is reduced
    by ``margin``."""
    low, high, count = 1, None, 0
    last_successful_size = new_size
    while True:
        garbage_collection_cuda()
        _reset_progress(trainer)
        if new_size >= max_val:
            log.info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, params)
            last_successful_size = new_size
            count += 1
            if count >= max_trials:
                new_size = last_successful_size
                break
            low = new_size
            if high:
                if high - low <= 1:
                    break
                new_size, changed = _adjust_batch_size(trainer, batch_arg_name, value=(high + low) // 2,
                                                       desc="succeeded", max_val=max_val)
            else:
                new_size, changed = _adjust_batch_size(trainer, batch_arg_name, factor=2.0, desc="succeeded",
                                                       max_val=max_val)
            if not changed:
                break
            _reset_dataloaders(trainer)
        except RuntimeError as exception:
            if not is_oom_error(exception):
                raise
            _free_after_oom(trainer)
            high = new_size
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=(high + low) // 2, desc="failed")
            _reset_dataloaders(trainer)
            if high - low <= 1:
                break
    if margin > 0:
        reduced = max(1, int(new_size * (1 - margin)))
        if reduced != new_size:
            log.info(f"Applying margin of {margin:.1%}, reducing batch size from {new_size} to {reduced}")
            new_size = reduced
            lightning_setattr(trainer.lightning_module, batch_arg_name, new_size)
    return new_size


def _dataset_length(trainer: "Trainer") -> Optional[int]:
    """The length the batch size is compared with: the longest train dataset (Lightning's 'max_size_cycle'),
    the summed eval datasets ('sequential'); None when one is iterable-style."""
    fn = trainer.state.fn
    loaders = {"fit": trainer.train_dataloader, "validate": trainer.val_dataloaders,
               "test": trainer.test_dataloaders}.get(fn, trainer.predict_dataloaders)
    if loaders is None:
        return None
    flat = list(loaders.values()) if isinstance(loaders, dict) else (
        list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
    lengths = []
    for dl in flat:
        dataset = getattr(dl, "dataset", None)
        try:
            lengths.append(len(dataset))  # type: ignore[arg-type]
        except TypeError:
            return None
    if not lengths:
        return None
    return max(lengths) if fn == "fit" else sum(lengths)


def _adjust_batch_size(trainer: "Trainer", batch_arg_name: str = "batch_size", factor: float = 1.0,
                       value: Optional[int] = None, desc: Optional[str] = None,
                       max_val: int = 8192) -> Tuple[int, bool]:
    """Sets the next size to try (``value``, or the current one times ``factor``, capped at ``max_val``); returns it
    and whether it changed. A size already >= the dataset's length is kept."""
    model = trainer.lightning_module
    batch_size = lightning_getattr(model, batch_arg_name)
    assert batch_size is not None
    _active_loop(trainer).setup_data()
    length = _dataset_length(trainer)
    if length is not None and batch_size >= length:
        log.info(f"The batch size {batch_size} is greater or equal than the length of your dataset: {length}.")
        return batch_size, False
    new_size = value if value is not None else int(batch_size * factor)
    if new_size > max_val:
        if desc:
            log.info(f"Batch size {new_size} exceeds max_val limit {max_val}, capping at {max_val}")
        new_size = max_val
    if desc:
        log.info(f"Batch size {batch_size} {desc}, trying batch size {new_size}")
    lightning_setattr(model, batch_arg_name, new_size)
    return new_size, new_size != batch_size


def _reset_dataloaders(trainer: "Trainer") -> None:
    loop = _active_loop(trainer)
    loop.reset_data()
    loop.setup_data()


def _try_loop_run(trainer: "Trainer", params: Dict[str, Any]) -> None:
    loop = _active_loop(trainer)
    loop.load_state_dict(deepcopy(params["loop_state_dict"]))
    loop.run()


def _reset_progress(trainer: "Trainer") -> None:
    epoch_loop = trainer.fit_loop.epoch_loop
    if trainer.lightning_module.automatic_optimization:
        progress = epoch_loop.automatic_optimization.optim_progress
        progress.step.reset()
        progress.zero_grad.reset()
    else:
        epoch_loop.manual_optimization.optim_step_progress.reset()
    trainer.fit_loop.epoch_progress.reset()
