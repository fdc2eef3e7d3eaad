"""Validation and test loops (also the sanity check and in-fit validation), and the predict loop."""
from __future__ import annotations

import inspect
import shutil
import warnings
from collections import ChainMap, defaultdict
from typing import TYPE_CHECKING, Any, ContextManager, Dict, List, Optional, Union

import torch

from trainer.compile.eval import eval_step
from trainer.exceptions import MisconfigurationException, SIGTERMException
from trainer.hooks import is_overridden, lightning_is_overridden
from trainer.logger_connector import ResultCollection
from trainer.loops.batch_indices import recorded_batch_indices, with_batch_index_recording
from trainer.loops.data import (
    Fetcher,
    combine,
    loader_length,
    parse_num_batches,
    request_dataloader,
    resolve_overfit_batches,
    seed_workers,
    set_sampler_epoch,
)
from trainer.loops.progress import BatchProgress
from trainer.utilities import is_param_in_signature, to_float_dict
from trainer.utilities.combined_loader import CombinedLoader

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

Number = Union[int, float]


class _ModuleMode:
    """Remembers each submodule's train/eval flag so evaluation restores exactly what it found."""

    def __init__(self) -> None:
        self.mode: Dict[str, bool] = {}

    def capture(self, module: torch.nn.Module) -> None:
        self.mode = {name: m.training for name, m in module.named_modules()}

    def restore(self, module: torch.nn.Module) -> None:
        for name, m in module.named_modules():
            if name in self.mode:
                m.training = self.mode[name]


def _grad_context(trainer: "Trainer", inference_mode: bool) -> ContextManager:
    if inference_mode and trainer.inference_mode:
        return torch.inference_mode()
    return torch.no_grad()


