"""SIGTERM during a run (a preempted job), as Lightning 2.6 handles it: the loops stop at the next batch boundary
with ``SIGTERMException`` (a ``SystemExit``), ``on_exception`` sees it (``OnExceptionCheckpoint`` saves there), and
the handler that was installed before the call is back afterwards. Same script under both frameworks."""
from __future__ import annotations

import os
import signal

import pytest
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]


def _run(name: str, tmp_path, kill_at: int, where: str):
    L = import_framework(name)
    seen = {"exceptions": [], "batches": []}

    class Preempted(boring_model_class(L)):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen["batches"].append(("train", self.current_epoch, batch_idx))
            if where == "train" and self.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            seen["batches"].append(("val", self.current_epoch, batch_idx))
            if where == "val" and batch_idx == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)

    class Watch(L.Callback):
        def on_exception(self, trainer, pl_module, exception):
            seen["exceptions"].append(type(exception).__name__)

    kwargs = quiet_trainer_kwargs(tmp_path / name)
    trainer = L.Trainer(**dict(kwargs, max_epochs=3, num_sanity_val_steps=0, callbacks=[Watch()]))
    raised = None
    try:
        trainer.fit(Preempted(n=16, batch_size=4))
    except BaseException as exc:  # noqa: BLE001 - SIGTERMException is a SystemExit
        raised = exc
    return seen, raised, trainer


@pytest.mark.parametrize("where, kill_at", [("train", 2), ("train", 4), ("val", 1)])
def test_sigterm_stops_the_run_like_lightning(tmp_path, where, kill_at):
    before = signal.getsignal(signal.SIGTERM)
    results = {name: _run(name, tmp_path, kill_at, where) for name in ("lightning", "trainer")}
    (pl_seen, pl_raised, pl_trainer), (seen, raised, trainer) = results["lightning"], results["trainer"]
    assert type(pl_raised).__name__ == "SIGTERMException" and isinstance(pl_raised, SystemExit)  # the oracle
    assert type(raised).__name__ == "SIGTERMException" and isinstance(raised, SystemExit)
    assert seen == pl_seen  # stopped at the same batch, after the same hooks
    assert trainer.global_step == pl_trainer.global_step
    assert trainer.received_sigterm is True and pl_trainer.received_sigterm is True
    assert trainer.state.status.value == pl_trainer.state.status.value == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_sigterm_exception_at_lightnings_path():
    from trainer.utilities.exceptions import SIGTERMException

    assert issubclass(SIGTERMException, SystemExit)
