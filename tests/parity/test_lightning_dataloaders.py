"""Several dataloaders and ``overfit_batches`` (issue 18, items 1 and 2): the same script under
pytorch-lightning 2.6.6 (the oracle, asserted first) and under `trainer`, compared.

What is compared: what each step and hook receives (batch structure, ``batch_idx``, ``dataloader_idx``,
``is_last_batch``), ``num_training_batches`` / ``num_val_batches``, the loaders the trainer exposes,
warnings and errors by class and wording, logged values and the final weights (fp32 within 1e-6; under
``TRAINER_COMPILE=1`` the training step is the compiled engine's and must not have fallen back).
"""
from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any, Callable, Dict, List

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    boring_model_class,
    compiled_engine,
    import_framework,
    make_dataset,
    make_loader,
    quiet_trainer_kwargs,
)
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler

pytestmark = [pytest.mark.parity]

RTOL, ATOL = 1e-6, 1e-7


def combined_loader_class(L: ModuleType) -> type:
    if L.__name__ == "pytorch_lightning":
        from pytorch_lightning.utilities.combined_loader import CombinedLoader
    else:
        from trainer.utilities.combined_loader import CombinedLoader
    return CombinedLoader


def _trainer(L: ModuleType, root, **kw) -> Any:
    args = quiet_trainer_kwargs(root)
    args.update(num_sanity_val_steps=0)
    args.update(kw)
    return L.Trainer(**args)


def _shape(batch: Any) -> Any:
    """The structure of a batch with each tensor replaced by (shape, rounded sum): comparable across frameworks."""
    if isinstance(batch, torch.Tensor):
        return (tuple(batch.shape), round(float(batch.sum()), 4))
    if isinstance(batch, dict):
        return {k: _shape(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [type(batch).__name__] + [_shape(v) for v in batch]
    return batch


def _weights(model: torch.nn.Module) -> Dict[str, List[float]]:
    return {k: v.detach().flatten().tolist() for k, v in model.state_dict().items()}


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the class and the words are the result
        return {"raised": type(exc).__name__, "message": str(exc)}
    return None


def assert_close(got: Any, expected: Any, path: str = "result") -> None:
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), f"{path}: {got!r} != {expected!r}"
        for k in expected:
            assert_close(got[k], expected[k], f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), f"{path}: {got!r} != {expected!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=RTOL, abs=ATOL), f"{path}: {got!r} != {expected!r}"
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"


def both(scenario: Callable, tmp_path, **kw) -> tuple:
    """(Lightning's result, ours): the oracle runs first."""
    expected = scenario(import_framework("lightning"), tmp_path / "lightning", **kw)
    got = scenario(import_framework("trainer"), tmp_path / "trainer", **kw)
    return expected, got


# --------------------------------------------------------------------------------------------
# 1. Several training loaders
# --------------------------------------------------------------------------------------------

def _multi_train(L: ModuleType, root, loaders: str, mode: str = None, passed: bool = False,
                 **trainer_kw) -> Dict[str, Any]:
    Base = boring_model_class(L)
    CombinedLoader = combined_loader_class(L)

    class Model(Base):
        def __init__(self):
            super().__init__()
            self.seen: List[Any] = []

        def train_dataloader(self):
            a, b, c = make_loader(16, 4, seed=0), make_loader(8, 4, seed=5), make_loader(12, 4, seed=6)
            tree = {"list": [a, b], "dict": {"a": a, "b": b}, "nested": {"a_b": [a, b], "c": (c,)},
                    "single_in_list": [a]}[loaders]
            return tree if mode is None else CombinedLoader(tree, mode)

        def on_train_batch_start(self, batch, batch_idx):  # outside the (compiled) step: records what it gets
            self.seen.append((batch_idx, self.trainer.is_last_batch, _shape(batch)))

        def training_step(self, batch, batch_idx):
            pairs = [pair for pair in _leaves(batch) if pair is not None]
            loss = self.loss(pairs[0])
            for weight, (x, y) in enumerate(pairs[1:], start=2):  # each loader's batch counts differently
                loss = loss + F.mse_loss(self(x), y) / weight
            return loss

    model = Model()
    trainer = _trainer(L, root, max_epochs=2, **trainer_kw)
    # the loaders from the hook, or the same loaders given to fit(train_dataloaders=...)
    error = _outcome(lambda: trainer.fit(model, model.train_dataloader()) if passed else trainer.fit(model))
    return {
        "error": error,
        "num_training_batches": trainer.num_training_batches,
        "seen": model.seen,
        "weights": _weights(model),
        "train_dataloader": type(trainer.train_dataloader).__name__,
        "global_step": trainer.global_step,
        "compiled": _compiled_in_full(L, trainer) if error is None else None,
    }


def _leaves(batch: Any) -> List[Any]:
    """The (x, y) pairs (or None for an exhausted max_size loader) of a combined batch, in order."""
    if batch is None or (isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor)):
        return [batch]
    values = batch.values() if isinstance(batch, dict) else batch
    return [leaf for value in values for leaf in _leaves(value)]


