"""Profilers: pass-through costs nothing, simple/advanced summaries, bad values."""
from __future__ import annotations

import time

import pytest

from trainer.exceptions import MisconfigurationException
from trainer.profiler import AdvancedProfiler, PassThroughProfiler, Profiler, SimpleProfiler, resolve_profiler


def test_passthrough_returns_one_shared_null_context():
    p = PassThroughProfiler()
    a, b = p.profile("a"), p.profile("b")
    assert a is b
    with a as value:
        assert value is None
    assert p.summary() == "" and not p.enabled


def test_simple_profiler_records_and_summarises():
    p = SimpleProfiler()
    for _ in range(3):
        with p.profile("run_training_epoch"):
            time.sleep(0.002)
    with p.profile("other"):
        pass
    assert len(p.recorded_durations["run_training_epoch"]) == 3
    assert all(d >= 0.002 for d in p.recorded_durations["run_training_epoch"])
    text = p.summary()
    lines = text.splitlines()
    assert "Action" in text and "Total" in text
    row = next(line for line in lines if line.startswith("run_training_epoch"))
    assert " 3 " in row
    # sorted by total time: the slow action comes before the empty one
    assert text.index("run_training_epoch") < text.index("other")


def test_simple_profiler_misuse():
    p = SimpleProfiler()
    p.start("x")
    with pytest.raises(ValueError, match="already started"):
        p.start("x")
    p.stop("x")
    with pytest.raises(ValueError, match="never started"):
        p.stop("x")
    assert SimpleProfiler().summary() == ""


def test_simple_profiler_stops_on_exception():
    p = SimpleProfiler()
    with pytest.raises(RuntimeError):
        with p.profile("boom"):
            raise RuntimeError
    assert p.current_actions == {} and len(p.recorded_durations["boom"]) == 1


def test_advanced_profiler_summary():
    p = AdvancedProfiler()

    def work():
        return sum(i * i for i in range(1000))

    with p.profile("step"):
        work()
    text = p.summary()
    assert "Profile stats for: step" in text and "work" in text
    with pytest.raises(ValueError):
        p.stop("never")


def test_describe_writes_file(tmp_path, capsys):
    p = SimpleProfiler(dirpath=str(tmp_path), filename="prof")
    with p.profile("a"):
        pass
    p.describe()
    assert "a" in (tmp_path / "prof.txt").read_text()
    q = SimpleProfiler()
    with q.profile("printed_action"):
        pass
    q.describe()
    assert "printed_action" in capsys.readouterr().out


@pytest.mark.parametrize("value, cls", [(None, PassThroughProfiler), ("simple", SimpleProfiler),
                                        ("Advanced", AdvancedProfiler)])
def test_resolve_profiler(value, cls):
    assert type(resolve_profiler(value)) is cls
    inst = SimpleProfiler()
    assert resolve_profiler(inst) is inst


@pytest.mark.parametrize("bad", ["fast", 1, True])
def test_resolve_profiler_bad(bad):
    with pytest.raises(MisconfigurationException, match="profiler"):
        resolve_profiler(bad)


def test_bad_profiler_string_in_trainer(L):
    from helpers import misconfiguration_exception

    with pytest.raises(misconfiguration_exception(L)):
        L.Trainer(profiler="fast", logger=False)


def test_base_profiler_is_abstract():
    p = Profiler()
    with pytest.raises(NotImplementedError):
        p.start("x")
