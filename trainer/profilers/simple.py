"""``SimpleProfiler``: wall time per action; the report lists mean, calls, total and share (Lightning's table)."""
from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from trainer.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Records the duration of every action; ``extended`` adds the number of calls and the share of the run."""

    def __init__(self, dirpath: Optional[Union[str, Path]] = None, filename: Optional[str] = None,
                 extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: Dict[str, float] = {}
        self.recorded_durations: Dict[str, List[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        if action_name not in self.current_actions:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded_durations[action_name].append(end - self.current_actions.pop(action_name))

    def _rows_extended(self) -> Tuple[List[Tuple[str, float, int, float, float]], int, float]:
        total_duration = time.perf_counter() - self.start_time
        rows = []
        for action, durations in self.recorded_durations.items():
            total = math.fsum(durations)
            rows.append((action, total / len(durations), len(durations), total, 100.0 * total / total_duration))
        rows.sort(key=lambda r: r[4], reverse=True)
        return rows, sum(r[2] for r in rows), total_duration

    def _rows(self) -> List[Tuple[str, float, float]]:
        rows = []
        for action, durations in self.recorded_durations.items():
            total = math.fsum(durations)
            rows.append((action, total / len(durations), total))
        rows.sort(key=lambda r: r[1], reverse=True)
        return rows

    def summary(self) -> str:
        sep = os.linesep
        out = (f"{self._stage.upper()} " if self._stage is not None else "") + f"Profiler Report{sep}"
        if not self.recorded_durations:
            return out + sep
        width = max(len(k) for k in self.recorded_durations)

        def row(*cells: str) -> str:
            text = f"{sep}|  {cells[0]:<{width}s}\t|"
            for cell in cells[1:]:
                text += f"  {cell:<15}\t|"
            return text

        if self.extended:
            header = row("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            line = f"{sep}{'-' * len(header.expandtabs())}"
            rows, total_calls, total_duration = self._rows_extended()
            out += line + header + line + row("Total", "-", f"{total_calls}", f"{total_duration:.5}", "100 %") + line
            for action, mean, calls, total, share in rows:
                out += row(action, f"{mean:.5}", f"{calls}", f"{total:.5}", f"{share:.5}")
        else:
            header = row("Action", "Mean duration (s)", "Total time (s)")
            line = f"{sep}{'-' * len(header.expandtabs())}"
            out += line + header + line
            for action, mean, total in self._rows():
                out += row(action, f"{mean:.5}", f"{total:.5}")
        return out + line + sep
