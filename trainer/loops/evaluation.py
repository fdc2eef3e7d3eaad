"""Validation and test loops (also the sanity check and in-fit validation), and the predict loop."""
from __future__ import annotations

import math
import shutil
from collections import ChainMap, defaultdict
from typing import TYPE_CHECKING, Any, ContextManager, Dict, List, Optional, Union

import torch

from trainer.compile.eval import eval_step
from trainer.exceptions import MisconfigurationException
from trainer.hooks import is_overridden
from trainer.logging import ResultCollection
from trainer.loops.data import Fetcher, disable_shuffle, flatten_loaders, parse_num_batches, request_dataloader, \
    seed_workers, set_sampler_epoch, sized_len
from trainer.loops.progress import BatchProgress
from trainer.utilities import is_param_in_signature, to_float_dict

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
        self._loaders: Optional[List[Any]] = None
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
        return len(self._loaders or [])

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
        self._loaders = None

    def setup_data(self) -> None:
        trainer = self.trainer
        if self._loaders is not None and self._trainer_fn == "fit" and not self._should_reload_val_dl:
            return
        limit = trainer.limit_test_batches if self._stage == "test" else trainer.limit_val_batches
        if limit == 0 or not is_overridden(self._step_name, trainer.lightning_module):
            self._loaders = []
            self._max_batches = []
            return
        if self._trainer_fn == "fit" and (
            (trainer.sanity_checking and trainer.fit_loop.epoch_loop._should_check_val_epoch())
            or not trainer.sanity_checking
        ):
            self._last_val_dl_reload_epoch = trainer.current_epoch
        loaders = request_dataloader(trainer, f"{self._prefix}_dataloader")
        if loaders is None:
            self._loaders = []
            self._max_batches = []
            return
        flat, _ = flatten_loaders(loaders)
        processed = []
        for dl in flat:
            if self._trainer_fn == "fit" and trainer.overfit_batches > 0:
                dl = disable_shuffle(dl)
            processed.append(trainer.strategy.process_dataloader(seed_workers(dl), self._prefix))
        self._loaders = processed
        self._max_batches = []
        for dl in processed:
            n = sized_len(dl)
            length: Number = float("inf") if n is None else n
            self._max_batches.append(parse_num_batches(self._prefix, length, limit))
        self._seen_batches_per_dataloader = defaultdict(int)

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
        if self._trainer_fn == "fit":
            for dl in self._loaders or []:
                set_sampler_epoch(dl, trainer.fit_loop.epoch_progress.current.processed)
        self._verify_dataloader_idx_requirement()
        hooks = trainer._hooks
        module = trainer.lightning_module
        stage = self._hook_stage
        self._module_mode.capture(module)
        hooks.call_module(f"on_{stage}_model_eval")
        hooks.call_callbacks(f"on_{stage}_start")
        hooks.call_module(f"on_{stage}_start")
        hooks.call_callbacks(f"on_{stage}_epoch_start")
        hooks.call_module(f"on_{stage}_epoch_start")
        multi = self.num_dataloaders > 1
        max_batches = self.max_batches
        step_fn = getattr(module, self._step_name)
        takes_batch_idx = is_param_in_signature(step_fn, "batch_idx", min_args=2)
        previous_idx = 0
        for dl_idx, batch_idx, batch in _sequential_batches(self._loaders or [], max_batches, self.batch_progress):
            if dl_idx != previous_idx:  # the dataloader changed: its epoch-level results are complete
                self._store_dataloader_outputs()
            previous_idx = dl_idx
            self._evaluation_step(batch, batch_idx, dl_idx if multi else None, takes_batch_idx)
        self._store_dataloader_outputs()
        return self._on_run_end()

    def _evaluation_step(self, batch: Any, batch_idx: int, dataloader_idx: Optional[int], takes_batch_idx: bool) -> None:
        trainer = self.trainer
        hooks = trainer._hooks
        stage = self._hook_stage
        batch = trainer._transfer_batch(batch, dataloader_idx or 0)
        hook_args: tuple = (batch, batch_idx) if dataloader_idx is None else (batch, batch_idx, dataloader_idx)
        self.batch_progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch, dataloader_idx)
        hooks.call_callbacks(f"on_{stage}_batch_start", *hook_args)
        hooks.call_module(f"on_{stage}_batch_start", *hook_args)
        self.batch_progress.increment_started()
        step_args = hook_args if takes_batch_idx or dataloader_idx is not None else (batch,)
        output = eval_step(trainer, "test_step" if self._stage == "test" else "validation_step", step_args)
        self.batch_progress.increment_processed()
        hooks.call_callbacks(f"on_{stage}_batch_end", output, *hook_args)
        hooks.call_module(f"on_{stage}_batch_end", output, *hook_args)
        trainer._logger_connector.on_batch_end()
        self.batch_progress.increment_completed()
        if not trainer.sanity_checking:
            self._has_run = True
            idx = dataloader_idx or 0
            trainer._logger_connector.update_eval_step_metrics(self._seen_batches_per_dataloader[idx])
            self._seen_batches_per_dataloader[idx] += 1

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
        connector.reset_results()
        module = trainer.lightning_module
        train_hook = f"on_{stage}_model_train"
        if is_overridden(train_hook, module):
            hooks.call_module(train_hook)
        else:
            self._module_mode.restore(module)
        results = [to_float_dict(d) for d in logged_outputs]
        if self.verbose and trainer.is_global_zero and not trainer.sanity_checking:
            _print_results(results, self._stage)
        return results

    def _verify_dataloader_idx_requirement(self) -> None:
        trainer = self.trainer
        module = trainer.lightning_module
        step = getattr(module, self._step_name)
        if self.num_dataloaders > 1 and not is_param_in_signature(step, "dataloader_idx", min_args=3):
            raise RuntimeError(
                f"You provided multiple `{self._prefix}` dataloaders, but your `{self._step_name}` does not accept a"
                " `dataloader_idx` argument. Add `dataloader_idx: int = 0` to its signature."
            )

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"state_dict": {}, "batch_progress": self.batch_progress.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.batch_progress.load_state_dict(state.get("batch_progress", {}))


