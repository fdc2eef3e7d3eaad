"""Parity for behaviours found by running Lightning 2.6's own tests on trainer (/work/notes/lt_report.md)."""

import pytest

from tests.helpers import import_framework


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
@pytest.mark.parametrize("overfit_batches", [1, 0.25])
def test_validation_step_set_to_none_skips_validation(tmp_path, framework, overfit_batches):
    """`model.validation_step = None` means no validation (Lightning's is_overridden): no sanity check, no
    val batches, fit completes (trainer ran the sanity check and crashed on inspect.signature(None))."""
    L = import_framework(framework)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            raise AssertionError("validation must not run")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)

    model = Model()
    model.validation_step = None
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, overfit_batches=overfit_batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    assert trainer.num_val_batches == []
    assert trainer.num_training_batches == 1
    assert trainer.state.finished


def _hook_calls_of_mock_callbacks(L, tmp_path):
    from unittest.mock import Mock

    from tests.helpers.frameworks import quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    from_model = Mock(spec=L.Callback)

    class Model(boring_model_class(L)):
        def configure_callbacks(self):
            return [from_model]

    passed = Mock(spec=L.Callback)
    trainer = L.Trainer(fast_dev_run=True, callbacks=[passed], **quiet_trainer_kwargs(tmp_path))
    trainer.fit(Model())
    return [c[0] for c in passed.method_calls], [c[0] for c in from_model.method_calls], trainer.callbacks[-1]


def test_mock_callback_gets_every_hook_like_lightning(tmp_path):
    """A `Mock(spec=Callback)` overrides nothing by class, yet Lightning calls each of its hooks (Lightning's own
    test_callbacks_configured_in_model compares the two mocks' call lists); trainer skipped them all."""
    from tests.helpers import import_framework

    L = import_framework("lightning")
    l_passed, l_from_model, l_last = _hook_calls_of_mock_callbacks(L, tmp_path / "l")
    assert "on_fit_start" in l_passed and "on_train_batch_end" in l_passed  # the oracle first
    assert l_from_model == l_passed

    T = import_framework("trainer")
    t_passed, t_from_model, t_last = _hook_calls_of_mock_callbacks(T, tmp_path / "t")
    assert t_passed == l_passed
    assert t_from_model == t_passed


def _resume_past_max_epochs(L, tmp_path):
    from tests.helpers.frameworks import misconfiguration_exception, quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    model = boring_model_class(L)()
    kwargs = quiet_trainer_kwargs(tmp_path)
    trainer = L.Trainer(max_epochs=3, **kwargs)
    trainer.fit(model)
    ckpt = str(tmp_path / "three_epochs.ckpt")
    trainer.save_checkpoint(ckpt)
    with pytest.raises(misconfiguration_exception(L)) as err:
        L.Trainer(max_epochs=1, **kwargs).fit(model, ckpt_path=ckpt)
    # resuming up to exactly max_epochs is fine (nothing left to train)
    L.Trainer(max_epochs=3, **kwargs).fit(model, ckpt_path=ckpt)
    return str(err.value)


def test_resume_past_max_epochs_raises_like_lightning(tmp_path):
    """Lightning refuses to resume a fit from a checkpoint already past `max_epochs` (MisconfigurationException
    "You restored a checkpoint with current_epoch=..."); trainer silently trained nothing."""
    from tests.helpers import import_framework

    expected = "You restored a checkpoint with current_epoch=3, but you have set Trainer(max_epochs=1)."
    assert _resume_past_max_epochs(import_framework("lightning"), tmp_path / "l") == expected
    assert _resume_past_max_epochs(import_framework("trainer"), tmp_path / "t") == expected


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
def test_fit_loop_max_epochs_set_between_fits_is_kept(tmp_path, framework):
    """`trainer.fit_loop.max_epochs = 4` after a 2-epoch fit makes the next fit run epochs 2 and 3 (Lightning
    reparses the limits from the loop; trainer reset them from the constructor arguments and ran nothing)."""
    from tests.helpers import import_framework
    from tests.helpers.frameworks import quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    L = import_framework(framework)
    epochs = []

    class Model(boring_model_class(L)):
        def on_train_epoch_end(self):
            epochs.append(self.current_epoch)

    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, **quiet_trainer_kwargs(tmp_path))
    trainer.fit(Model())
    trainer.fit_loop.max_epochs = 4
    trainer.fit(Model())
    assert epochs == [0, 1, 2, 3]
    assert trainer.max_epochs == 4