def _compiled_in_full(L: ModuleType, trainer: Any) -> Any:
    """Under the compiled engine, that the whole training step was compiled (no silent eager fallback)."""
    if L.__name__ == "pytorch_lightning" or not compiled_engine():
        return None
    return trainer.compile_report.mode == "full" or str(trainer.compile_report)


@pytest.mark.parametrize("loaders, mode, batches", [
    ("list", None, 4),  # Lightning's default for several train loaders: max_size_cycle
    ("dict", None, 4),
    ("nested", "max_size_cycle", 4),
    ("nested", "min_size", 2),
    ("nested", "max_size", 4),
    ("dict", "min_size", 2),
    ("single_in_list", None, 4),
])
@pytest.mark.parametrize("passed", [False, True], ids=["hook", "passed_to_fit"])
def test_fit_with_several_train_loaders(tmp_path, loaders, mode, batches, passed):
    expected, got = both(_multi_train, tmp_path, loaders=loaders, mode=mode, passed=passed)
    assert expected["error"] is None and expected["num_training_batches"] == batches
    assert len(expected["seen"]) == 2 * batches and expected["global_step"] == 2 * batches
    if loaders == "single_in_list":
        assert expected["train_dataloader"] == "list"  # the structure the loaders were given in
    if compiled_engine():
        assert got["compiled"] is True, f"the compiled engine fell back to eager: {got['compiled']}"
    expected.pop("compiled"), got.pop("compiled")
    assert_close(got, expected)


@pytest.mark.parametrize("limit", [3, 0.5])
def test_limit_train_batches_with_several_loaders(tmp_path, limit):
    expected, got = both(_multi_train, tmp_path, loaders="dict", mode="max_size_cycle", limit_train_batches=limit)
    assert expected["num_training_batches"] == (3 if limit == 3 else 2)
    expected.pop("compiled"), got.pop("compiled")
    assert_close(got, expected)


def test_sequential_mode_is_refused_by_fit(tmp_path):
    expected, got = both(_multi_train, tmp_path, loaders="nested", mode="sequential")
    assert expected["error"]["raised"] == "ValueError"
    assert "does not support the `CombinedLoader(mode=\"sequential\")` mode" in expected["error"]["message"]
    assert expected["num_training_batches"] == 4 + 2 + 3  # set before the loop refuses to run
    assert got["error"] == expected["error"]
    assert got["num_training_batches"] == expected["num_training_batches"]


