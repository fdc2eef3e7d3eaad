"""The compiled step under DDP (CPU, gloo, 2 processes; each run a subprocess of ``ddp_script.py``).

The gradients are all-reduced inside the step graph (``trainer/compile/passes/gradient_sync.py``):
these tests check the numbers against one process with the double batch (the eager engine) and
against the eager DDP engine, and count the collectives that actually ran (torch.profiler events
of the graph's ``_c10d_functional::all_reduce_``): one per bucket per optimizer step, none on the
k-1 non-final micro-batches of an accumulation window.

Tolerance: as the eager DDP tests (``TOL = 1e-6`` on the weights after 16 steps; measured ~6e-8):
the two ranks' mean gradients are averaged by one all-reduce instead of one mean over 2b samples.
With Adam + clipping the compiled engine itself sits ~2e-6 from the eager engine (on one process
too), so that case is held to ``TOL`` against one compiled process and ``EAGER_TOL`` against eager.
"""
from __future__ import annotations

import pytest
import torch
from distributed._runner import max_diff, run_in_process, run_script

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
TOL = 1e-6
EAGER_TOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp_compiled")


def _reference(workdir, name, *args):
    """One process, batch 8, the eager engine (``--compile 0``)."""
    return run_in_process(str(workdir / f"ref_{name}"), "--devices", "1", "--strategy", "auto", "--batch", "8", *args)


def _compiled(workdir, name, *args, compile="strict", torchrun=False):
    return run_script(str(workdir / name), "--devices", "2", "--compile", compile, "--count-collectives", *args,
                      timeout=240, torchrun=torchrun)


_plain: dict = {}


def _plain_run(workdir):
    if "run" not in _plain:
        _plain["run"] = _compiled(workdir, "plain", "--model", "plain")
    return _plain["run"]


def test_compiled_ddp_matches_one_process_and_reduces_once_per_step(workdir):
    args = ("--model", "plain")
    run = _plain_run(workdir)
    ref = _reference(workdir, "plain", *args)
    r0, r1 = run.result(0), run.result(1)
    assert r0["compile_mode"] == r1["compile_mode"] == "full", r0["compile_fallback"]
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0  # identical replicas
    assert r0["global_step"] == 16
    # a 1.7k-parameter model is one bucket: one in-graph all-reduce per step, on every rank
    assert r0["collectives"] == r0["counted_batches"] == 14
    assert r1["collectives"] == 14
    assert r0["metrics"]["train_loss"] == pytest.approx(ref.result()["metrics"]["train_loss"], abs=1e-6)


def test_compiled_ddp_accumulation_reduces_only_on_the_final_micro_batch(workdir):
    args = ("--model", "plain", "--accumulate", "2", "--optimizer", "adam", "--clip", "0.5")
    run = _compiled(workdir, "accum", *args)
    ref = _reference(workdir, "accum", *args)
    one = _reference(workdir, "accum_compiled", *args, "--compile", "strict")
    r0 = run.result(0)
    assert r0["compile_mode"] == "full", r0["compile_fallback"]
    assert any(k.startswith("micro:") for k in r0["graph_keys"]) and any(k.startswith("final:") for k in r0["graph_keys"])
    # against the compiled engine on one process: only the all-reduce's sum order differs
    assert max_diff(one.weights(), run.weights(0)) < TOL
    # against the eager engine: Adam + clipping amplify the compiled update's ~1e-7 rounding
    # differences (measured 1.7e-6 after 8 steps, the same as one compiled process vs eager)
    assert max_diff(ref.weights(), run.weights(0)) < EAGER_TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    assert r0["global_step"] == 8
    assert r0["counted_batches"] == 14 and r0["collectives"] == 7  # none on the 7 micro-batches