class EvaluationLoop:
    """Runs ``validation_step`` or ``test_step`` over one or more dataloaders, sequentially."""

    def __init__(self, trainer: "Trainer", trainer_fn: str, stage: str, verbose: bool = False,
                 inference_mode: bool = True) -> None:
        self.trainer = trainer
        self._trainer_fn = trainer_fn
        self._stage = stage  # "validate" | "test"
        self.verbose = verbose
        self.inference_mode = inference_mode
        self.batch_progress = BatchProgress()
        self._results = ResultCollection(training=False)
        self._combined_loader: Optional[CombinedLoader] = None
        self._max_batches: List[Number] = []
        self._logged_outputs: List[Dict[str, Any]] = []
        self._has_run = False
        self._seen_batches_per_dataloader: Dict[int, int] = defaultdict(int)
        self._last_val_dl_reload_epoch: Number = float("-inf")
        self._module_mode = _ModuleMode()

    # ---------------------------------------------------------------- names
    @property
    def _prefix(self) -> str:
        return "test" if self._stage == "test" else "val"

    @property
    def _step_name(self) -> str:
        return "test_step" if self._stage == "test" else "validation_step"

    @property
    def _hook_stage(self) -> str:
        return "test" if self._stage == "test" else "validation"

    @property
    def num_dataloaders(self) -> int:
        return len(self._combined_loader.flattened) if self._combined_loader is not None else 0

    @property
    def _is_sequential(self) -> bool:
        return self._combined_loader is not None and self._combined_loader.mode == "sequential"

    def _multi_idx(self, dataloader_idx: int) -> Optional[int]:
        """The ``dataloader_idx`` the hooks and the step get: only with several loaders one after the other."""
        return dataloader_idx if self._is_sequential and self.num_dataloaders > 1 else None

    @property
    def max_batches(self) -> List[Number]:
        trainer = self.trainer
        if not trainer.sanity_checking:
            return self._max_batches
        return [min(trainer.num_sanity_val_steps, b) for b in self._max_batches]

    @property
    def skip(self) -> bool:
        return sum(self.max_batches) == 0

    @property
    def _should_reload_val_dl(self) -> bool:
        n = self.trainer.reload_dataloaders_every_n_epochs
        return bool(n) and self.trainer.current_epoch - self._last_val_dl_reload_epoch >= n

    # ---------------------------------------------------------------- data
    def reset_data(self) -> None:
        """The next ``setup_data`` requests the dataloaders again (the tuner changed the batch size)."""
        self._combined_loader = None

    def setup_data(self) -> None:
        trainer = self.trainer
        if self._combined_loader is not None and self._trainer_fn == "fit" and not self._should_reload_val_dl:
            return
        limit = trainer.limit_test_batches if self._stage == "test" else trainer.limit_val_batches
        if limit == 0 or not is_overridden(self._step_name, trainer.lightning_module):
            self._no_data()
            return
        if self._trainer_fn == "fit" and (
            (trainer.sanity_checking and trainer.fit_loop.epoch_loop._should_check_val_epoch())
            or not trainer.sanity_checking
        ):
            self._last_val_dl_reload_epoch = trainer.current_epoch
        loaders = request_dataloader(trainer, f"{self._prefix}_dataloader")
        if loaders is None:
            self._no_data()
            return
        combined = combine(loaders, "sequential")
        if self._trainer_fn == "fit" and trainer.overfit_batches > 0:
            resolve_overfit_batches(combined, self._prefix)
        combined.flattened = [
            trainer.strategy.process_dataloader(seed_workers(dl), self._prefix) for dl in combined.flattened
        ]
        if self._trainer_fn != "fit":  # fit sets it at every run; these follow the training progress once
            _set_epoch_from_training(trainer, combined)
        self._combined_loader = combined
        self._max_batches = []
        for dl in combined.flattened:
            n = loader_length(trainer, dl)
            self._max_batches.append(parse_num_batches(self._prefix, float("inf") if n is None else n, limit))
        self._seen_batches_per_dataloader = defaultdict(int)

    def _no_data(self) -> None:
        """Nothing to evaluate (no step, no loader or a limit of 0): ``num_val_batches == []``, as in Lightning."""
        self._combined_loader = None
        self._max_batches = []

    # ---------------------------------------------------------------- run
    def run(self) -> List[Dict[str, float]]:
        self.setup_data()
        if self.skip:
            return []
        with _grad_context(self.trainer, self.inference_mode):
            return self._run()

    def _run(self) -> List[Dict[str, float]]:
        trainer = self.trainer
        self._has_run = False
        self._logged_outputs = []
        self.batch_progress.reset_on_run()
        combined = self._combined_loader
        assert combined is not None
        if self._trainer_fn == "fit":
            for dl in combined.flattened:
                set_sampler_epoch(dl, trainer.fit_loop.epoch_progress.current.processed)
        combined.limits = self.max_batches
        fetcher = Fetcher(combined)
        fetcher.profile_fetches(trainer.profiler, f"[_EvaluationLoop].{self._prefix}_next")
        fetcher.reset_iterator()
        self._verify_dataloader_idx_requirement()
        hooks = trainer._hooks
        module = trainer.lightning_module
        stage = self._hook_stage
        self._module_mode.capture(module)
        hooks.call_module(f"on_{stage}_model_eval")
        hooks.call_callbacks(f"on_{stage}_start")
        hooks.call_module(f"on_{stage}_start")
        hooks.call_strategy(f"on_{stage}_start")
        hooks.call_callbacks(f"on_{stage}_epoch_start")
        hooks.call_module(f"on_{stage}_epoch_start")
        takes_batch_idx = is_param_in_signature(getattr(module, self._step_name), "batch_idx", min_args=2)
        previous_idx = 0
        while True:
            try:
                batch, batch_idx, dataloader_idx = next(fetcher)
            except StopIteration:
                break
            if dataloader_idx != previous_idx:  # the dataloader changed: its epoch-level results are complete
                self._store_dataloader_outputs()
            previous_idx = dataloader_idx
            self.batch_progress.is_last_batch = fetcher.done
            self._evaluation_step(batch, batch_idx, dataloader_idx, takes_batch_idx)
            if not self.batch_progress.is_last_batch and self.trainer.received_sigterm:
                raise SIGTERMException
        self._store_dataloader_outputs()
        return self._on_run_end()

    def _evaluation_step(self, batch: Any, batch_idx: int, dataloader_idx: int, takes_batch_idx: bool) -> None:
        trainer = self.trainer
        hooks = trainer._hooks
        stage = self._hook_stage
        batch = trainer._transfer_batch(batch, dataloader_idx)
        multi_idx = self._multi_idx(dataloader_idx)
        hook_args: tuple = (batch, batch_idx) if multi_idx is None else (batch, batch_idx, multi_idx)
        self.batch_progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch, multi_idx)
        hooks.call_callbacks(f"on_{stage}_batch_start", *hook_args)
        hooks.call_module(f"on_{stage}_batch_start", *hook_args)
        self.batch_progress.increment_started()
        output = eval_step(trainer, self._step_name, _step_args(hook_args, takes_batch_idx))
        self.batch_progress.increment_processed()
        hooks.call_callbacks(f"on_{stage}_batch_end", output, *hook_args)
        hooks.call_module(f"on_{stage}_batch_end", output, *hook_args)
        trainer._logger_connector.on_batch_end()
        self.batch_progress.increment_completed()
        if not trainer.sanity_checking:
            self._has_run = True
            trainer._logger_connector.update_eval_step_metrics(self._seen_batches_per_dataloader[dataloader_idx])
            self._seen_batches_per_dataloader[dataloader_idx] += 1

    def _store_dataloader_outputs(self) -> None:
        connector = self.trainer._logger_connector
        connector.epoch_end_reached()
        self._logged_outputs.append(connector.update_eval_epoch_metrics())

    def _on_run_end(self) -> List[Dict[str, float]]:
        trainer = self.trainer
        hooks = trainer._hooks
        stage = self._hook_stage
        connector = trainer._logger_connector
        connector.epoch_end_reached()
        connector.evaluation_epoch_end()
        hooks.call_callbacks(f"on_{stage}_epoch_end")
        hooks.call_module(f"on_{stage}_epoch_end")
        connector.on_epoch_end()
        logged_outputs, self._logged_outputs = self._logged_outputs, []
        epoch_end_logged = connector.update_eval_epoch_metrics()
        all_logged = dict(ChainMap(*logged_outputs))
        all_logged.update(epoch_end_logged)
        for dl_outputs in logged_outputs:
            dl_outputs.update(epoch_end_logged)
        connector.log_eval_end_metrics(all_logged)
        hooks.call_callbacks(f"on_{stage}_end")
        hooks.call_module(f"on_{stage}_end")
        hooks.call_strategy(f"on_{stage}_end")
        connector.reset_results()
        module = trainer.lightning_module
        train_hook = f"on_{stage}_model_train"
        if lightning_is_overridden(train_hook, module):  # gated as in Lightning
            hooks.call_module(train_hook)
        else:
            self._module_mode.restore(module)
        results = [to_float_dict(d) for d in logged_outputs]
        if self.verbose and trainer.is_global_zero and not trainer.sanity_checking:
            _print_results(results, self._stage)
        return results

    def _verify_dataloader_idx_requirement(self) -> None:
        module = self.trainer.lightning_module
        stage = self._hook_stage
        expected = self._is_sequential and self.num_dataloaders > 1
        verify_dataloader_idx_requirement(module, (self._step_name,), expected, self._prefix)
        verify_dataloader_idx_requirement(module, (f"on_{stage}_batch_start", f"on_{stage}_batch_end"), expected,
                                          self._prefix)

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"state_dict": {}, "batch_progress": self.batch_progress.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.batch_progress.load_state_dict(state.get("batch_progress", {}))