def _wrap_public_hooks(obj, base, called):
    """Wrap every public function of ``base`` on ``obj`` with a recording ``partial`` (functools.update_wrapper),
    the way Lightning's own hook-order tests do."""
    from functools import partial, update_wrapper
    from inspect import getmembers, isfunction

    import torch

    skip = {name for name, _ in getmembers(torch.nn.Module, predicate=isfunction)} - {"forward", "zero_grad", "train"}
    skip |= {"optimizers", "log", "log_dict"}

    def call(hook, fn, *args, **kwargs):
        called.append((hook, kwargs or None))
        return fn(*args, **kwargs)

    for name, _ in getmembers(base, predicate=isfunction):
        if name.startswith("_") or name in skip:
            continue
        attr = getattr(obj, name)
        wrapped = partial(call, name, attr)
        update_wrapper(wrapped, attr)
        setattr(obj, name, wrapped)


def _validate_with_wrapped_hooks(L, tmp_path):
    from tests.helpers.frameworks import (
        import_framework,  # noqa: F401  (same helpers for both frameworks)
        quiet_trainer_kwargs,
    )
    from tests.helpers.models import boring_model_class, datamodule_class

    model_calls, dm_calls = [], []
    model = boring_model_class(L)()
    _wrap_public_hooks(model, L.LightningModule, model_calls)
    dm = datamodule_class(L)()
    _wrap_public_hooks(dm, L.LightningDataModule, dm_calls)
    trainer = L.Trainer(limit_val_batches=1, **quiet_trainer_kwargs(tmp_path))
    trainer.validate(model, datamodule=dm, verbose=False)
    return model_calls, [name for name, _ in dm_calls]