def test_compiled_ddp_broadcasts_buffers_like_eager_ddp(workdir):
    """BatchNorm running stats: DDP broadcasts rank 0's buffers before each synchronised forward."""
    args = ("--model", "batchnorm", "--accumulate", "2")
    compiled = _compiled(workdir, "bn", *args)
    eager = run_script(str(workdir / "bn_eager"), "--devices", "2", "--compile", "0", *args)
    assert compiled.result(0)["compile_mode"] == "full", compiled.result(0)["compile_fallback"]
    w = compiled.weights(0)
    assert any("running_mean" in k for k in w)
    assert max_diff(eager.weights(0), w) < TOL
    assert max_diff(eager.weights(1), compiled.weights(1)) < TOL


def test_compiled_ddp_split_step_reduces_before_on_after_backward(workdir):
    args = ("--model", "hooked", "--optimizer", "adam")
    run = _compiled(workdir, "hooked", *args)
    ref = _reference(workdir, "hooked", *args)
    one = _reference(workdir, "hooked_compiled", *args, "--compile", "strict")
    r0, r1 = run.result(0), run.result(1)
    assert r0["compile_mode"] == "fwd_bwd"
    assert max_diff(one.weights(), run.weights(0)) < TOL
    assert max_diff(ref.weights(), run.weights(0)) < EAGER_TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    # the hook saw the synchronised gradient: equal on both ranks, and the 1-process value
    assert r0["seen_grad_norms"] == r1["seen_grad_norms"]
    assert r0["seen_grad_norms"] == pytest.approx(one.result()["seen_grad_norms"], rel=1e-5)
    assert r0["seen_grad_norms"] == pytest.approx(ref.result()["seen_grad_norms"], rel=1e-4)
    assert r0["collectives"] == r0["counted_batches"]


def test_compiled_ddp_gradient_sync_disabled_still_averages(workdir):
    """CompileConfig(disable=("gradient_sync",)) under DDP: no all-reduce in the graph, so the step runs as
    the split tier, whose eager all-reduce averages the gradients (ranks must not drift apart)."""
    args = ("--model", "plain")
    run = _compiled(workdir, "nosync", *args, "--disable", "gradient_sync")
    ref = _reference(workdir, "nosync", *args)
    r0, r1 = run.result(0), run.result(1)
    assert r0["compile_mode"] == r1["compile_mode"] == "fwd_bwd", r0["compile_fallback"]
    assert "pass 'gradient_sync' is disabled" in r0["compile_fallback"]
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    assert r0["collectives"] == r0["counted_batches"] == 14  # one eager all-reduce (one bucket) per step


def test_comm_hook_falls_back_with_the_cause(workdir):
    run = _compiled(workdir, "commhook", "--model", "plain", "--count-comm", compile="1")
    r0 = run.result(0)
    assert r0["compile_mode"] == "eager" and "ddp_comm_hook" in r0["compile_fallback"]
    assert r0["comm_calls"] > 0  # DDP's reducer did the all-reduces


def test_compiled_ddp_under_torchrun_agrees_with_the_trainer_launch(workdir):
    launched = _plain_run(workdir)
    run = _compiled(workdir, "torchrun", "--model", "plain", torchrun=True)
    assert run.result(0)["torchelastic"] and run.result(0)["compile_mode"] == "full"
    assert max_diff(launched.weights(0), run.weights(0)) == 0.0
    assert max_diff(launched.weights(1), run.weights(1)) == 0.0


@pytest.mark.parametrize("fail_rank", [0, 1])
def test_a_rank_that_raises_ends_every_rank_out_of_the_compiled_all_reduce(workdir, fail_rank):
    """The peer of the failing rank is inside the step graph's all-reduce: it must end with the
    error quickly (the failing rank tears its connections down), not after the group's timeout."""
    run = run_script(str(workdir / f"fail{fail_rank}"), "--devices", "2", "--model", "failing", "--compile", "strict",
                     "--fail-rank", str(fail_rank), "--timeout", "30", check=False, timeout=60)
    assert run.proc.returncode != 0
    assert f"boom on rank {fail_rank}" in run.output
    if fail_rank == 1:
        assert "RankFailedError: Rank 1 raised" in run.output
    assert run.seconds < 30
