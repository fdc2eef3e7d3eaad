"""Profilers: ``None`` (pass-through, free), ``"simple"`` (wall time per action) and ``"advanced"`` (cProfile)."""
from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Dict, Generator, List, Optional

from trainer.exceptions import MisconfigurationException

_NULL = nullcontext()


class Profiler:
    """Base profiler: ``start``/``stop`` of named actions and ``summary()``."""

    enabled = True

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None) -> None:
        self.dirpath = dirpath
        self.filename = filename

    def start(self, action_name: str) -> None:
        raise NotImplementedError

    def stop(self, action_name: str) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    @contextmanager
    def profile(self, action_name: str) -> Generator:
        try:
            self.start(action_name)
            yield action_name
        finally:
            self.stop(action_name)

    def describe(self) -> None:
        text = self.summary()
        if not text:
            return
        if self.dirpath is not None:
            os.makedirs(self.dirpath, exist_ok=True)
            path = os.path.join(self.dirpath, f"{self.filename or 'profiler'}.txt")
            with open(path, "w") as f:
                f.write(text)
        else:
            print(text)

    def setup(self, stage: str, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        if self.dirpath is None and log_dir is not None and self.filename is not None:
            self.dirpath = log_dir

    def teardown(self, stage: Optional[str]) -> None:
        pass


class PassThroughProfiler(Profiler):
    """Profiles nothing; ``profile()`` returns one shared null context (no allocation per call)."""

    enabled = False

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass

    def profile(self, action_name: str) -> ContextManager:  # type: ignore[override]
        return _NULL

    def summary(self) -> str:
        return ""


class SimpleProfiler(Profiler):
    """Records the wall time of every action; the summary lists mean, count, total and share."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None, extended: bool = True) -> None:
        super().__init__(dirpath, filename)
        self.current_actions: Dict[str, float] = {}
        self.recorded_durations: Dict[str, List[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.monotonic()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self.current_actions[action_name] = time.monotonic()

    def stop(self, action_name: str) -> None:
        end = time.monotonic()
        if action_name not in self.current_actions:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        start = self.current_actions.pop(action_name)
        self.recorded_durations[action_name].append(end - start)

    def summary(self) -> str:
        if not self.recorded_durations:
            return ""
        total = time.monotonic() - self.start_time
        rows = []
        for name, durations in self.recorded_durations.items():
            s = sum(durations)
            rows.append((name, s / len(durations), len(durations), s, 100.0 * s / total if total else 0.0))
        rows.sort(key=lambda r: r[3], reverse=True)
        width = max(len("Action"), *(len(r[0]) for r in rows))
        header = f"{'Action':<{width}} | {'Mean duration (s)':>17} | {'Num calls':>9} | {'Total time (s)':>14} | {'Percentage %':>12}"
        lines = ["", "FIT Profiler Report", "", header, "-" * len(header)]
        lines.append(f"{'Total':<{width}} | {'-':>17} | {'-':>9} | {total:>14.5f} | {100.0:>12.3f}")
        for name, mean, num, s, pct in rows:
            lines.append(f"{name:<{width}} | {mean:>17.5f} | {num:>9d} | {s:>14.5f} | {pct:>12.3f}")
        return "\n".join(lines) + "\n"


class AdvancedProfiler(Profiler):
    """cProfile per action; the summary prints the top functions of each action."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None, line_count_restriction: float = 1.0) -> None:
        super().__init__(dirpath, filename)
        self.profiled_actions: Dict[str, cProfile.Profile] = {}
        self.line_count_restriction = line_count_restriction

    def start(self, action_name: str) -> None:
        if action_name not in self.profiled_actions:
            self.profiled_actions[action_name] = cProfile.Profile()
        self.profiled_actions[action_name].enable()

    def stop(self, action_name: str) -> None:
        pr = self.profiled_actions.get(action_name)
        if pr is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        pr.disable()

    def summary(self) -> str:
        out = []
        for name, pr in self.profiled_actions.items():
            s = io.StringIO()
            pstats.Stats(pr, stream=s).strip_dirs().sort_stats("cumulative").print_stats(self.line_count_restriction)
            out.append(f"Profile stats for: {name}\n{s.getvalue()}")
        return "\n".join(out)


PROFILER_CHOICES = ("simple", "advanced", "pytorch", "xla")


def resolve_profiler(profiler: Any) -> Profiler:
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str):
        name = profiler.lower()
        if name == "simple":
            return SimpleProfiler()
        if name == "advanced":
            return AdvancedProfiler()
    raise MisconfigurationException(
        f"`Trainer(profiler={profiler!r})` is not valid. Allowed: None, 'simple', 'advanced' or a Profiler instance."
    )