def _set_epoch_from_training(trainer: "Trainer", combined: CombinedLoader) -> None:
    """Samplers with ``set_epoch`` outside ``fit`` get the number of epochs trained so far (Lightning's choice:
    "some users want validation shuffling based on the training progress")."""
    for dl in combined.flattened:
        set_sampler_epoch(dl, trainer.fit_loop.epoch_progress.current.processed)


def _step_args(hook_args: tuple, takes_batch_idx: bool) -> tuple:
    """A step's arguments: the hooks' ``(batch, batch_idx[, dataloader_idx])``, without ``batch_idx`` when the
    step does not take it."""
    if takes_batch_idx:
        return hook_args
    return (hook_args[0],) + hook_args[2:]


class _PulledBatches:
    """The ``dataloader_iter`` a pulling ``predict_step`` gets: ``next()`` gives ``(batch, batch_idx,
    dataloader_idx)``; one triple is read ahead so the loop knows when none is left."""

    def __init__(self, batches: Any) -> None:
        self._batches = iter(batches)
        self.batch: Any = None
        self.batch_idx = 0
        self.dataloader_idx = 0
        self._ahead: Optional[tuple] = None
        self._read_ahead()

    @property
    def done(self) -> bool:
        return self._ahead is None

    def hook_args(self, multi: bool) -> tuple:
        """The batch hooks' arguments: the last triple taken (``None, 0, 0`` before the first)."""
        return (self.batch, self.batch_idx, self.dataloader_idx) if multi else (self.batch, self.batch_idx)

    def __iter__(self) -> "_PulledBatches":
        return self

    def __next__(self) -> tuple:
        if self._ahead is None:
            raise StopIteration
        self.dataloader_idx, self.batch_idx, self.batch = self._ahead
        self._read_ahead()
        return self.batch, self.batch_idx, self.dataloader_idx

    def _read_ahead(self) -> None:
        self._ahead = next(self._batches, None)