def test_default_hooks_wrapped_on_the_instance_are_not_overrides(tmp_path):
    """Lightning's `is_overridden` unwraps `functools.wraps`/`partial`: a recording wrapper around a default hook is
    not an override. So `configure_sharded_model`/`configure_model` are not called, the datamodule's default batch
    hooks leave the batch transfer to the module, and `zero_grad` is called without arguments. trainer treated any
    wrapper as an override (Lightning's models/test_hooks.py hook-order tests)."""
    from tests.helpers import import_framework

    L = import_framework("lightning")
    l_model, l_dm = _validate_with_wrapped_hooks(L, tmp_path / "l")
    l_names = [name for name, _ in l_model]
    assert "configure_sharded_model" not in l_names and "configure_model" not in l_names
    assert ("zero_grad", None) in l_model and "on_before_batch_transfer" in l_names
    assert "on_before_batch_transfer" not in l_dm

    T = import_framework("trainer")
    t_model, t_dm = _validate_with_wrapped_hooks(T, tmp_path / "t")
    assert [name for name, _ in t_model] == l_names
    assert ("zero_grad", None) in t_model
    assert t_dm == l_dm

    from pytorch_lightning.utilities.model_helpers import is_overridden as l_is_overridden

    from trainer.utilities.model_helpers import is_overridden as t_is_overridden

    for fw, is_over, model_cls in ((L, l_is_overridden, L.LightningModule), (T, t_is_overridden, T.LightningModule)):
        model = model_cls()
        _wrap_public_hooks(model, model_cls, [])
        assert not is_over("configure_model", model)
        model.training_step = lambda *a: None
        assert is_over("training_step", model)


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
def test_sized_iterable_dataset_warns_and_has_len_all_ranks(tmp_path, framework):
    """An IterableDataset that defines `__len__` gets Lightning's warning at every stage that reads it, and
    `has_len_all_ranks` sits at Lightning's public path (trainer had neither; Lightning's test_dataloaders.py)."""
    import warnings

    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from tests.helpers import import_framework
    from tests.helpers.data import IN_FEATURES, OUT_FEATURES
    from tests.helpers.frameworks import quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    L = import_framework(framework)
    if framework == "lightning":
        from pytorch_lightning.utilities.data import has_len_all_ranks
    else:
        from trainer.utilities.data import has_len_all_ranks

    class Sized(IterableDataset):
        def __iter__(self):
            return iter([(torch.randn(IN_FEATURES), torch.randn(OUT_FEATURES)) for _ in range(8)])

        def __len__(self):
            return 8

    class Unsized(IterableDataset):
        def __iter__(self):
            return iter(Sized())

    trainer = L.Trainer(**quiet_trainer_kwargs(tmp_path))
    assert has_len_all_ranks(DataLoader(Sized(), batch_size=4), trainer.strategy)
    assert not has_len_all_ranks(DataLoader(Unsized(), batch_size=4), trainer.strategy)
    model = boring_model_class(L)()
    for fn in ("validate", "test"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            getattr(L.Trainer(**quiet_trainer_kwargs(tmp_path)), fn)(
                model, dataloaders=DataLoader(Sized(), batch_size=4), verbose=False)
        assert sum("Your `IterableDataset` has `__len__` defined." in str(w.message) for w in seen) == 1


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
@pytest.mark.parametrize("value", [-0.1, 1.2])
def test_invalid_val_check_interval_wording(framework, value):
    """Same class and Lightning's wording ("You have passed invalid value ...") for a val_check_interval outside
    [0, 1] that is not a whole number of batches."""
    from tests.helpers import import_framework
    from tests.helpers.frameworks import misconfiguration_exception

    L = import_framework(framework)
    with pytest.raises(misconfiguration_exception(L), match=f"(?i)passed invalid value {value} for val_check_interval"):
        L.Trainer(val_check_interval=value)


def _scheduler_outcomes(L, tmp_path):
    """What fit does with three scheduler configurations Lightning checks (warning class + message, error)."""
    import warnings

    import torch

    from tests.helpers.frameworks import misconfiguration_exception, quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    base = boring_model_class(L)
    out = {}

    class ExtraKeys(base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "foo": 1}}

    class ManualPlateau(base):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self.loss(batch))
            opt.step()

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
            return [opt], [{"scheduler": sched, "monitor": "train_loss", "interval": "step"}]

    class Incompatible:
        def __init__(self, optimizer):
            self.optimizer = optimizer

        def state_dict(self):
            return {}

        def load_state_dict(self, _):
            pass

    class CustomScheduler(base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [Incompatible(opt)]

    for name, cls in (("extra_keys", ExtraKeys), ("manual_plateau", ManualPlateau)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, **quiet_trainer_kwargs(tmp_path))
            trainer.fit(cls())
        hits = [(type(w.message).__name__, str(w.message)) for w in seen
                if "unsupported keys" in str(w.message) or "will be ignored" in str(w.message)]
        out[name] = (hits, trainer.lr_scheduler_configs[0].interval)
    with pytest.raises(misconfiguration_exception(L)) as err:
        L.Trainer(max_epochs=1, limit_train_batches=1, **quiet_trainer_kwargs(tmp_path)).fit(CustomScheduler())
    out["incompatible"] = str(err.value)
    return out


def test_scheduler_configuration_checks_like_lightning(tmp_path):
    """Extra lr-scheduler dict keys: RuntimeWarning with the set of keys; manual optimization: the stepping keys
    are ignored with Lightning's RuntimeWarning (`interval` kept); a non-PyTorch scheduler under automatic
    optimization without `lr_scheduler_step`: Lightning's MisconfigurationException (trainer optimizers/
    test_optimizers.py and test_manual_optimization.py)."""
    from tests.helpers import import_framework

    expected = _scheduler_outcomes(import_framework("lightning"), tmp_path / "l")
    assert expected["extra_keys"][0] == [
        ("RuntimeWarning", "Found unsupported keys in the lr scheduler dict: {'foo'}. HINT: remove them from the"
                           " output of `configure_optimizers`.")]
    assert expected["manual_plateau"][0][0][0] == "RuntimeWarning" and expected["manual_plateau"][1] == "step"
    assert "doesn't follow PyTorch's LRScheduler API" in expected["incompatible"]
    assert _scheduler_outcomes(import_framework("trainer"), tmp_path / "t") == expected


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
def test_patched_optimizer_step_gets_the_closure(tmp_path, framework):
    """`optimizer.step(closure=...)` reaches a step patched on the optimizer class, as in Lightning (trainer's
    shortcut for plain torch optimizers ran the closure itself and called step() bare; Lightning's
    test_step_with_optimizer_closure_with_different_frequencies mocks torch.optim.Adam.step)."""
    from unittest.mock import ANY, call, patch

    import torch

    from tests.helpers import import_framework
    from tests.helpers.frameworks import quiet_trainer_kwargs
    from tests.helpers.models import boring_model_class

    L = import_framework(framework)

    class Manual(boring_model_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.step(closure=lambda: self.manual_backward(self.loss(batch)))
            opt.zero_grad()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    with patch("torch.optim.Adam.step") as step:
        L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, **quiet_trainer_kwargs(tmp_path)).fit(
            Manual())
    assert step.call_args_list == [call(closure=ANY), call(closure=ANY)]


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
def test_optimizer_progress_path_drives_global_step(framework):
    """`fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed` is where Lightning
    keeps `global_step` (its test_model_checkpoint_options sets it to emulate training); trainer had no
    `.optimizer` level."""
    from tests.helpers import import_framework

    L = import_framework(framework)
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    progress = trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress
    progress.optimizer.step.total.completed = 7
    assert trainer.global_step == 7
    assert progress.state_dict()["optimizer"]["step"]["total"]["completed"] == 7
