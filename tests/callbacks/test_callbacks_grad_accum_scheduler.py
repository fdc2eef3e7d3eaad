"""GradientAccumulationScheduler: Lightning's argument checks and errors, the factor per epoch, and the same
weights and global_step as pytorch-lightning's run with the same schedule (fp32, side by side)."""
from __future__ import annotations

import pytest
import torch
from helpers import compiled_engine, make_loader, misconfiguration_exception, mlp_module_class, quiet_trainer_kwargs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def _callbacks(L):
    return __import__(f"{L.__name__}.callbacks", fromlist=["GradientAccumulationScheduler"])


@pytest.mark.parametrize(
    "scheduling, error, match",
    [
        ({}, TypeError, "Empty dict cannot be interpreted correct"),
        ({-1: 2}, "misconf", r"Epoch should be an int greater than or equal to 0\. Got \[-1\]\."),
        ({"1": 2}, "misconf", "Epoch should be an int greater than or equal to 0"),
        ({0: 0}, "misconf", r"Accumulation factor should be an int greater than 0\. Got \[0\]\."),
        ({0: 2.0}, "misconf", "Accumulation factor should be an int greater than 0"),
    ],
)
def test_invalid_scheduling_same_error_as_lightning(L, scheduling, error, match):
    exc = misconfiguration_exception(L) if error == "misconf" else error
    with pytest.raises(exc, match=match):
        _callbacks(L).GradientAccumulationScheduler(scheduling=dict(scheduling))


def test_factor_per_epoch_matches_lightning(L, PL):
    ours = _callbacks(L).GradientAccumulationScheduler({2: 3, 5: 2})
    ref = PL.callbacks.GradientAccumulationScheduler({2: 3, 5: 2})
    assert ours.scheduling == ref.scheduling == {2: 3, 5: 2, 0: 1}
    assert ours.epochs == ref.epochs == [0, 2, 5]
    assert [ours.get_accumulate_grad_batches(e) for e in range(8)] == [1, 1, 3, 3, 3, 2, 2, 2]
    assert [ref.get_accumulate_grad_batches(e) for e in range(8)] == [1, 1, 3, 3, 3, 2, 2, 2]
    assert ours.going_to_accumulate_grad_batches()
    assert not _callbacks(L).GradientAccumulationScheduler({0: 1}).going_to_accumulate_grad_batches()


def test_trainer_accumulate_grad_batches_must_be_one(L, tmp_path):
    cb = _callbacks(L).GradientAccumulationScheduler({0: 2})
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[cb], **quiet_trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"You have set `accumulate_grad_batches` and are using the"
                                         r" `GradientAccumulationScheduler` callback\. Either remove"):
        trainer.fit(mlp_module_class(L)(), make_loader(8, 4))


def test_manual_optimization_rejected(L, tmp_path):
    class Manual(mlp_module_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self.loss(batch))
            opt.step()

    cb = _callbacks(L).GradientAccumulationScheduler({0: 2})
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], **quiet_trainer_kwargs(tmp_path))
    with pytest.raises(RuntimeError, match="is not supported for\\s+manual optimization"):
        trainer.fit(Manual(), make_loader(8, 4))


def _run(L, tmp_path, schedule, max_epochs=4):
    factors = []

    class Rec(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            factors.append(trainer.accumulate_grad_batches)

    model = mlp_module_class(L)(lr=0.05)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=[_callbacks(L).GradientAccumulationScheduler(dict(schedule)), Rec()],
        **quiet_trainer_kwargs(tmp_path),
    )
    trainer.fit(model, make_loader(20, 4))  # 5 batches an epoch: factors 2 and 3 leave a partial window
    return model, trainer, factors


@pytest.mark.parity
@pytest.mark.parametrize("schedule, expected", [({1: 2, 2: 3}, [1, 2, 3, 3]), ({0: 3, 3: 1}, [3, 3, 3, 1])])
def test_weights_and_global_step_match_lightning(TL, PL, tmp_path, schedule, expected):
    ours, ours_trainer, ours_factors = _run(TL, tmp_path / "tl", schedule)
    ref, ref_trainer, ref_factors = _run(PL, tmp_path / "pl", schedule)
    assert ours_factors == ref_factors
    assert ours_trainer.global_step == ref_trainer.global_step
    assert ours_factors == expected
    # 5 batches an epoch; a partial window at the epoch end still steps the optimizer
    assert ours_trainer.global_step == sum(-(-5 // f) for f in expected)
    for (name, p), (ref_name, q) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert name == ref_name
        assert p.dtype == torch.float32
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7 if compiled_engine() else 0), name
