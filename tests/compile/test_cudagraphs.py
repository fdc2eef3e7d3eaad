"""CUDA-graph replay of the compiled step (trainer/compile/cudagraphs.py).

On the CPU the replay logic runs with a stand-in backend that behaves like a recorded graph: the
capture runs nothing, each replay re-runs the recorded function over the same static input
buffers and writes its results into fixed output tensors. A missed batch copy, an output handed
out without a clone, or a capture that ran the step would all change the training result here.
The real CUDA path is tested at the end (skipped without a GPU)."""
from __future__ import annotations

import warnings

import pytest
import torch

import trainer as L
from tests.compile.models import MLP, max_rel_diff
from trainer.compile import CompileConfig, cudagraphs
from trainer.exceptions import MisconfigurationException


class _ReRunGraph:
    def __init__(self, fn):
        self.fn = fn
        self.outputs = None
        self.replays = 0

    def replay(self):
        out = self.fn()
        if self.outputs is None:
            self.outputs = [o.clone() for o in out]
        else:
            for static, o in zip(self.outputs, out):
                static.copy_(o)
        self.replays += 1


class ReRunBackend:
    """Stand-in for CudaBackend: same contract (warmup(fn), capture(fn) -> .replay()/.outputs)."""

    def __init__(self):
        self.warmups = 0
        self.graphs = []

    def warmup(self, fn):
        self.warmups += 1
        return fn()

    def capture(self, fn):
        g = _ReRunGraph(fn)
        self.graphs.append(g)
        return g


def _step(w, x):
    w.add_(x.sum(0))  # the persistent state changes in place, as a training step's update does
    return [w.sum() * 1.0, x.mean()]


def test_warmup_then_one_capture_then_replays_with_fresh_batches():
    backend = ReRunBackend()
    w = torch.zeros(3)
    replay = cudagraphs.GraphReplay(_step, 1, warmup=2, backend=backend)
    expected = torch.zeros(3)
    outs = []
    for i in range(6):
        x = torch.full((2, 3), float(i))
        outs.append(replay(w, x))
        expected += x.sum(0)
        torch.testing.assert_close(w, expected, rtol=0, atol=0)  # every call ran the step exactly once
    assert backend.warmups == 2 and len(backend.graphs) == 1 and replay.captures == 1
    assert backend.graphs[0].replays == 4 and replay.replays == 4
    # each call's outputs are its own (cloned out of the static outputs the next replay overwrites)
    assert [float(o[1]) for o in outs] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert outs[2][0] is not outs[3][0] and outs[3][0] is not backend.graphs[0].outputs[0]


def test_a_replaced_persistent_input_is_captured_again():
    backend = ReRunBackend()
    w = torch.zeros(3)
    replay = cudagraphs.GraphReplay(_step, 1, warmup=1, backend=backend)
    for _ in range(3):
        replay(w, torch.ones(2, 3))
    w2 = torch.zeros(3)  # another tensor (e.g. state loaded into new storage)
    replay(w2, torch.ones(2, 3))
    assert replay.captures == 2 and float(w2.sum()) == 6.0 and float(w.sum()) == 18.0


def test_a_failed_capture_warns_once_and_runs_the_graph_unrecorded():
    from trainer.compile.engine import CompileWarning

    class Failing(ReRunBackend):
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    reasons = []
    replay = cudagraphs.GraphReplay(_step, 1, warmup=1, backend=Failing(), on_failure=reasons.append)
    w = torch.zeros(3)
    replay(w, torch.ones(2, 3))  # warm-up call
    with pytest.warns(CompileWarning, match=r"CUDA graph failed.*cudagraphs=False"):
        replay(w, torch.ones(2, 3))  # the failed recording: the step still runs, once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replay(w, torch.ones(2, 3))  # no second warning, no second recording
    assert replay.captures == 0 and len(reasons) == 1 and "operation not permitted" in reasons[0]
    assert float(w.sum()) == 18.0  # three calls, each ran the step exactly once


def test_needs_cuda_at_construction():
    with pytest.raises(MisconfigurationException, match=r"cudagraphs=True.*accelerator='cpu'"):
        L.Trainer(accelerator="cpu", compile=CompileConfig(cudagraphs=True))
    L.Trainer(accelerator="cpu", compile=CompileConfig(cudagraphs=False))


