"""Multi-process DDP/FSDP on CPU (gloo, 2 processes), each run a subprocess of ``ddp_script.py``.

Numerical tolerance: 2 processes x batch b against 1 process x batch 2b differ only by the order of the
fp32 sums (DDP averages the two ranks' mean gradients with one all-reduce; FSDP reduce-scatters): weights
after 16 SGD/Adam steps agree to ``TOL = 1e-6`` (measured ~5e-8).
"""
from __future__ import annotations

import os

import pytest
import torch
from distributed._runner import max_diff, run_in_process, run_script

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
TOL = 1e-6
_cache: dict = {}


def _cached(key, fn):
    if key not in _cache:
        _cache[key] = fn()
    return _cache[key]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


def _reference(workdir, *args):
    key = ("ref",) + args
    return _cached(key, lambda: run_in_process(str(workdir / f"ref{len(_cache)}"), "--devices", "1", "--strategy",
                                               "auto", "--batch", "8", *args))


def _ddp(workdir):
    return _cached("ddp", lambda: run_script(str(workdir / "ddp"), "--devices", "2", "--count-comm", "--checkpointing",
                                             "--record-saves"))


def test_ddp_two_processes_match_one_process_double_batch(workdir):
    ref, run = _reference(workdir), _ddp(workdir)
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0  # ranks hold identical replicas
    r0, r1 = run.result(0), run.result(1)
    assert (r0["rank"], r1["rank"], r0["world_size"], r0["is_global_zero"], r1["is_global_zero"]) == (0, 1, 2, True, False)
    assert (r1["local_rank"], r1["node_rank"]) == (1, 0)
    assert r0["global_step"] == ref.result()["global_step"] == 16


def test_sync_dist_logging_and_all_gather(workdir):
    run = _ddp(workdir)
    for rank in (0, 1):
        m = run.result(rank)["metrics"]
        assert m["rank_mean"] == pytest.approx(0.5)  # mean over ranks
        assert m["rank_max"] == 1.0
        assert m["rank_sum"] == 8.0  # 8 batches per rank: 8 * 0 + 8 * 1
        assert run.result(rank)["all_gather"] == [0.0, 1.0]
    # the synced epoch loss equals the single-process epoch loss (same samples, equal batch sizes)
    assert run.result(0)["metrics"]["train_loss"] == pytest.approx(_reference(workdir).result()["metrics"]["train_loss"], abs=1e-6)  # noqa: E501


def test_checkpoints_written_by_rank_zero_only(workdir):
    run = _ddp(workdir)
    files = os.listdir(os.path.join(run.out, "ckpts"))
    assert len(files) == 2, files  # one per epoch
    assert os.path.exists(os.path.join(run.out, "saves_0.txt"))
    assert not os.path.exists(os.path.join(run.out, "saves_1.txt"))
    with open(os.path.join(run.out, "saves_0.txt")) as f:
        assert len(f.read().split()) == 2


def test_accumulation_skips_allreduce_on_non_final_micro_batches(workdir):
    ref = _reference(workdir, "--accumulate", "2")
    run = run_script(str(workdir / "ddp_acc"), "--devices", "2", "--accumulate", "2", "--count-comm")
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    plain = _ddp(workdir).result(0)
    acc = run.result(0)
    assert acc["global_step"] == 8 and plain["global_step"] == 16  # 16 micro-batches per rank
    buckets = plain["comm_calls"] // 16
    assert buckets >= 1 and plain["comm_calls"] == 16 * buckets
    assert acc["comm_calls"] == 8 * buckets  # one gradient all-reduce per optimizer step, none on micro-steps


def test_manual_optimization_under_ddp_matches_one_process(workdir):
    """``manual_backward`` inside a step that runs through DDP: the reducer averages the gradients."""
    ref = _reference(workdir, "--model", "manual")
    run = run_script(str(workdir / "ddp_manual"), "--devices", "2", "--model", "manual", "--count-comm")
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    r0 = run.result(0)
    assert r0["global_step"] == 16 and r0["comm_calls"] >= 16
    assert r0["metrics"]["train_loss"] == pytest.approx(ref.result()["metrics"]["train_loss"], abs=1e-6)


def _two_nodes(out, torchrun, *args):
    """Two 'machines' (two process trees on this one, talking over localhost), one process each."""
    import subprocess
    import sys

    from distributed._runner import ROOT, SCRIPT, clean_env, free_port

    port = free_port()
    procs = []
    for node in (0, 1):
        script_args = [SCRIPT, "--out", out, "--devices", "1", "--num-nodes", "2", *args]
        if torchrun:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                   f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", *script_args]
            env = clean_env()
        else:  # Lightning's way: the same command on every node, NODE_RANK and MASTER_* in the environment
            cmd = [sys.executable, *script_args]
            env = clean_env(NODE_RANK=str(node), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-4000:]


@pytest.mark.parametrize("torchrun", [False, True], ids=["node_rank_env", "torchrun"])
def test_two_nodes_match_one_process(workdir, torchrun):
    from distributed._runner import Run

    out = str(workdir / f"nodes_{torchrun}")
    _two_nodes(out, torchrun)
    run = Run(out, None, 0.0)  # type: ignore[arg-type]
    r0, r1 = run.result(0), run.result(1)
    assert (r0["world_size"], r0["node_rank"], r1["node_rank"], r1["local_rank"]) == (2, 0, 1, 0)
    assert r1["is_global_zero"] is False and r0["is_global_zero"] is True
    assert max_diff(_reference(workdir).weights(), run.weights(0)) < TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0


