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
    assert text.startswith("Profiler Report")  # no stage outside a Trainer (Lightning's header)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0] == ["Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"]
    assert cells[1][0] == "Total" and cells[1][2] == "4" and cells[1][4] == "100 %"
    assert [c[0] for c in cells[2:]] == ["run_training_epoch", "other"]  # by share of the run
    assert cells[2][2] == "3"
    short = SimpleProfiler(extended=False)
    with short.profile("a"):
        pass
    assert [c.strip() for c in short.summary().splitlines()[3].strip("|").split("|")] == [
        "Action", "Mean duration (s)", "Total time (s)"]


def test_simple_profiler_misuse():
    p = SimpleProfiler()
    p.start("x")
    with pytest.raises(ValueError, match="already started"):
        p.start("x")
    p.stop("x")
    with pytest.raises(ValueError, match="never started"):
        p.stop("x")
    assert SimpleProfiler().summary().strip() == "Profiler Report"


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


def test_describe_writes_file(tmp_path, caplog):
    """Lightning's file name, ``<stage>-<filename>.txt`` in ``dirpath``; without a filename the report is logged."""
    p = SimpleProfiler(dirpath=str(tmp_path), filename="prof")
    p.setup(stage="fit")
    with p.profile("a"):
        pass
    p.describe()
    text = (tmp_path / "fit-prof.txt").read_text()
    assert text.startswith("FIT Profiler Report") and "|  a" in text
    q = SimpleProfiler()
    with q.profile("printed_action"):
        pass
    import logging

    with caplog.at_level(logging.INFO, logger="trainer.profilers.profiler"):
        q.describe()
    assert "printed_action" in caplog.text


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
    with pytest.raises(TypeError, match="abstract"):
        Profiler()
