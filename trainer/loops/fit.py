"""The fit loop (epochs) and the training epoch loop (batches), with Lightning 2.x's hook order.

Per epoch: ``on_train_epoch_start`` -> batches -> [end-of-epoch validation] ->
``on_train_epoch_end`` (plain callbacks, module, then monitoring callbacks) -> plateau schedulers.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import torch

from trainer.exceptions import MisconfigurationException, SIGTERMException
from trainer.logger_connector import ResultCollection
from trainer.loops.data import (
    Fetcher,
    combine,
    loader_length,
    parse_num_batches,
    request_dataloader,
    resolve_overfit_batches,
    seed_workers,
    set_sampler_epoch,
    sized_len,
)
from trainer.loops.evaluation import EvaluationLoop
from trainer.loops.optimization import AutomaticOptimization, ManualOptimization
from trainer.loops.progress import BatchProgress, Progress
from trainer.seed import collect_rng_states, set_rng_states
from trainer.utilities import is_param_in_signature
from trainer.utilities.combined_loader import _SUPPORTED_MODES, CombinedLoader
from trainer.utilities.rank_zero import rank_zero_info, rank_zero_warn
from trainer.utilities.warnings import PossibleUserWarning

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)
Number = Union[int, float]


def _is_max_limit_reached(current: int, maximum: int = -1) -> bool:
    return maximum != -1 and current >= maximum


class TrainingEpochLoop:
    def __init__(self, trainer: "Trainer", min_steps: Optional[int] = None, max_steps: int = -1) -> None:
        self.trainer = trainer
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.batch_progress = BatchProgress()
        self.scheduler_progress = Progress.ready_completed()
        self.automatic_optimization = AutomaticOptimization(trainer)
        self.manual_optimization = ManualOptimization(trainer)
        self.val_loop = EvaluationLoop(trainer, "fit", "validate", inference_mode=False)
        self._last_val_time = 0.0  # time.monotonic() at the last validation (a time-based val_check_interval)
        self._results = ResultCollection(training=True)
        self._batches_that_stepped = 0
        self._step_takes_batch_idx = True
        self._acc_cache_ready = -1
        self._acc_cache = False
        self._val_epoch_key: Any = None
        self._val_epoch_flag = False

    # ---------------------------------------------------------------- counters
    @property
    def total_batch_idx(self) -> int:
        return self.batch_progress.total.ready - 1

    @property
    def batch_idx(self) -> int:
        return self.batch_progress.current.ready - 1

    @property
    def global_step(self) -> int:
        module = self.trainer.lightning_module
        if module is None or module.automatic_optimization:
            return self.automatic_optimization.optim_progress.optimizer_steps
        return self.manual_optimization.optim_step_progress.total.completed

    def _num_ready_batches_reached(self) -> bool:
        bp = self.batch_progress
        return bp.current.ready == self.trainer.num_training_batches or bp.is_last_batch

    def _accumulated_batches_reached(self) -> bool:
        return self.batch_progress.current.ready % self.trainer.accumulate_grad_batches == 0

    def _should_accumulate(self) -> bool:
        if self._accumulated_batches_reached():
            return False
        return self.trainer.strategy.handles_gradient_accumulation or not self._num_ready_batches_reached()

    def _accumulating(self) -> bool:
        """``_should_accumulate()`` for the current batch, computed once per batch (it is constant
        from the batch's ``increment_ready`` until the next one)."""
        key = self.batch_progress.total.ready  # strictly increases from batch to batch
        if self._acc_cache_ready != key:
            self._acc_cache_ready = key
            self._acc_cache = self._should_accumulate()
        return self._acc_cache

    @property
    def _is_training_done(self) -> bool:
        return _is_max_limit_reached(self.global_step, self.max_steps) or self._num_ready_batches_reached()

    @property
    def done(self) -> bool:
        if self._is_training_done:
            return True
        trainer = self.trainer
        if trainer.should_stop:
            can_stop = trainer.fit_loop._can_stop_early
            if not can_stop:
                trainer._info_once(
                    f"Trainer was signaled to stop but the required `min_epochs={trainer.fit_loop.min_epochs!r}` or"
                    f" `min_steps={self.min_steps!r}` has not been met. Training will continue..."
                )
            return can_stop
        return False

    # ---------------------------------------------------------------- run
    def run(self, fetcher: Fetcher) -> None:
        trainer = self.trainer
        fit_loop = trainer.fit_loop
        if not fit_loop._resuming_mid_epoch:
            self.batch_progress.reset_on_run()
            self.scheduler_progress.reset_on_run()
            self.automatic_optimization.optim_progress.reset_on_run()
            self.val_loop.batch_progress.total.reset()
            if trainer.current_epoch > 0:
                fit_loop._new_epoch_iterator()  # epoch 0 uses the iterator that setup_data made (Lightning's order)
        else:
            self._finish_interrupted_batch(fit_loop._resume_tail)
        module = trainer.lightning_module
        self._step_takes_batch_idx = is_param_in_signature(module.training_step, "batch_idx", min_args=2)
        while not self.done:
            try:
                self.advance(fetcher)
                self.on_advance_end()
            except StopIteration:
                break

    def _finish_interrupted_batch(self, tail: Optional[str]) -> None:
        """Runs what the interrupted run still did after its checkpoint was written, for the same batch.

        ``"batch_end"``: saved in ``on_train_batch_end`` -> the batch completes, then ``on_advance_end``
        (validation if due, step-plateau schedulers, the stepped-batch counter).
        ``"advance_end"``: saved during that validation -> only what follows it in ``on_advance_end``.
        """
        if tail == "batch_end":
            self.batch_progress.increment_completed()
            self.on_advance_end()
        elif tail == "advance_end":
            self.update_lr_schedulers("step", update_plateau_schedulers=True)
            if not self._should_accumulate():
                self._batches_that_stepped += 1

    def _run_optimization(self, module: Any, batch_idx: int, args: tuple) -> Any:
        if module.automatic_optimization:
            return self.automatic_optimization.run(
                self.trainer.strategy.optimizers[0], batch_idx, args, self._accumulating()
            )
        return self.manual_optimization.run(args)

    def advance(self, fetcher: Fetcher) -> None:
        trainer = self.trainer
        hooks = trainer._hooks
        module = trainer.lightning_module
        bp = self.batch_progress
        batch, _, _ = next(fetcher)  # training counts its own batch_idx (it goes on across a resumed epoch)
        batch_idx = bp.current.ready
        bp.is_last_batch = fetcher.done
        batch = trainer._transfer_batch(batch, 0)
        bp.total.ready += 1
        bp.current.ready += 1
        trainer._logger_connector.on_batch_start(batch)
        batch_output: Any = None
        skip_rest = False
        # hooks nobody overrides are not dispatched at all (the lists are cached per run)
        noops = hooks._module_noops
        if batch is None:
            trainer._warn_once("train_dataloader yielded None. If this was on purpose, ignore this warning...")
        else:
            if hooks.callbacks_for("on_train_batch_start"):
                hooks.call_callbacks("on_train_batch_start", batch, batch_idx)
            if "on_train_batch_start" not in noops:
                skip_rest = hooks.call_module("on_train_batch_start", batch, batch_idx) == -1
            profiler = trainer.profiler
            if profiler.enabled:
                hooks.call_strategy("on_train_batch_start", batch, batch_idx)
            if skip_rest:
                bp.is_last_batch = True
            else:
                bp.total.started += 1
                bp.current.started += 1
                args = (batch, batch_idx) if self._step_takes_batch_idx else (batch,)
                if profiler.enabled:
                    with profiler.profile("run_training_batch"):
                        batch_output = self._run_optimization(module, batch_idx, args)
                else:
                    batch_output = self._run_optimization(module, batch_idx, args)
        bp.total.processed += 1
        bp.current.processed += 1
        if trainer.strategy.lr_scheduler_configs:
            self.update_lr_schedulers("step", update_plateau_schedulers=False)
            if self._num_ready_batches_reached():
                self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
        if skip_rest:
            raise StopIteration
        if hooks.callbacks_for("on_train_batch_end"):
            hooks.call_callbacks("on_train_batch_end", batch_output, batch, batch_idx)
        if "on_train_batch_end" not in noops:
            hooks.call_module("on_train_batch_end", batch_output, batch, batch_idx)
        connector = trainer._logger_connector
        connector.on_batch_end()
        bp.total.completed += 1
        bp.current.completed += 1
        if trainer.loggers:
            connector.update_train_step_metrics(self._accumulating())

    def on_advance_end(self) -> None:
        trainer = self.trainer
        if self._should_check_val_fx():
            trainer.validating = True
            connector = trainer._logger_connector
            first_loop_iter = connector._first_loop_iter
            if not self._accumulating():
                trainer._hooks.call_module("on_validation_model_zero_grad")
            self.val_loop.run()
            self._last_val_time = time.monotonic()  # a time-based val_check_interval counts from here
            trainer.training = True
            connector._first_loop_iter = first_loop_iter
        self.update_lr_schedulers("step", update_plateau_schedulers=True)
        if not self._accumulating():
            self._batches_that_stepped += 1
        if trainer.should_stop:
            for logger in trainer.loggers:
                logger.save()
        # preempted: stop at this batch boundary, unless the epoch or the run ends here anyway (the fit loop's
        # check at the epoch end then raises, after the epoch-end hooks, as Lightning's does)
        if not self._is_training_done and trainer.received_sigterm:
            raise SIGTERMException

    # ---------------------------------------------------------------- validation placement
    def _should_check_val_epoch(self) -> bool:
        trainer = self.trainer
        n = trainer.check_val_every_n_epoch
        return trainer.enable_validation and (n is None or (trainer.current_epoch + 1) % n == 0)

    def _val_check_epoch_cached(self) -> bool:
        """``_should_check_val_epoch()``, fixed for the epoch (it only depends on the epoch and on
        settings a GradientAccumulationScheduler-style callback may change at epoch start)."""
        key = (self.trainer.current_epoch, self.trainer.check_val_every_n_epoch)
        if self._val_epoch_key != key:
            self._val_epoch_key = key
            self._val_epoch_flag = self._should_check_val_epoch()
        return self._val_epoch_flag

    def restart_val_clock(self) -> None:
        """A time-based ``val_check_interval`` counts from now (the start of training)."""
        self._last_val_time = time.monotonic()

    def _should_check_val_fx(self) -> bool:
        if not self._val_check_epoch_cached():
            return False
        trainer = self.trainer
        is_infinite = trainer.val_check_batch == float("inf")
        is_last_batch = self.batch_progress.is_last_batch
        if is_last_batch and is_infinite:
            return True
        if trainer.should_stop and trainer.fit_loop._can_stop_early:
            return True
        if trainer._val_check_time_interval is not None:
            return time.monotonic() - self._last_val_time >= trainer._val_check_time_interval
        is_val_check_batch = is_last_batch
        if isinstance(trainer.limit_train_batches, int) and is_infinite:
            is_val_check_batch = (self.batch_idx + 1) % trainer.limit_train_batches == 0
        elif trainer.val_check_batch != float("inf"):
            current = self.total_batch_idx if trainer.check_val_every_n_epoch is None else self.batch_idx
            is_val_check_batch = (current + 1) % trainer.val_check_batch == 0
        return is_val_check_batch

    # ---------------------------------------------------------------- schedulers
    def update_lr_schedulers(self, interval: str, update_plateau_schedulers: bool) -> None:
        trainer = self.trainer
        if not trainer.strategy.lr_scheduler_configs:
            return
        if interval == "step" and self._accumulating():
            return
        if not trainer.lightning_module.automatic_optimization:
            return
        for config in trainer.lr_scheduler_configs:
            if update_plateau_schedulers ^ config.reduce_on_plateau:
                continue
            current_idx = (self.batch_idx if interval == "step" else trainer.current_epoch) + 1
            if config.interval != interval or current_idx % config.frequency != 0:
                continue
            monitor_val = None
            if config.reduce_on_plateau:
                monitor_key = config.monitor
                monitor_val = trainer.callback_metrics.get(monitor_key)
                if monitor_val is None:
                    if config.strict:
                        avail = list(trainer.callback_metrics)
                        raise MisconfigurationException(
                            f"ReduceLROnPlateau conditioned on metric {monitor_key}"
                            f" which is not available. Available metrics are: {avail}."
                            " Condition can be set using `monitor` key in lr scheduler dict"
                        )
                    trainer._warn_once(
                        f"ReduceLROnPlateau conditioned on metric {monitor_key} which is not available but strict"
                        " is set to `False`. Skipping learning rate update.",
                        category=RuntimeWarning,  # Lightning's class
                    )
                    continue
            self.scheduler_progress.increment_ready()
            trainer._hooks.call_module("lr_scheduler_step", config.scheduler, monitor_val)
            self.scheduler_progress.increment_completed()

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {
            "state_dict": {"_batches_that_stepped": self._batches_that_stepped},
            "batch_progress": self.batch_progress.state_dict(),
            "scheduler_progress": self.scheduler_progress.state_dict(),
            "automatic_optimization.state_dict": {},
            "automatic_optimization.optim_progress": self.automatic_optimization.optim_progress.state_dict(),
            "manual_optimization.state_dict": {},
            "manual_optimization.optim_step_progress": self.manual_optimization.optim_step_progress.state_dict(),
            "val_loop.state_dict": {},
            "val_loop.batch_progress": self.val_loop.batch_progress.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._batches_that_stepped = state.get("state_dict", {}).get("_batches_that_stepped", 0)
        self.batch_progress.load_state_dict(state.get("batch_progress", {}))
        self.scheduler_progress.load_state_dict(state.get("scheduler_progress", {}))
        self.automatic_optimization.optim_progress.load_state_dict(
            state.get("automatic_optimization.optim_progress", {})
        )
        self.manual_optimization.optim_step_progress.load_state_dict(
            state.get("manual_optimization.optim_step_progress", {})
        )
        self.val_loop.batch_progress.load_state_dict(state.get("val_loop.batch_progress", {}))


class FitLoop:
    def __init__(self, trainer: "Trainer", min_epochs: Optional[int] = 0, max_epochs: Optional[int] = None) -> None:
        self.trainer = trainer
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.epoch_loop = TrainingEpochLoop(trainer)
        self.epoch_progress = Progress()
        self.max_batches: Number = float("inf")
        self._combined_loader: Optional[CombinedLoader] = None
        self._fetcher: Optional[Fetcher] = None
        self._last_train_dl_reload_epoch: Number = float("-inf")
        self._resuming_mid_epoch = False
        self._resume_tail: Optional[str] = None
        self._resume_state: Optional[Dict[str, Any]] = None
        self._epoch_start_rng: Optional[Dict[str, Any]] = None

    # ---------------------------------------------------------------- properties
    @property
    def total_batch_idx(self) -> int:
        return self.epoch_loop.total_batch_idx

    @property
    def batch_idx(self) -> int:
        return self.epoch_loop.batch_idx

    @property
    def min_steps(self) -> Optional[int]:
        return self.epoch_loop.min_steps

    @property
    def max_steps(self) -> int:
        return self.epoch_loop.max_steps

    @property
    def _skip_backward(self) -> bool:
        """Lightning's switch (set by ``StochasticWeightAveraging`` for its BatchNorm epoch): training steps run
        forward only, with no zero_grad, no backward and no compiled step."""
        return self.epoch_loop.automatic_optimization._skip_backward

    @_skip_backward.setter
    def _skip_backward(self, value: bool) -> None:
        self.epoch_loop.automatic_optimization._skip_backward = value

    def _should_accumulate(self) -> bool:
        """Lightning exposes this on the fit loop too (callbacks call it there)."""
        return self.epoch_loop._should_accumulate()

    @property
    def _can_stop_early(self) -> bool:
        met_min_epochs = self.epoch_progress.current.processed >= self.min_epochs if self.min_epochs else True
        met_min_steps = self.epoch_loop.global_step >= self.min_steps if self.min_steps else True
        return met_min_epochs and met_min_steps

    @property
    def _should_reload_train_dl(self) -> bool:
        n = self.trainer.reload_dataloaders_every_n_epochs
        return bool(n) and self.trainer.current_epoch - self._last_train_dl_reload_epoch >= n

    def _info(self, message: str) -> None:
        if self.trainer.is_global_zero:  # as Lightning's rank_zero_info: one line per run, on its channel
            rank_zero_info(message, stacklevel=3)

    @property
    def done(self) -> bool:
        if self.max_batches == 0:
            self._info("`Trainer.fit` stopped: No training batches.")
            return True
        if _is_max_limit_reached(self.epoch_loop.global_step, self.max_steps):
            self._info(f"`Trainer.fit` stopped: `max_steps={self.max_steps!r}` reached.")
            return True
        assert isinstance(self.max_epochs, int)
        if _is_max_limit_reached(self.epoch_progress.current.processed, self.max_epochs):
            self.epoch_progress.current.completed = self.epoch_progress.current.processed
            self._info(f"`Trainer.fit` stopped: `max_epochs={self.max_epochs!r}` reached.")
            return True
        if self.trainer.should_stop and self._can_stop_early:
            return True
        return False

    @property
    def skip(self) -> bool:
        return self.done or self.trainer.limit_train_batches == 0

    # ---------------------------------------------------------------- data
    def setup_data(self) -> None:
        if self._combined_loader is not None and not self._should_reload_train_dl:
            return
        trainer = self.trainer
        if trainer.limit_train_batches == 0:
            return
        loaders = request_dataloader(trainer, "train_dataloader")
        if loaders is None:
            raise MisconfigurationException(
                "No `train_dataloader()` method defined. Lightning `Trainer` expects as minimum a"
                " `training_step()`, `train_dataloader()` and `configure_optimizers()` to be defined."
            )
        combined = combine(loaders, "max_size_cycle")
        if trainer.overfit_batches > 0:
            resolve_overfit_batches(combined, "train")
        combined.flattened = [
            trainer.strategy.process_dataloader(seed_workers(dl), "train") for dl in combined.flattened
        ]
        limits = []
        for dl in combined.flattened:
            n = loader_length(trainer, dl)
            limits.append(parse_num_batches("train", float("inf") if n is None else n, trainer.limit_train_batches))
        combined.limits = limits
        self._combined_loader = combined
        self._fetcher = Fetcher(combined)
        self._fetcher.profile_fetches(trainer.profiler, "[_TrainingEpochLoop].train_dataloader_next")
        self._new_epoch_iterator()
        n = sized_len(combined)  # known once iterated; infinite with an unsized loader the mode cannot bound
        self.max_batches = n if n is not None else float("inf")
        if self.max_batches == 0:
            return
        self._last_train_dl_reload_epoch = trainer.current_epoch
        if trainer._val_check_time_interval is not None:
            trainer.val_check_batch = None
            self.epoch_loop.restart_val_clock()
        elif isinstance(trainer.val_check_interval, int):
            trainer.val_check_batch = trainer.val_check_interval
            if (
                trainer.val_check_batch > self.max_batches
                and trainer.check_val_every_n_epoch is not None
                and trainer.limit_val_batches > 0
            ):
                raise ValueError(
                    f" `val_check_interval` ({trainer.val_check_interval}) must be less than or equal"
                    f" to the number of the training batches ({self.max_batches})."
                    " If you want to disable validation set `limit_val_batches` to 0.0 instead."
                    " If you want to validate based on the total training batches, set `check_val_every_n_epoch=None`."
                )
        else:
            if math.isinf(self.max_batches):
                if trainer.val_check_interval == 1.0:
                    trainer.val_check_batch = float("inf")
                else:
                    raise MisconfigurationException(
                        "When using an IterableDataset for `train_dataloader`,"
                        " `Trainer(val_check_interval)` must be time based, `1.0` or an int. An int k specifies"
                        " checking validation every k training batches."
                    )
            else:
                trainer.val_check_batch = max(1, int(self.max_batches * trainer.val_check_interval))
        if trainer.loggers and self.max_batches < trainer.log_every_n_steps and not trainer.fast_dev_run:
            trainer._warn_once(
                f"The number of training batches ({self.max_batches}) is smaller than the logging interval"
                f" Trainer(log_every_n_steps={trainer.log_every_n_steps}). Set a lower value for log_every_n_steps if"
                " you want to see logs for the training epoch.",
                category=PossibleUserWarning,
            )

    def reset_data(self) -> None:
        """Forgets the train and validation dataloaders: the next ``setup_data`` asks the module or datamodule
        for them again (the tuner changed the batch size, or put the run back as it was)."""
        self._combined_loader = None
        self._fetcher = None
        self.epoch_loop.val_loop.reset_data()

    def _new_epoch_iterator(self) -> None:
        """Creates the epoch's data iterator, remembering the RNG state it was drawn from.

        A checkpoint stores that state: a resumed run recreates the very same sample order.
        """
        assert self._fetcher is not None
        self._epoch_start_rng = collect_rng_states()
        self._fetcher.reset_iterator()

    def _warn_resume_mid_epoch(self, has_position: bool) -> None:
        """Lightning's warning (its condition and wording) when a run resumes inside an epoch and the train loader
        cannot restore its position itself (no ``state_dict``/``load_state_dict``); what this Trainer does instead
        follows Lightning's words."""
        trainer = self.trainer
        if math.isinf(self.max_batches) or self.max_batches <= 0:
            return
        expected_steps = math.ceil(self.max_batches / trainer.accumulate_grad_batches)
        assert self._combined_loader is not None
        stateful = all(
            callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))
            for dl in self._combined_loader.flattened
        )
        if trainer.global_step % expected_steps == 0 or (stateful and has_position):
            return
        if has_position:
            ours = (" This Trainer continues at the same sample by replaying the epoch's first"
                    f" {self.epoch_loop.batch_progress.current.ready} batch(es) from the saved random state, which is"
                    " exact only if the loader's order depends on nothing else.")
        else:
            ours = (" The checkpoint holds no data position (it was not written by this Trainer): the dataloader"
                    " restarts from its first sample.")
        rank_zero_warn(
            "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is"
            " not resumable. This can cause unreliable results if further training is done."
            " Consider using an end-of-epoch checkpoint or make your dataloader resumable by implementing"
            " the `state_dict` / `load_state_dict` interface." + ours,
            category=PossibleUserWarning,
        )

    def _apply_resume_state(self) -> None:
        """Mid-epoch: rebuild the epoch's iterator from its RNG state and skip the batches already
        trained; then (any save point) put every RNG back where the saved run had it."""
        state = self._resume_state
        self._resume_state = None
        if state is None:
            return
        if self._resuming_mid_epoch:
            assert self._fetcher is not None
            epoch_rng = state.get("epoch_start_rng_states")
            if epoch_rng is not None:
                set_rng_states(epoch_rng)
            self._epoch_start_rng = epoch_rng
            loader_states = state.get("train_loader_states")
            assert self._combined_loader is not None
            stateful = loader_states is not None and all(
                hasattr(dl, "load_state_dict") for dl in self._combined_loader.flattened
            )
            if stateful:
                for dl, st in zip(self._combined_loader.flattened, loader_states):
                    dl.load_state_dict(st)
                self._fetcher.reset_iterator()
                self._fetcher.fetched = self.epoch_loop.batch_progress.current.ready
            else:
                self._fetcher.reset_iterator()
                for _ in range(self.epoch_loop.batch_progress.current.ready):
                    try:
                        next(self._fetcher)
                    except StopIteration:
                        break
            grads = state.get("accumulated_grads")
            if grads is not None:
                params = [p for p in self.trainer.lightning_module.parameters()]
                for p, g in zip(params, grads):
                    p.grad = None if g is None else g.to(p.device)
        rng = state.get("rng_states")
        if rng is not None:
            set_rng_states(rng)

    def resume_state_dict(self) -> Dict[str, Any]:
        """What exact resume needs beyond the loop counters (stored under ``trainer_resume``)."""
        state: Dict[str, Any] = {
            "rng_states": collect_rng_states(),
            "epoch_start_rng_states": self._epoch_start_rng,
            # monitored values (ReduceLROnPlateau, EarlyStopping) must survive the restart
            "callback_metrics": {
                k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
                for k, v in self.trainer.callback_metrics.items()
            },
        }
        loaders = self._combined_loader.flattened if self._combined_loader is not None else None
        if loaders is not None and all(hasattr(dl, "state_dict") for dl in loaders):
            state["train_loader_states"] = [dl.state_dict() for dl in loaders]
        module = self.trainer.lightning_module
        epoch_loop = self.epoch_loop
        mid_window = (
            module is not None
            and module.automatic_optimization
            and epoch_loop.batch_progress.current.ready > 0
            and epoch_loop._should_accumulate()
        )
        if mid_window:  # gradients of the unfinished accumulation window
            state["accumulated_grads"] = [
                None if p.grad is None else p.grad.detach().clone() for p in module.parameters()
            ]
        return state

    # ---------------------------------------------------------------- run
    def run(self) -> None:
        self.setup_data()
        if self.skip:
            return
        torch.set_grad_enabled(True)
        self.on_run_start()
        while not self.done:
            try:
                self.on_advance_start()
                self.advance()
                self.on_advance_end()
            except StopIteration:
                break
        self.on_run_end()

    def on_run_start(self) -> None:
        self.epoch_progress.current.completed = self.epoch_progress.current.processed
        trainer = self.trainer
        if self.epoch_loop._should_check_val_epoch() and self.epoch_loop.val_loop._combined_loader is None:
            trainer.validating = True
            self.epoch_loop.val_loop.setup_data()
            trainer.training = True
        trainer._hooks.call_callbacks("on_train_start")
        trainer._hooks.call_module("on_train_start")
        trainer._hooks.call_strategy("on_train_start")
        self.epoch_loop.automatic_optimization.prepare()

    def on_advance_start(self) -> None:
        trainer = self.trainer
        self.setup_data()
        assert self._combined_loader is not None
        for dl in self._combined_loader.flattened:
            set_sampler_epoch(dl, self.epoch_progress.current.processed)
        if self._resuming_mid_epoch:
            self._warn_resume_mid_epoch(has_position=self._resume_state is not None)
        if self._resume_state is not None:
            self._apply_resume_state()
        if self._resuming_mid_epoch:
            return  # the epoch already started before the checkpoint: no epoch-start hooks again
        self.epoch_progress.increment_ready()
        trainer._hooks.call_callbacks("on_train_epoch_start")
        trainer._hooks.call_module("on_train_epoch_start")
        self.epoch_progress.increment_started()

    def advance(self) -> None:
        assert self._fetcher is not None and self._combined_loader is not None
        if self._combined_loader.mode == "sequential":
            raise ValueError(
                '`_FitLoop` does not support the `CombinedLoader(mode="sequential")` mode.'  # Lightning's words
                f" The available modes are: {[m for m in _SUPPORTED_MODES if m != 'sequential']}"
            )
        with self.trainer.profiler.profile("run_training_epoch"):
            self.epoch_loop.run(self._fetcher)
        self._resuming_mid_epoch = False
        self._resume_tail = None

    def on_advance_end(self) -> None:
        trainer = self.trainer
        hooks = trainer._hooks
        trainer._logger_connector.epoch_end_reached()
        self.epoch_progress.increment_processed()
        hooks.call_callbacks("on_train_epoch_end", monitoring=False)
        hooks.call_module("on_train_epoch_end")
        hooks.call_callbacks("on_train_epoch_end", monitoring=True)
        trainer._logger_connector.on_epoch_end()
        if self.epoch_loop._num_ready_batches_reached():
            self.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)
        # logged at the step of the last optimizer step of the epoch (Lightning's off-by-one dance)
        self.epoch_loop._batches_that_stepped -= 1
        trainer._logger_connector.update_train_epoch_metrics()
        self.epoch_loop._batches_that_stepped += 1
        self.epoch_progress.increment_completed()
        if trainer.received_sigterm:
            raise SIGTERMException

    def on_run_end(self) -> None:
        trainer = self.trainer
        trainer._hooks.call_callbacks("on_train_end")
        trainer._hooks.call_module("on_train_end")
        trainer._hooks.call_strategy("on_train_end")

    def teardown(self) -> None:
        self._fetcher = None
        if self._combined_loader is not None:
            self._combined_loader.reset()  # stops persistent workers, forgets the epoch's iterator

    # ---------------------------------------------------------------- checkpoint
    def _restore_after_load(self, resume_state: Optional[Dict[str, Any]]) -> None:
        """Turns the loaded counters into the position to continue from.

        Saved after an epoch's batches and validation were processed (``on_train_epoch_end``):
        finish that epoch's tail (plateau schedulers) and continue with the next epoch. Saved
        mid-epoch: continue the same epoch at the next batch, with the same data order (see
        ``_apply_resume_state``) — unlike Lightning, which restarts the loader from sample 0.
        """
        ep = self.epoch_progress
        bp = self.epoch_loop.batch_progress
        self._resume_state = resume_state
        self._resume_tail = None
        self._resuming_mid_epoch = False
        if ep.current.processed > ep.current.completed:
            # saved in on_train_epoch_end: only the epoch-interval plateau schedulers were still to run
            if self.epoch_loop._num_ready_batches_reached():
                self.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)
            ep.current.completed = ep.current.processed
            ep.total.completed = ep.total.processed
        if ep.current.started > ep.current.processed:
            self._resuming_mid_epoch = True
            if bp.current.processed < bp.current.ready:
                # saved while the batch itself ran (e.g. OnExceptionCheckpoint): it runs again, as in Lightning
                for tracker in (bp.current, bp.total):
                    tracker.ready = tracker.started = tracker.processed
                self.epoch_loop.automatic_optimization.optim_progress.step.reset_on_restart()
                self.epoch_loop.manual_optimization.optim_step_progress.reset_on_restart()
            b = bp.current.ready
            if bp.current.completed == b - 1:
                self._resume_tail = "batch_end"
            elif bp.current.completed == b and b > 0:
                self._resume_tail = "advance_end"
            if resume_state is None:  # the loader restarts from its first sample (warned in on_advance_start)
                bp.reset_on_restart()
                self._resume_tail = None
        else:
            ep.current.ready = ep.current.started = ep.current.processed = ep.current.completed
            ep.total.ready = ep.total.started = ep.total.processed = ep.total.completed
            bp.reset_on_run()

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"state_dict": {}, "epoch_progress": self.epoch_progress.state_dict()}
        for k, v in self.epoch_loop.state_dict().items():
            state[f"epoch_loop.{k}"] = v
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch_progress.load_state_dict(state.get("epoch_progress", {}))
        prefix = "epoch_loop."
        self.epoch_loop.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


__all__ = ["FitLoop", "TrainingEpochLoop", "request_dataloader"]