def verify_dataloader_idx_requirement(module: Any, hooks: tuple, expected: bool, prefix: str) -> None:
    """Lightning's check of the step/batch hooks' signatures against the number of loaders: several loaders need a
    ``dataloader_idx`` argument; one loader must not require it (a default value is fine)."""
    for name in hooks:
        fn = getattr(module, name)
        present = is_param_in_signature(fn, "dataloader_idx")
        if expected and not present:
            raise RuntimeError(
                f"You provided multiple `{prefix}_dataloader`, but no `dataloader_idx`"
                f" argument in `{type(module).__name__}.{name}()`. Try adding `dataloader_idx=0` to its"
                " signature."
            )
        if not expected and present:
            params = inspect.signature(fn).parameters
            if "dataloader_idx" in params and params["dataloader_idx"].default is inspect.Parameter.empty:
                raise RuntimeError(
                    f"You provided only a single `{prefix}_dataloader`, but have included "
                    f"`dataloader_idx` in `{type(module).__name__}.{name}()`. Either remove the"
                    " argument or give it a default value i.e. `dataloader_idx=0`."
                )


def _print_results(results: List[Dict[str, float]], stage: str) -> None:
    if not results or not any(results):
        return
    width = shutil.get_terminal_size(fallback=(100, 24)).columns
    width = min(width, 100)
    title = f"{stage.capitalize()} metric"
    for i, metrics in enumerate(results):
        if not metrics:
            continue
        header = title if len(results) == 1 else f"{title} (DataLoader {i})"
        key_w = max(len(header), *(len(k) for k in metrics)) + 2
        print("─" * width)
        print(f"{header:^{key_w}}{'Value':^{width - key_w}}")
        print("─" * width)
        for k, v in metrics.items():
            print(f"{k:^{key_w}}{v:^{width - key_w}.6g}")
        print("─" * width)