def _dataloader_idx_in_hooks(L: ModuleType, root, mode: str) -> Dict[str, Any]:
    """Which dataloader_idx every batch hook gets, in every stage (Lightning's test_correct_dataloader_idx_in_hooks)."""
    Base = boring_model_class(L)
    CombinedLoader = combined_loader_class(L)
    calls: List[Any] = []

    class Model(Base):
        def _record(self, hook, *args):
            calls.append((self.trainer.state.stage.value, hook) + args)

        def on_before_batch_transfer(self, batch, dataloader_idx):
            self._record("on_before_batch_transfer", dataloader_idx)
            return batch

        def on_after_batch_transfer(self, batch, dataloader_idx):
            self._record("on_after_batch_transfer", dataloader_idx)
            return batch

        def training_step(self, batch, batch_idx):
            self._record("training_step", batch_idx, sorted(batch))
            return self.loss(batch["a"])

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            # no public is_last_batch for evaluation: both frameworks keep it in the loop's batch progress
            self._record("validation_step", batch_idx, dataloader_idx,
                         self.trainer._evaluation_loop.batch_progress.is_last_batch)
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self._record("test_step", batch_idx, dataloader_idx)
            self.log("test_loss", self.loss(batch))

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            self._record("predict_step", batch_idx, dataloader_idx)
            return self(batch[0])

        def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
            self._record("on_validation_batch_start", batch_idx, dataloader_idx)

        def train_dataloader(self):
            return CombinedLoader({"a": make_loader(12, 4), "b": make_loader(8, 4, seed=3)}, mode=mode)

        def val_dataloader(self):
            return [make_loader(8, 4, seed=1), make_loader(12, 4, seed=2)]

        def test_dataloader(self):
            return [make_loader(4, 4, seed=2), make_loader(8, 4, seed=4)]

        def predict_dataloader(self):
            return [make_loader(8, 4, seed=2), make_loader(4, 4, seed=4)]

    model = Model()
    trainer = _trainer(L, root, max_epochs=1, limit_val_batches=2, num_sanity_val_steps=1)
    trainer.fit(model)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    loaders = [len(trainer.val_dataloaders)]
    tested = trainer.test(model, verbose=False)
    loaders += [trainer.val_dataloaders is None, len(trainer.test_dataloaders)]  # each entry point forgets the others'
    predictions = trainer.predict(model)
    loaders += [trainer.test_dataloaders is None, len(trainer.predict_dataloaders)]
    return {
        "calls": calls,
        "num_val_batches": trainer.num_val_batches,
        "num_test_batches": trainer.num_test_batches,
        "num_predict_batches": trainer.num_predict_batches,
        "val_metrics": metrics,
        "tested": tested,
        "predictions": [[tuple(p.shape) for p in per_loader] for per_loader in predictions],
        "loaders": loaders,
    }


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle"])
def test_dataloader_idx_reaches_every_hook_as_in_lightning(tmp_path, mode):
    expected, got = both(_dataloader_idx_in_hooks, tmp_path, mode=mode)
    assert expected["num_val_batches"] == [2, 2] and expected["num_predict_batches"] == [2, 1]
    assert sorted(expected["val_metrics"]) == ["val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"]
    val_steps = [c[2:] for c in expected["calls"] if c[:2] == ("validate", "validation_step")]
    # the last batch is the last batch of the last loader, not of each loader
    assert val_steps == [(0, 0, False), (1, 0, False), (0, 1, False), (1, 1, True)]
    assert_close(got, expected)


# --------------------------------------------------------------------------------------------
# 2. Signatures that do not fit the number of loaders
# --------------------------------------------------------------------------------------------

def _signature_errors(L: ModuleType, root, case: str) -> Any:
    Base = boring_model_class(L)
    CombinedLoader = combined_loader_class(L)

    class TwoValLoadersNoIdx(Base):
        def val_dataloader(self):
            return [make_loader(8, 4), make_loader(8, 4, seed=1)]

    class OneLoaderRequiredIdx(Base):
        def validation_step(self, batch, batch_idx, dataloader_idx):
            return self.loss(batch)

    class TwoPredictLoadersNoIdx(Base):
        def predict_step(self, batch, batch_idx):
            return self(batch)

    class PredictNotSequential(Base):
        def predict_dataloader(self):
            return CombinedLoader([make_loader(8, 4)], "max_size_cycle")

    trainer = _trainer(L, root, max_epochs=1, limit_train_batches=1)
    if case == "val_needs_idx":
        return _outcome(lambda: trainer.fit(TwoValLoadersNoIdx()))
    if case == "single_required_idx":
        return _outcome(lambda: trainer.validate(OneLoaderRequiredIdx(), verbose=False))
    if case == "predict_needs_idx":
        loaders = [torch.utils.data.DataLoader(torch.randn(4, 8), batch_size=2)] * 2
        return _outcome(lambda: trainer.predict(TwoPredictLoadersNoIdx(), dataloaders=loaders))
    return _outcome(lambda: trainer.predict(PredictNotSequential()))


@pytest.mark.parametrize("case, raised, words", [
    ("val_needs_idx", "RuntimeError", "You provided multiple `val_dataloader`, but no `dataloader_idx` argument"),
    ("single_required_idx", "RuntimeError", "You provided only a single `val_dataloader`, but have included"),
    ("predict_needs_idx", "RuntimeError", "You provided multiple `predict_dataloader`, but no `dataloader_idx`"),
    ("predict_not_sequential", "ValueError", "only supports the `CombinedLoader(mode=\"sequential\")` mode"),
])
def test_signature_and_mode_errors_match_lightning(tmp_path, case, raised, words):
    expected, got = both(_signature_errors, tmp_path, case=case)
    assert expected["raised"] == raised and words in expected["message"]
    assert got == expected


