"""ThroughputMonitor: the same logged keys, steps and counters (batches, samples, lengths, epoch) as
pytorch-lightning's callback on the same run (fit with accumulation and validation, then validate/test/predict);
timings are only checked to increase. Throughput's rates, FLOPs and MFU are checked against Lightning Fabric's
``Throughput`` fed the same numbers."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import boring_model_class

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

COUNTERS = ("batches", "samples", "lengths")


def _recording_logger(L):
    base = __import__(f"{L.__name__}.loggers", fromlist=["Logger"]).Logger

    class Recording(base):
        def __init__(self):
            super().__init__()
            self.rows = []

        @property
        def name(self):
            return "rec"

        @property
        def version(self):
            return 0

        def log_metrics(self, metrics, step=None):
            self.rows.append((dict(metrics), step))

        def log_hyperparams(self, *args, **kwargs):
            pass

    return Recording()


def _run(L, root, monitor_kw, module_flops=None):
    C = __import__(f"{L.__name__}.callbacks", fromlist=["ThroughputMonitor"])

    class Model(boring_model_class(L)):
        def __init__(self):
            super().__init__(n=24, batch_size=4)  # 6 training batches, 3 validation batches
            if module_flops is not None:
                self.flops_per_batch = module_flops

    logger = _recording_logger(L)
    monitor = C.ThroughputMonitor(
        batch_size_fn=lambda batch: (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[0],
        length_fn=lambda batch: (batch[0] if isinstance(batch, (list, tuple)) else batch).numel(),
        **monitor_kw,
    )
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=logger, callbacks=[monitor], accumulate_grad_batches=2,
        log_every_n_steps=2, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(root), num_sanity_val_steps=1,
    )
    model = Model()
    trainer.fit(model)
    trainer.validate(model, verbose=False)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    rows = [(m, s) for m, s in logger.rows if any("/" in k and k.split("/")[0] in
                                                   ("train", "validate", "test", "predict") for k in m)]
    return rows


def _shape(rows):
    """Keys, step and counters of each throughput row (timings left out)."""
    out = []
    for metrics, step in rows:
        counters = {k: v for k, v in metrics.items() if k.split("/")[-1] in COUNTERS or k == "epoch"}
        out.append((sorted(metrics), step, counters))
    return out


@pytest.mark.parity
@pytest.mark.parametrize("window_size", [2, 3])
def test_keys_steps_and_counters_match_lightning(TL, PL, tmp_path, window_size):
    ours = _run(TL, tmp_path / "tl", {"window_size": window_size}, module_flops=1000)
    ref = _run(PL, tmp_path / "pl", {"window_size": window_size}, module_flops=1000)
    assert _shape(ours) == _shape(ref)
    keys = set().union(*(m for m, _ in ours))
    stages = {k.split("/")[0] for k in keys if "/" in k}
    assert stages == {"train", "validate", "test", "predict"}
    assert "train/device/samples_per_sec" in keys and "train/device/items_per_sec" in keys
    assert "train/device/flops_per_sec" in keys and "train/device/mfu" not in keys  # no peak FLOP/s on CPU
    # the training clock, and the counters, only go up during fit
    train = [m for m, _ in ours if "train/time" in m]
    assert len(train) == 3  # 12 batches, accumulate 2: 6 optimizer steps, logged every 2
    for key in ("train/time", "train/batches", "train/samples", "train/lengths"):
        values = [m[key] for m in train]
        assert all(a < b for a, b in zip(values, values[1:])), key
    assert [m["train/samples"] for m in train][-1] == 48
    rates = [m["train/device/samples_per_sec"] for m in train if "train/device/samples_per_sec" in m]
    assert rates and all(r > 0 for r in rates)


def test_flops_argument_and_available_flops_give_mfu(TL, tmp_path):
    rows = _run(TL, tmp_path, {"window_size": 2, "flops_per_batch": 1e6, "available_flops": 1e12})
    train = [m for m, _ in rows if "train/time" in m]
    with_rates = [m for m in train if "train/device/flops_per_sec" in m]
    assert with_rates
    for m in with_rates:
        assert m["train/device/mfu"] == pytest.approx(m["train/device/flops_per_sec"] / 1e12)
        assert m["train/device/flops_per_sec"] > 0


def test_throughput_math_matches_fabric():
    from lightning_fabric.utilities.throughput import Throughput as FabricThroughput

    from trainer.callbacks.throughput_monitor import Throughput

    for kw in ({}, {"world_size": 2, "available_flops": 50.0}, {"window_size": 3, "separator": "|"}):
        ours, ref = Throughput(**kw), FabricThroughput(**{"window_size": 4, **kw})
        ours = Throughput(**{"window_size": 4, **kw})
        for i in range(1, 8):
            args = dict(time=0.5 * i + 0.01 * i * i, batches=i, samples=4 * i, lengths=32 * i, flops=100 * i)
            ours.update(**args)
            ref.update(**args)
            a, b = ours.compute(), ref.compute()
            assert a.keys() == b.keys()
            for k in a:
                assert math.isclose(a[k], b[k], rel_tol=1e-12), k
    t = Throughput(window_size=2)
    t.update(time=1.0, batches=1, samples=1)
    with pytest.raises(ValueError, match="Expected the value to increase"):
        t.update(time=1.0, batches=2, samples=2)
    with pytest.raises(ValueError, match=r"Expected samples \(1\) to be greater or equal than batches \(2\)"):
        t.update(time=2.0, batches=2, samples=1)


def test_measure_flops_matches_fabric():
    from lightning_fabric.utilities.throughput import measure_flops as fabric_measure_flops

    from trainer.callbacks.throughput_monitor import measure_flops

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        x = torch.randn(4, 8)
    fwd = measure_flops(model, lambda: model(x))
    assert fwd == fabric_measure_flops(model, lambda: model(x)) == 2 * 4 * (8 * 16 + 16 * 2)
    assert measure_flops(model, lambda: model(x), torch.Tensor.sum) == fabric_measure_flops(
        model, lambda: model(x), torch.Tensor.sum
    )


def test_unknown_kwarg_rejected(TL):
    with pytest.raises(TypeError, match="unexpected keyword"):
        TL.callbacks.ThroughputMonitor(batch_size_fn=len, windowsize=3)


@pytest.mark.parity
def test_counters_reach_the_logger_as_ints_like_lightning(TL, PL, tmp_path):
    ours = _run(TL, tmp_path / "tl", {"window_size": 2})
    ref = _run(PL, tmp_path / "pl", {"window_size": 2})
    types = lambda rows: [{k: type(v).__name__ for k, v in m.items() if k.split("/")[-1] in COUNTERS} for m, _ in rows]  # noqa: E731
    assert types(ref)[0]["train/batches"] == "int"
    assert types(ours) == types(ref)


def test_should_update_logs_gate_matches_lightning_during_evaluation(TL, PL, tmp_path):
    """The callback gates evaluation logging on the evaluation loop's batch counter (Lightning 2.6's
    ``should_update_logs``), not on the training step."""
    seen = {}
    for L in (TL, PL):
        C = __import__(f"{L.__name__}.callbacks", fromlist=["Callback"])
        gates = seen.setdefault(L.__name__, [])

        class Probe(C.Callback):
            def on_validation_batch_end(self, trainer, *args, **kwargs):
                if not trainer.sanity_checking:
                    from trainer.callbacks.throughput_monitor import _should_update_logs

                    gates.append((_should_update_logs(trainer), trainer._logger_connector.should_update_logs))

        trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=_recording_logger(L), callbacks=[Probe()],
                            log_every_n_steps=2, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
        trainer.validate(boring_model_class(L)(n=24), verbose=False)
    # Lightning's own property and our re-implementation agree on Lightning's trainer
    assert [lightning for _, lightning in seen["pytorch_lightning"]] == [False, True, False]
    assert [ours for ours, _ in seen["pytorch_lightning"]] == [False, True, False]
    # and on ours, the callback's gate gives the same answers
    assert [ours for ours, _ in seen["trainer"]] == [False, True, False]


def test_logger_connector_should_update_logs_during_validate(TL, tmp_path):
    gates = []

    class Probe(TL.callbacks.Callback):
        def on_validation_batch_end(self, trainer, *args, **kwargs):
            gates.append(trainer._logger_connector.should_update_logs)

    trainer = TL.Trainer(accelerator="cpu", max_epochs=1, logger=_recording_logger(TL), callbacks=[Probe()],
                         log_every_n_steps=2, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.validate(boring_model_class(TL)(n=24), verbose=False)
    assert gates == [False, True, False]