@pytest.fixture
def rerun_graphs(monkeypatch):
    """The engine's CUDA-graph path on the CPU: inputs accepted, the stand-in backend used."""
    backends = []

    def make():
        backends.append(ReRunBackend())
        return backends[-1]

    monkeypatch.setattr(cudagraphs, "make_backend", make)
    monkeypatch.setattr(cudagraphs, "cuda_graph_reason", lambda tensors: None)
    return backends


def _fit_graphed(model, cudagraphs_on: bool, **kw):
    # the construction check (accelerator must be CUDA) is what the test bypasses: set after it
    # accelerator pinned: on a GPU machine "auto" would run these CPU-meant tests on the GPU
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", compile=True, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)
    trainer._compile_config = CompileConfig(cudagraphs=cudagraphs_on, cudagraph_warmup=1)
    trainer.fit(model)
    return trainer


def test_engine_replays_every_step_variant_and_matches_the_compiled_step(rerun_graphs):
    # accumulation (micro + final graphs), a short last batch (its own graphs), a per-step scheduler
    # (lr tensor refreshed in place between replays), Adam state, logged values
    kw = dict(accumulate_grad_batches=3)
    ref = MLP(opt="adamw", sched="step", n=90)
    _fit_graphed(ref, False, **kw)
    model = MLP(opt="adamw", sched="step", n=90)
    trainer = _fit_graphed(model, True, **kw)
    report = trainer.compile_report
    assert report.mode == "full" and report.cudagraph_reason is None
    # 90 samples / 16: 5 full batches + one of 10; k=3: micro (16), final (16), final (10), each
    # called at least twice in 2 epochs: one warm-up call, then recorded
    assert len(rerun_graphs) == 1  # one capture backend (one memory pool) for all the engine's graphs
    graphs = [g for b in rerun_graphs for g in b.graphs]
    assert report.cudagraph_captures == len(graphs) == 3
    assert sum(g.replays for g in graphs) > 0
    assert max_rel_diff(model, ref) == 0.0


def test_engine_logged_values_match_without_graphs(rerun_graphs):
    ref_model = MLP(opt="sgd", n=64)
    ref = _fit_graphed(ref_model, False)
    model = MLP(opt="sgd", n=64)
    trainer = _fit_graphed(model, True)
    assert trainer.compile_report.cudagraph_captures >= 1
    for key in ("train_loss", "acc_epoch"):
        assert float(trainer.callback_metrics[key]) == float(ref.callback_metrics[key]), key
    assert max_rel_diff(model, ref_model) == 0.0


def test_split_step_runs_without_graphs_and_says_why(rerun_graphs):
    class Hooked(MLP):
        def on_after_backward(self):
            pass

    trainer = _fit_graphed(Hooked(n=32), True)
    report = trainer.compile_report
    assert report.mode == "fwd_bwd" and report.cudagraph_captures == 0
    assert "on_after_backward" in report.cudagraph_reason
    assert "no CUDA graphs" in str(report)


def test_capture_is_thread_local_and_shares_the_engines_pool():
    kw = cudagraphs.capture_kwargs(None)
    assert kw == {"pool": None, "capture_error_mode": "thread_local"}  # a pinned-memory loader thread is fine
    handle = (0, 1)
    assert cudagraphs.capture_kwargs(handle)["pool"] is handle


def needs_cuda(fn):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(fn))


@needs_cuda
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_cuda_graphs_on_a_gpu_match_the_compiled_step(opt):
    def run(on):
        model = MLP(opt=opt, sched="step", n=90)
        trainer = L.Trainer(max_epochs=2, accelerator="cuda", devices=1, accumulate_grad_batches=3,
                            compile=CompileConfig(cudagraphs=on, cudagraph_warmup=1), logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(model)
        return model.cpu(), trainer

    ref, _ = run(False)
    model, trainer = run(True)
    # micro, final and short-batch final graphs, each called at least twice: one warm-up call, then
    # recorded (with the default cudagraph_warmup=2 only the micro graph would ever be captured)
    assert trainer.compile_report.cudagraph_captures == 3, str(trainer.compile_report)
    assert max_rel_diff(model, ref) < 1e-6