# --------------------------------------------------------------------------------------------
# 3. overfit_batches
# --------------------------------------------------------------------------------------------

def _overfit_without_validation_step(L: ModuleType, root, overfit: Any) -> Dict[str, Any]:
    Base = boring_model_class(L)

    class Model(Base):
        validation_step = None

        def train_dataloader(self):
            return DataLoader(make_dataset(40), batch_size=2, shuffle=True)  # 20 batches, shuffled

    model = Model()
    trainer = _trainer(L, root, max_epochs=2, overfit_batches=overfit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return {
        "num_val_batches": trainer.num_val_batches,
        "num_training_batches": trainer.num_training_batches,
        "sampler": type(trainer.train_dataloader.sampler).__name__,
        "warnings": sorted({str(w.message) for w in caught if "overfit" in str(w.message)}),
        "weights": _weights(model),
    }


@pytest.mark.parametrize("overfit", [1, 2, 0.1, 0.25, 1.0])
def test_overfit_batches_without_validation_step(tmp_path, overfit):
    expected, got = both(_overfit_without_validation_step, tmp_path, overfit=overfit)
    assert expected["num_val_batches"] == []
    assert expected["num_training_batches"] == (overfit if isinstance(overfit, int) else int(20 * overfit))
    assert expected["sampler"] == "SequentialSampler"
    assert expected["warnings"] == ["You requested to overfit but enabled train dataloader shuffling."
                                    " We are turning off the train dataloader shuffling for you."]
    assert_close(got, expected)


class _InOrder(Sampler):
    """A sampler that is not a SequentialSampler (though it reads in order): overfit replaces it anyway."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(range(len(self.data)))

    def __len__(self):
        return len(self.data)


def _overfit_with_validation(L: ModuleType, root, val_sampler: str) -> Dict[str, Any]:
    Base = boring_model_class(L)
    val_batches: List[Any] = []

    class Model(Base):
        def train_dataloader(self):
            ds = make_dataset(16)
            return DataLoader(ds, batch_size=4, sampler=_InOrder(ds))

        def val_dataloader(self):
            ds = make_dataset(12, seed=1)
            sampler = {"random": RandomSampler(ds), "sequential": SequentialSampler(ds), "custom": _InOrder(ds)}
            return DataLoader(ds, batch_size=4, sampler=sampler[val_sampler])

        def validation_step(self, batch, batch_idx):
            val_batches.append(_shape(batch))
            self.log("val_loss", self.loss(batch))

    model = Model()
    trainer = _trainer(L, root, max_epochs=2, overfit_batches=2, num_sanity_val_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return {
        "warnings": sorted({str(w.message) for w in caught if "overfit" in str(w.message)}),
        "train_sampler": type(trainer.train_dataloader.sampler).__name__,
        "val_sampler": type(trainer.val_dataloaders.sampler).__name__,
        "num_val_batches": trainer.num_val_batches,
        "num_training_batches": trainer.num_training_batches,
        "val_batches": val_batches,  # the validation data (not the training data), in order
        "val_loss": float(trainer.callback_metrics["val_loss"]),
        "weights": _weights(model),
    }


@pytest.mark.parametrize("val_sampler", ["random", "sequential", "custom"])
def test_overfit_batches_turns_off_shuffling_as_lightning_does(tmp_path, val_sampler):
    expected, got = both(_overfit_with_validation, tmp_path, val_sampler=val_sampler)
    assert expected["train_sampler"] == expected["val_sampler"] == "SequentialSampler"
    assert expected["num_val_batches"] == [2] and expected["num_training_batches"] == 2
    assert "You requested to overfit but enabled train dataloader shuffling." \
           " We are turning off the train dataloader shuffling for you." in expected["warnings"]
    assert (len(expected["warnings"]) == 2) == (val_sampler != "sequential")  # one for val when it needed it
    assert_close(got, expected)


def _overfit_several_random_loaders(L: ModuleType, root, num_loaders: int) -> Dict[str, Any]:
    Base = boring_model_class(L)
    samplers: List[List[str]] = []

    class Model(Base):
        validation_step = None

        def train_dataloader(self):
            loaders = []
            for i in range(num_loaders):
                ds = make_dataset(8, seed=i)
                loaders.append(DataLoader(ds, sampler=RandomSampler(ds), batch_size=2))
            return loaders

        def training_step(self, batch, batch_idx):
            samplers.append([type(dl.sampler).__name__ for dl in self.trainer.train_dataloader])
            return self.loss(batch[0])

    model = Model()
    trainer = _trainer(L, root, max_epochs=1, overfit_batches=1.0)
    trainer.fit(model)
    return {"samplers": samplers, "weights": _weights(model)}


@pytest.mark.parametrize("num_loaders", [1, 2])
@pytest.mark.filterwarnings("ignore:You requested to overfit")
def test_overfit_batches_with_several_random_loaders(tmp_path, num_loaders):
    expected, got = both(_overfit_several_random_loaders, tmp_path, num_loaders=num_loaders)
    assert expected["samplers"] == [["SequentialSampler"] * num_loaders] * 4
    assert_close(got, expected)


def _overfit_outside_fit(L: ModuleType, root, overfit: Any) -> Dict[str, Any]:
    """validate/test/predict with overfit_batches: validation is limited like in fit, test and predict are not."""
    model = boring_model_class(L)(n=40)
    trainer = _trainer(L, root, overfit_batches=overfit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, verbose=False)
        out = {"num_val_batches": trainer.num_val_batches,
               "val_sampler": type(trainer.val_dataloaders.sampler).__name__}
        trainer.test(model, verbose=False)
        out.update(num_test_batches=trainer.num_test_batches,
                   test_sampler=type(trainer.test_dataloaders.sampler).__name__)
        out["predictions"] = len(trainer.predict(model))
        out["num_predict_batches"] = trainer.num_predict_batches
    out["overfit_warnings"] = [str(w.message) for w in caught if "overfit" in str(w.message)]
    return out


@pytest.mark.parametrize("overfit", [0.25, 3])
def test_overfit_batches_outside_fit(tmp_path, overfit):
    expected, got = both(_overfit_outside_fit, tmp_path, overfit=overfit)
    assert expected["num_val_batches"] == [1 if overfit == 0.25 else 3]  # 5 val batches (20 samples, 4 each)
    assert expected["num_test_batches"] == [5] and expected["num_predict_batches"] == [5]
    assert expected["overfit_warnings"] == []  # only fit turns shuffling off
    assert_close(got, expected)


def _ddp_samplers_with_overfit(L: ModuleType, root) -> Dict[str, Any]:
    """The distributed sampler each of several train loaders gets (set up without launching processes)."""
    Base = boring_model_class(L)

    class Model(Base):
        def train_dataloader(self):
            ds = make_dataset(16)
            return {"shuffled": DataLoader(ds, batch_size=4, shuffle=True), "plain": DataLoader(ds, batch_size=4)}

    model = Model()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", overfit_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if L.__name__ == "pytorch_lightning":  # what Lightning's own test does
            model.trainer = trainer
            trainer.strategy.connect(model)
            trainer._data_connector.attach_dataloaders(model)
        else:
            trainer._attach(model, None)
        trainer.training = True
        trainer.fit_loop.setup_data()
    return {key: (type(dl.sampler).__name__, dl.sampler.shuffle, dl.sampler.num_replicas)
            for key, dl in trainer.train_dataloader.items()}


def test_distributed_samplers_of_several_loaders_with_overfit(tmp_path):
    expected, got = both(_ddp_samplers_with_overfit, tmp_path)
    assert expected == {"shuffled": ("DistributedSampler", False, 2), "plain": ("DistributedSampler", False, 2)}
    assert got == expected


def _ddp_combined_loader(L: ModuleType, root, mode: str, use_distributed_sampler: bool) -> Dict[str, Any]:
    """Each leaf of a nested CombinedLoader gets a distributed sampler (when asked for), so the epoch shrinks."""
    Base = boring_model_class(L)
    CombinedLoader = combined_loader_class(L)

    class Model(Base):
        def train_dataloader(self):
            ds = make_dataset(16)
            return CombinedLoader({"a": DataLoader(ds, batch_size=2),
                                   "nested": [DataLoader(make_dataset(12), batch_size=2, shuffle=True),
                                              {"c": DataLoader(make_dataset(8), batch_size=2)}]}, mode)

    model = Model()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=use_distributed_sampler,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if L.__name__ == "pytorch_lightning":
            model.trainer = trainer
            trainer.strategy.connect(model)
            trainer._data_connector.attach_dataloaders(model)
        else:
            trainer._attach(model, None)
        trainer.training = True
        trainer.fit_loop.setup_data()
    loaders = trainer.train_dataloader
    flat = [loaders["a"], loaders["nested"][0], loaders["nested"][1]["c"]]
    return {"num_training_batches": trainer.num_training_batches,
            "samplers": [type(dl.sampler).__name__ for dl in flat]}


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size"])
@pytest.mark.parametrize("use_distributed_sampler", [True, False])
def test_distributed_samplers_reach_every_combined_loader_leaf(tmp_path, mode, use_distributed_sampler):
    expected, got = both(_ddp_combined_loader, tmp_path, mode=mode, use_distributed_sampler=use_distributed_sampler)
    batches = {"min_size": 4, "max_size_cycle": 8, "max_size": 8}[mode]
    assert expected["num_training_batches"] == (batches // 2 if use_distributed_sampler else batches)
    sampler_kinds = set(expected["samplers"])
    assert sampler_kinds == ({"DistributedSampler"} if use_distributed_sampler
                             else {"SequentialSampler", "RandomSampler"})
    assert got == expected


def _set_epoch_calls(L: ModuleType, root) -> Dict[str, Any]:
    """Which epochs each stage's samplers are told (``set_epoch``), several loaders per stage."""
    Base = boring_model_class(L)
    calls: Dict[str, List[int]] = {}

    class Recording(SequentialSampler):
        def __init__(self, data, name):
            super().__init__(data)
            self.name = name

        def set_epoch(self, epoch):
            calls.setdefault(self.name, []).append(epoch)

    def loaders(prefix):
        out = []
        for i in range(2):
            ds = make_dataset(8, seed=i)
            out.append(DataLoader(ds, batch_size=4, sampler=Recording(ds, f"{prefix}{i}")))
        return out

    class Model(Base):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            return self.loss(batch)

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            return self.loss(batch)

        def training_step(self, batch, batch_idx):
            return self.loss(batch[0])

    model = Model()
    trainer = _trainer(L, root, max_epochs=2, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(model, loaders("train"), loaders("val"))
    trainer.validate(model, loaders("validate"), verbose=False)
    trainer.test(model, loaders("test"), verbose=False)
    trainer.predict(model, [DataLoader(torch.randn(4, 8), batch_size=2, sampler=Recording(range(4), "predict"))])
    return calls


def test_sampler_set_epoch_in_every_stage(tmp_path):
    expected, got = both(_set_epoch_calls, tmp_path)
    assert expected["train0"] == expected["train1"] == [0, 1]
    assert expected["val0"] == [0, 0, 1]  # sanity check, then each epoch
    assert expected["validate0"] == expected["test1"] == expected["predict"] == [2]  # the epochs trained so far
    assert got == expected


def _combined_validation(L: ModuleType, root, val: str) -> Dict[str, Any]:
    """Validation over a CombinedLoader in a parallel mode (one dict batch, no dataloader_idx) or over a dict of
    loaders (sequential: one loader after the other, dataloader_idx in order of the dict)."""
    Base = boring_model_class(L)
    CombinedLoader = combined_loader_class(L)
    seen: List[Any] = []

    class Model(Base):
        def validation_step(self, batch, batch_idx, *rest):
            seen.append((batch_idx, rest, _shape(batch)))
            pairs = [pair for pair in _leaves(batch) if pair is not None]
            self.log("val_loss", sum(self.loss(pair) for pair in pairs))

    loaders = {"a": make_loader(12, 4, seed=1), "b": make_loader(8, 4, seed=2)}
    val_loaders = CombinedLoader(loaders, "max_size") if val == "max_size" else loaders
    model = Model()
    trainer = _trainer(L, root, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, make_loader(16, 4), val_loaders)
    return {"seen": seen, "num_val_batches": trainer.num_val_batches,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}


@pytest.mark.parametrize("val", ["max_size", "dict"])
def test_validation_over_combined_loaders(tmp_path, val):
    expected, got = both(_combined_validation, tmp_path, val=val)
    if val == "max_size":
        assert [rest for _, rest, _ in expected["seen"]] == [()] * 3 and list(expected["metrics"]) == ["val_loss"]
    else:
        assert [rest for _, rest, _ in expected["seen"]] == [(0,)] * 3 + [(1,)] * 2
    assert_close(got, expected)