class PredictionLoop:
    """Runs ``predict_step`` over the predict dataloaders and returns (optionally) the outputs."""

    def __init__(self, trainer: "Trainer", inference_mode: bool = True) -> None:
        self.trainer = trainer
        self.inference_mode = inference_mode
        self.batch_progress = BatchProgress()
        # dataset indices of the batches, for prediction writers: per dataloader, per batch (epoch writers)
        # and of the batch just predicted (batch writers)
        self.epoch_batch_indices: List[List[List[int]]] = []
        self.current_batch_indices: List[int] = []
        self._predictions: List[List[Any]] = []  # dataloaders x batches
        self.return_predictions = True
        self._combined_loader: Optional[CombinedLoader] = None
        self._max_batches: List[Number] = []
        self._module_mode = _ModuleMode()

    @property
    def num_dataloaders(self) -> int:
        return len(self._loaders)

    @property
    def _loaders(self) -> List[Any]:
        return self._combined_loader.flattened if self._combined_loader is not None else []

    def reset_data(self) -> None:
        """Nothing to forget: ``setup_data`` requests the predict dataloaders at every run."""
        self._combined_loader = None

    def setup_data(self) -> None:
        trainer = self.trainer
        if trainer.limit_predict_batches == 0:
            self._combined_loader, self._max_batches = None, []
            return
        loaders = request_dataloader(trainer, "predict_dataloader")
        if loaders is None:
            raise MisconfigurationException(
                "No `predict_dataloader()` method defined to run `Trainer.predict`: pass `dataloaders=` or a"
                " datamodule with `predict_dataloader`."
            )
        combined = combine(loaders, "sequential")
        combined.flattened = [
            with_batch_index_recording(trainer.strategy.process_dataloader(seed_workers(dl), "predict"))
            for dl in combined.flattened
        ]
        _set_epoch_from_training(trainer, combined)
        self._combined_loader = combined
        self._max_batches = []
        for dl in combined.flattened:
            n = loader_length(trainer, dl)
            length: Number = float("inf") if n is None else n
            self._max_batches.append(parse_num_batches("predict", length, trainer.limit_predict_batches))

    @property
    def predictions(self) -> List[Any]:
        """The predictions kept so far: one list for one dataloader, a list per dataloader for several."""
        if self._predictions == []:
            return self._predictions
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions

    def run(self) -> Optional[List[Any]]:
        self.setup_data()
        if sum(self._max_batches) == 0:
            return None
        with _grad_context(self.trainer, self.inference_mode):
            return self._run()

    def _run(self) -> Optional[List[Any]]:
        trainer = self.trainer
        hooks = trainer._hooks
        module = trainer.lightning_module
        self.batch_progress.reset_on_run()
        combined = self._combined_loader
        assert combined is not None
        if combined.mode != "sequential":
            raise ValueError('`trainer.predict()` only supports the `CombinedLoader(mode="sequential")` mode.')
        combined.limits = self._max_batches
        pulls = "dataloader_iter" in inspect.signature(module.predict_step).parameters
        self._verify_dataloader_idx_requirement(pulls)
        self._module_mode.capture(module)
        hooks.call_module("on_predict_model_eval")
        self._predictions = [[] for _ in self._loaders]
        self.epoch_batch_indices = [[] for _ in self._loaders]
        writers = _prediction_writers(trainer.callbacks)
        any_on_epoch = any(w.interval.on_epoch for w in writers)
        any_on_batch = any(w.interval.on_batch for w in writers)
        hooks.call_callbacks("on_predict_start")
        hooks.call_module("on_predict_start")
        hooks.call_strategy("on_predict_start")
        hooks.call_callbacks("on_predict_epoch_start")
        hooks.call_module("on_predict_epoch_start")
        batches = _combined_batches(combined, self.batch_progress, trainer.profiler)
        if pulls:
            self._run_steps_that_pull(batches)
        else:
            self._run_steps(batches, any_on_batch, any_on_epoch)
        hooks.call_callbacks("on_predict_epoch_end")
        hooks.call_module("on_predict_epoch_end")
        results = self.predictions if self.return_predictions else None
        if not self.return_predictions:
            self._predictions = []
        self.epoch_batch_indices = []
        hooks.call_callbacks("on_predict_end")
        hooks.call_module("on_predict_end")
        hooks.call_strategy("on_predict_end")
        self._module_mode.restore(module)
        return results

    def _verify_dataloader_idx_requirement(self, pulls: bool) -> None:
        """With several predict loaders the step and batch hooks must take ``dataloader_idx``; with one, they
        must not require it (Lightning's checks and wording, before any hook runs)."""
        module = self.trainer.lightning_module
        multi = len(self._loaders) > 1
        verify_dataloader_idx_requirement(module, ("predict_step",), multi and not pulls, "predict")
        verify_dataloader_idx_requirement(module, ("on_predict_batch_start", "on_predict_batch_end"), multi, "predict")

    def _run_steps(self, batches: Any, any_on_batch: bool, any_on_epoch: bool) -> None:
        """One ``predict_step`` per batch, each batch moved to the device first."""
        trainer = self.trainer
        takes_batch_idx = is_param_in_signature(trainer.lightning_module.predict_step, "batch_idx", min_args=2)
        for dl_idx, batch_idx, batch in batches:
            batch = trainer._transfer_batch(batch, dl_idx)
            self.batch_progress.increment_ready()
            if any_on_batch or any_on_epoch:
                self._note_batch_indices(dl_idx, batch_idx, any_on_batch, any_on_epoch)
            output = self._predict_batch(batch, batch_idx, dl_idx, takes_batch_idx)
            if self.return_predictions or any_on_epoch:  # an epoch writer needs them even when not returned
                self._predictions[dl_idx].append(_to_cpu(output))

    def _predict_batch(self, batch: Any, batch_idx: int, dl_idx: int, takes_batch_idx: bool) -> Any:
        """The batch hooks around one ``predict_step``; returns its output."""
        trainer = self.trainer
        hooks = trainer._hooks
        multi = len(self._loaders) > 1
        hook_args: tuple = (batch, batch_idx) if not multi else (batch, batch_idx, dl_idx)
        hooks.call_callbacks("on_predict_batch_start", *hook_args)
        hooks.call_module("on_predict_batch_start", *hook_args)
        self.batch_progress.increment_started()
        step_args = hook_args if takes_batch_idx or multi else (batch,)
        output = eval_step(trainer, "predict_step", step_args)
        if output is None:
            trainer._warn_once("predict returned None if it was on purpose, ignore this warning...")
        self.batch_progress.increment_processed()
        hooks.call_callbacks("on_predict_batch_end", output, *hook_args)
        hooks.call_module("on_predict_batch_end", output, *hook_args)
        self.batch_progress.increment_completed()
        return output

    def _run_steps_that_pull(self, batches: Any) -> None:
        """``predict_step(self, dataloader_iter)``, Lightning's experimental flavour: each step takes what it
        needs from an iterator of ``(batch, batch_idx, dataloader_idx)`` (batches not moved to the device);
        the batch hooks see the last triple taken before the step and after it, as in Lightning."""
        trainer = self.trainer
        hooks = trainer._hooks
        warnings.warn("Found `dataloader_iter` argument in the `predict_step`. Note that the support for this"
                      " signature is experimental and the behavior is subject to change.")
        config = trainer._compile_config
        if config.enabled and config.eval_steps:
            from trainer.compile.engine import CompileWarning

            warnings.warn("trainer.compile: running `predict_step` eagerly: it takes `dataloader_iter` (the step"
                          " fetches its own batches, which a graph cannot)", CompileWarning)
        source = _PulledBatches(batches)
        multi = len(self._loaders) > 1
        while not source.done:
            self.batch_progress.increment_ready()
            hooks.call_callbacks("on_predict_batch_start", *source.hook_args(multi))
            hooks.call_module("on_predict_batch_start", *source.hook_args(multi))
            self.batch_progress.increment_started()
            output = trainer.strategy.predict_step(source)
            if output is None:
                trainer._warn_once("predict returned None if it was on purpose, ignore this warning...")
            self.batch_progress.increment_processed()
            hooks.call_callbacks("on_predict_batch_end", output, *source.hook_args(multi))
            hooks.call_module("on_predict_batch_end", output, *source.hook_args(multi))
            self.batch_progress.increment_completed()
            if self.return_predictions:
                self._predictions[source.dataloader_idx].append(_to_cpu(output))

    def _note_batch_indices(self, dl_idx: int, batch_idx: int, on_batch: bool, on_epoch: bool) -> None:
        """Records which dataset indices batch ``batch_idx`` of loader ``dl_idx`` holds, for the writers."""
        loader = self._loaders[dl_idx]
        seen = recorded_batch_indices(loader)
        if not seen:
            self.trainer._warn_once(
                f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`"
            )
            return
        indices = seen[batch_idx]
        if on_epoch:
            self.epoch_batch_indices[dl_idx].append(indices)
        if on_batch:
            self.current_batch_indices = indices

    def state_dict(self) -> Dict[str, Any]:
        return {"state_dict": {}, "batch_progress": self.batch_progress.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.batch_progress.load_state_dict(state.get("batch_progress", {}))


def _combined_batches(combined: CombinedLoader, progress: BatchProgress, profiler: Any = None) -> Any:
    """``(dataloader_idx, batch_idx, batch)`` of a sequential ``CombinedLoader`` (its limits applied), fetched as
    Lightning fetches them; ``progress.is_last_batch`` is set before each batch is handed out."""
    fetcher = Fetcher(combined)
    if profiler is not None:
        fetcher.profile_fetches(profiler, "[_PredictionLoop].predict_next")
    fetcher.reset_iterator()
    while True:
        try:
            batch, batch_idx, dl_idx = next(fetcher)
        except StopIteration:
            return
        progress.is_last_batch = fetcher.done
        yield dl_idx, batch_idx, batch


def _prediction_writers(callbacks: List[Any]) -> List[Any]:
    from trainer.callbacks.prediction_writer import BasePredictionWriter

    return [cb for cb in callbacks if isinstance(cb, BasePredictionWriter)]


def _to_cpu(output: Any) -> Any:
    from trainer.utilities import move_data_to_device

    return move_data_to_device(output, torch.device("cpu"))



__all__ = ["EvaluationLoop", "PredictionLoop"]
