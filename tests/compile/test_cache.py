"""Compile caching: a second build of the same step graphs loads them from inductor's on-disk FX
graph cache (``$TORCHINDUCTOR_CACHE_DIR``; see ``trainer/compile/__init__.py`` and
``engine._inductor_compile``, which gives inductor a fake mode with a ShapeEnv, and
``lowering.DecompTable``, which gives the CPU decomposition table a cache key: either missing and
every graph bypasses the cache), in the same process after the in-memory caches are cleared, and in a fresh
process. Checked on inductor's own counters, not on time.

The first build runs in a fresh cache directory (a temporary one): it must miss and write the
cache (a cold CPU compile: ~15 s here), every later build of the same graphs must hit it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from .models import MLP, fit, max_rel_diff

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_FRESH_PROCESS = r"""
import json
from torch._dynamo.utils import counters
from tests.compile.models import MLP, fit
trainer = fit(MLP(), True, epochs=1, gradient_clip_val=0.5)
print("RESULT", json.dumps({"counters": dict(counters["inductor"]), "aot": dict(counters["aot_autograd"]),
                            "graphs": trainer.compile_report.graphs_built}))
"""


def _inductor_counters() -> dict:
    return dict(counters["inductor"])


def _build():
    """One compiled fit (2 graphs: the 16-sample step and the short last batch's; with clipping, whose
    coefficient must be ATen ops for AOT autograd's cache) and the counters inductor and AOT autograd
    recorded for it."""
    counters.clear()
    trainer = fit(MLP(), True, epochs=1, gradient_clip_val=0.5)
    assert trainer.compile_report.mode == "full", trainer.compile_report
    assert "clipping" in trainer.compile_report.passes_applied, trainer.compile_report
    return trainer, {**_inductor_counters(), **{f"aot_{k}": v for k, v in counters["aot_autograd"].items()}}


@pytest.fixture(scope="module")
def cold_build(tmp_path_factory):
    """The first build, into an empty cache directory (kept for the rest of the module)."""
    mp = pytest.MonkeyPatch()
    cache = str(tmp_path_factory.mktemp("inductor_cache"))
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", cache)
    try:
        trainer, first = _build()
        yield cache, trainer, first
    finally:
        mp.undo()


def test_second_build_in_process_hits_the_fx_graph_cache(cold_build):
    cache, first_trainer, first = cold_build
    graphs = first_trainer.compile_report.graphs_built
    assert first.get("fxgraph_cache_bypass", 0) == 0, first
    assert first.get("fxgraph_cache_miss", 0) == graphs, first
    assert first.get("aot_autograd_cache_bypass", 0) == 0, first  # every graph can be keyed by AOT autograd
    # a fresh Trainer after the in-memory caches are gone: what is reused comes from the disk
    torch._dynamo.reset()
    from torch._inductor.utils import clear_caches

    clear_caches()
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", cache)
    try:
        trainer, second = _build()
    finally:
        mp.undo()
    assert second.get("fxgraph_cache_hit", 0) == trainer.compile_report.graphs_built == graphs, second
    assert second.get("fxgraph_cache_miss", 0) == 0 and second.get("fxgraph_cache_bypass", 0) == 0, second
    # AOT autograd's cache: no trace of forward/backward again either
    assert second.get("aot_autograd_cache_hit", 0) == graphs, second
    assert max_rel_diff(trainer.lightning_module, first_trainer.lightning_module) == 0.0  # the same kernels


def test_fresh_process_hits_the_fx_graph_cache(cold_build):
    cache, first_trainer, _ = cold_build
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    got = result["counters"]
    assert got.get("fxgraph_cache_hit", 0) == result["graphs"] == first_trainer.compile_report.graphs_built, got
    assert got.get("fxgraph_cache_miss", 0) == 0 and got.get("fxgraph_cache_bypass", 0) == 0, got
    assert result["aot"].get("autograd_cache_hit", 0) == result["graphs"], result["aot"]


def test_isa_probe_memo_is_scoped_to_the_engine_compiles(cold_build):
    """The ISA-probe memo patches inductor only inside the engine's compiles: after a compiled fit, a
    user's own torch.compile sees inductor's functions as shipped."""
    from torch._inductor import cpu_vec_isa

    from trainer.compile.engine import _isa_patches, isa_probe_memo

    shipped = (cpu_vec_isa.VecISA.check_build, cpu_vec_isa.valid_vec_isa_list)
    patches = _isa_patches()
    assert patches, "inductor's ISA probe API moved: the memo no longer applies"
    with isa_probe_memo():
        with isa_probe_memo():  # nested: each level restores what it found
            assert cpu_vec_isa.VecISA.check_build is not shipped[0]
        assert cpu_vec_isa.VecISA.check_build is not shipped[0]
        assert cpu_vec_isa.valid_vec_isa_list is not shipped[1]
    assert (cpu_vec_isa.VecISA.check_build, cpu_vec_isa.valid_vec_isa_list) == shipped
    fit(MLP(), True, epochs=1)
    assert (cpu_vec_isa.VecISA.check_build, cpu_vec_isa.valid_vec_isa_list) == shipped