def test_loggers_write_on_rank_zero_only(workdir):
    import csv

    run = run_script(str(workdir / "ddp_csv"), "--devices", "2", "--model", "plain", "--csv")
    root = os.path.join(run.out, "lightning_logs")
    assert os.listdir(root) == ["version_0"]  # rank 1 made no version of its own
    with open(os.path.join(root, "version_0", "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    epochs = [r for r in rows if r.get("train_loss")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]  # one row per epoch, not one per rank
    # the logged epoch loss is the synced one (sync_dist=True): both ranks agree on it
    assert float(epochs[-1]["train_loss"]) == pytest.approx(run.result(1)["metrics"]["train_loss"], rel=1e-6)
    assert len([r for r in rows if r.get("val_loss")]) == 2


def test_fsdp_matches_single_process_and_full_checkpoint_loads_on_one_device(workdir, tmp_path):
    ref = _reference(workdir, "--optimizer", "adam")
    full = str(tmp_path / "full.ckpt")
    run = run_script(str(workdir / "fsdp"), "--devices", "2", "--strategy", "fsdp", "--optimizer", "adam",
                     "--save", full)
    assert max_diff(ref.weights(), run.weights(0)) < TOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    ckpt = torch.load(full, weights_only=False)
    assert max_diff(ckpt["state_dict"], run.weights(0)) == 0.0
    # the full file's optimizer state is index-keyed like a single-device run's: it loads into one
    from distributed import ddp_script

    import trainer as L

    model = ddp_script.Net(optimizer="adam")
    t = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    t.fit(model, torch.utils.data.DataLoader(ddp_script.dataset(), batch_size=8), ckpt_path=full)
    assert t.global_step == 16
    assert max_diff(model.state_dict(), run.weights(0)) == 0.0
    _cache["fsdp_adam"] = run


def test_fsdp_sharded_checkpoint_resumes_exactly_and_converts(workdir, tmp_path):
    full_run = _cache.get("fsdp_adam") or run_script(str(workdir / "fsdp2"), "--devices", "2", "--strategy", "fsdp",
                                                     "--optimizer", "adam")
    folder = str(tmp_path / "sharded.ckpt")
    common = ("--devices", "2", "--strategy", "fsdp", "--optimizer", "adam", "--state-dict-type", "sharded")
    run_script(str(workdir / "fsdp_first"), *common, "--max-epochs", "1", "--save", folder)
    assert os.path.isdir(folder) and os.path.isfile(os.path.join(folder, "meta.pt"))
    resumed = run_script(str(workdir / "fsdp_resumed"), *common, "--max-epochs", "2", "--ckpt", folder)
    assert resumed.result(0)["global_step"] == 16
    assert max_diff(resumed.weights(0), full_run.weights(0)) == 0.0  # bit-exact continuation

    from trainer.strategies import convert_sharded_checkpoint

    single = convert_sharded_checkpoint(folder, str(tmp_path / "single.ckpt"))
    ckpt = torch.load(single, weights_only=False)
    assert ckpt["global_step"] == 8 and set(ckpt["state_dict"]) == set(full_run.weights(0))
    from distributed import ddp_script

    import trainer as L

    model = ddp_script.Net(optimizer="adam")
    t = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    t.fit(model, torch.utils.data.DataLoader(ddp_script.dataset(), batch_size=8), ckpt_path=single)
    assert max_diff(model.state_dict(), full_run.weights(0)) < TOL  # 2-rank start, 1-device finish


def test_torchrun_and_trainer_launch_agree(workdir):
    run = _ddp(workdir)
    elastic = run_script(str(workdir / "torchrun"), "--devices", "2", torchrun=True)
    assert elastic.result(0)["torchelastic"] and elastic.result(1)["rank"] == 1
    assert max_diff(elastic.weights(0), run.weights(0)) == 0.0
    assert elastic.result(0)["metrics"] == pytest.approx(run.result(0)["metrics"])


def test_ddp_spawn_returns_results_to_main_process(workdir):
    run = run_script(str(workdir / "spawn"), "--devices", "2", "--strategy", "ddp_spawn")
    # only the main process wrote files: weights and metrics came back from rank 0
    assert not os.path.exists(os.path.join(run.out, "result_1.json"))
    assert max_diff(_reference(workdir).weights(), run.weights(0)) < TOL
    assert run.result(0)["global_step"] == 16
    assert run.result(0)["metrics"]["rank_mean"] == pytest.approx(0.5)


@pytest.mark.parametrize("fail_rank", [1, 0])
def test_a_rank_that_raises_ends_every_rank(workdir, fail_rank):
    run = run_script(str(workdir / f"fail{fail_rank}"), "--devices", "2", "--fail-rank", str(fail_rank),
                     "--timeout", "20", check=False, timeout=40)
    assert run.proc.returncode != 0
    assert f"boom on rank {fail_rank}" in run.output
    if fail_rank == 1:
        assert "RankFailedError: Rank 1 raised" in run.output  # rank 0 ends with rank 1's error
    assert run.seconds < 20  # never waits for the process-group timeout (20 s here)
    assert not os.path.exists(os.path.join(run.out, "result_0.json"))
