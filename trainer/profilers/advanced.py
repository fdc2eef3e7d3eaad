"""``AdvancedProfiler``: cProfile per action; the report prints each action's functions by cumulative time."""
from __future__ import annotations

import cProfile
import io
import os
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional, Union

from trainer.profilers.profiler import Profiler


class AdvancedProfiler(Profiler):
    """``line_count_restriction``: how many functions per action (an int, or a fraction of them);
    ``dump_stats``: also write each action's raw stats to ``<dirpath>/<stage>-...-<action>.prof``."""

    def __init__(self, dirpath: Optional[Union[str, Path]] = None, filename: Optional[str] = None,
                 line_count_restriction: float = 1.0, dump_stats: bool = False) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.profiled_actions: Dict[str, cProfile.Profile] = defaultdict(cProfile.Profile)
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats

    def start(self, action_name: str) -> None:
        for profile in self.profiled_actions.values():  # one cProfile is active at a time
            profile.disable()
        self.profiled_actions[action_name].enable()

    def stop(self, action_name: str) -> None:
        profile = self.profiled_actions.get(action_name)
        if profile is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        profile.disable()

    def _dump_stats(self, action_name: str, profile: cProfile.Profile) -> None:
        assert self.dirpath, "`AdvancedProfiler(dump_stats=True)` needs a `dirpath`"
        os.makedirs(self.dirpath, exist_ok=True)
        profile.dump_stats(os.path.join(self.dirpath, self._prepare_filename(action_name, extension=".prof")))

    def summary(self) -> str:
        stats = {}
        for action_name, profile in self.profiled_actions.items():
            if self.dump_stats:
                self._dump_stats(action_name, profile)
            stream = io.StringIO()
            pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction)
            stats[action_name] = stream.getvalue()
        return self._stats_to_str(stats)

    def teardown(self, stage: Optional[str]) -> None:
        super().teardown(stage=stage)
        self.profiled_actions.clear()

    def __reduce__(self) -> tuple:
        # cProfile objects do not pickle (spawned processes get a fresh profiler with the same settings)
        return (self.__class__, (), {"dirpath": self.dirpath, "filename": self.filename,
                                     "line_count_restriction": self.line_count_restriction})
