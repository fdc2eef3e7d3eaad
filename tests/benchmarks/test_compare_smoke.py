"""Smoke test of benchmarks/compare.py: a --quick run of the tiny workload yields one row per
available runner with positive throughput. No timing assertions: this machine is shared and noisy."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # compare.py puts benchmarks/ on sys.path for `workloads`
    return module


def test_compare_quick_tiny(compare, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "compare.json"
    rc = compare.main(["--quick", "--workloads", "tiny_mlp", "--steps", "8", "--json", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout

    available = [r.name for r in compare.RUNNERS if r.unavailable() is None]
    assert "hand loop" in available
    data = json.loads(out.read_text())
    rows = {r["runner"]: r for r in data["results"] if r["workload"] == "tiny_mlp"}
    assert sorted(rows) == sorted(available), (rows.keys(), data["skipped_runners"])
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["samples_per_s"] > 0 and row["ms_per_step"] > 0, row
        assert row["time_vs_hand"] > 0, row
        assert row["final_loss"] == row["final_loss"], row  # not NaN: the runner really trained
        assert f"| tiny_mlp | {name}" in stdout, stdout
        assert row["tokens_per_s"] is None  # one sample is not a token sequence here
        assert 0 < row["mfu"] < 1.5, row  # FLOPs/s over the GEMM rate measured on this machine
    assert data["peak_tflops"]["value"] > 0 and "measured" in data["peak_tflops"]["source"]
    assert rows["hand loop"]["time_vs_hand"] == pytest.approx(1.0)
    for key in ("cpu", "nproc", "torch_num_threads", "versions", "date"):
        assert key in data["machine"]
    assert data["machine"]["versions"]["torch"]


def test_workloads_are_deterministic() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from workloads import WORKLOADS

    for w in WORKLOADS.values():
        a = w.make_batches(2, w.batch_size, 0)
        b = w.make_batches(2, w.batch_size, 0)
        assert len(a) == 2 and a[0][0].shape[0] == w.batch_size
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.equal(xb) and ya.equal(yb)


def test_flop_estimates() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from workloads import WORKLOADS

    mlp = WORKLOADS["mlp"]
    assert mlp.flops_per_sample(mlp.make_model()) == 6 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    gpt = WORKLOADS["gpt"]
    model = gpt.make_model()
    # per token: 6 x (parameters without the 64 x 128 position table) + 12 L d T; 64 tokens a sample
    n = sum(p.numel() for p in model.parameters()) - 64 * 128
    assert gpt.flops_per_sample(model) == (6 * n + 12 * 4 * 128 * 64) * 64
    assert gpt.tokens_per_sample == 64