def _sequential_batches(loaders: List[Any], max_batches: List[Number], progress: BatchProgress) -> Any:
    """Yields ``(dataloader_idx, batch_idx, batch)`` over each loader in turn, at most its limit of
    batches, keeping ``progress.is_last_batch`` current (Lightning's sequential mode)."""
    for dl_idx, dl in enumerate(loaders):
        limit = max_batches[dl_idx]
        if limit == 0:
            continue
        fetcher = Fetcher(_Limited(dl, limit))
        fetcher.reset_iterator()
        batch_idx = 0
        while True:
            try:
                batch = next(fetcher)
            except StopIteration:
                break
            progress.is_last_batch = fetcher.done
            yield dl_idx, batch_idx, batch
            batch_idx += 1


class _Limited:
    """Iterates at most ``limit`` batches of ``loader``; ``len`` is the limited length when known."""

    def __init__(self, loader: Any, limit: Number) -> None:
        self.loader = loader
        self.limit = limit

    def __len__(self) -> int:
        n = sized_len(self.loader)
        if n is None and math.isinf(self.limit):
            raise TypeError("no length")
        if n is None:
            return int(self.limit)
        return int(min(n, self.limit))

    def __iter__(self) -> Any:
        it = iter(self.loader)
        if math.isinf(self.limit):
            return it
        return _take(it, int(self.limit))


def _take(it: Any, n: int) -> Any:
    for i, b in enumerate(it):
        if i >= n:
            return
        yield b


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
        self.epoch_batch_indices: List[List[List[int]]] = []
        self.predictions: List[Any] = []
        self.return_predictions = True
        self._loaders: List[Any] = []
        self._max_batches: List[Number] = []
        self._module_mode = _ModuleMode()

    def reset_data(self) -> None:
        """Nothing to forget: ``setup_data`` requests the predict dataloaders at every run."""
        self._loaders = []

    def setup_data(self) -> None:
        trainer = self.trainer
        if trainer.limit_predict_batches == 0:
            self._loaders, self._max_batches = [], []
            return
        loaders = request_dataloader(trainer, "predict_dataloader")
        if loaders is None:
            raise MisconfigurationException(
                "No `predict_dataloader()` method defined to run `Trainer.predict`: pass `dataloaders=` or a"
                " datamodule with `predict_dataloader`."
            )
        flat, _ = flatten_loaders(loaders)
        self._loaders = [trainer.strategy.process_dataloader(seed_workers(dl), "predict") for dl in flat]
        self._max_batches = []
        for dl in self._loaders:
            n = sized_len(dl)
            length: Number = float("inf") if n is None else n
            self._max_batches.append(parse_num_batches("predict", length, trainer.limit_predict_batches))

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
        self._module_mode.capture(module)
        hooks.call_module("on_predict_model_eval")
        self.predictions = [[] for _ in self._loaders]
        hooks.call_callbacks("on_predict_start")
        hooks.call_module("on_predict_start")
        hooks.call_callbacks("on_predict_epoch_start")
        hooks.call_module("on_predict_epoch_start")
        multi = len(self._loaders) > 1
        takes_batch_idx = is_param_in_signature(module.predict_step, "batch_idx", min_args=2)
        for dl_idx, batch_idx, batch in _sequential_batches(self._loaders, self._max_batches, self.batch_progress):
            batch = trainer._transfer_batch(batch, dl_idx)
            hook_args: tuple = (batch, batch_idx) if not multi else (batch, batch_idx, dl_idx)
            self.batch_progress.increment_ready()
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
            if self.return_predictions:
                self.predictions[dl_idx].append(_to_cpu(output))
        hooks.call_callbacks("on_predict_epoch_end")
        hooks.call_module("on_predict_epoch_end")
        hooks.call_callbacks("on_predict_end")
        hooks.call_module("on_predict_end")
        self._module_mode.restore(module)
        if not self.return_predictions:
            return None
        return self.predictions[0] if len(self.predictions) == 1 else self.predictions

    def state_dict(self) -> Dict[str, Any]:
        return {"state_dict": {}, "batch_progress": self.batch_progress.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.batch_progress.load_state_dict(state.get("batch_progress", {}))


def _to_cpu(output: Any) -> Any:
    from trainer.utilities import move_data_to_device

    return move_data_to_device(output, torch.device("cpu"))


__all__ = ["EvaluationLoop", "PredictionLoop"]
