"""``Profiler``: the base of every profiler (Lightning's ``profilers.profiler``): named actions
(``start``/``stop``/``profile``), a ``summary()``, and ``describe()`` that writes it to
``<dirpath>/<stage>-<filename>.txt`` or, without a filename, logs it."""
from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Optional, TextIO, Union

log = logging.getLogger(__name__)


class Profiler(ABC):
    """If you wish to write a custom profiler, you should inherit from this class."""

    enabled = True  # False only for PassThroughProfiler: the loops skip profiling calls altogether

    def __init__(self, dirpath: Optional[Union[str, Path]] = None, filename: Optional[str] = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._output_file: Optional[TextIO] = None
        self._write_stream: Optional[Callable] = None
        self._local_rank: Optional[int] = None
        self._stage: Optional[str] = None

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Defines how to start recording an action."""

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Defines how to record the duration once an action is complete."""

    def summary(self) -> str:
        return ""

    @contextmanager
    def profile(self, action_name: str) -> Generator:
        """``with profiler.profile("name"):`` records the block as one call of the action."""
        try:
            self.start(action_name)
            yield action_name
        finally:
            self.stop(action_name)

    def _rank_zero_info(self, *args: Any, **kwargs: Any) -> None:
        if self._local_rank in (None, 0):
            log.info(*args, **kwargs)

    def _prepare_filename(self, action_name: Optional[str] = None, extension: str = ".txt") -> str:
        """``<stage>-<filename>-<local_rank>-<action>`` (the parts that are set), path-unsafe characters as ``_``."""
        parts = [p for p in (self._stage, self.filename) if p]
        if self._local_rank is not None:
            parts.append(str(self._local_rank))
        if action_name is not None:
            parts.append(action_name)
        base = re.sub(r"[\\/:*?\"<>|\n\r\t]", "_", "-".join(parts))
        base = re.sub(r"_+", "_", base).strip()
        return (base or "profile") + extension

    def _prepare_streams(self) -> None:
        if self._write_stream is not None:
            return
        if self.filename and self.dirpath:
            os.makedirs(self.dirpath, exist_ok=True)
            self._output_file = open(os.path.join(self.dirpath, self._prepare_filename()), "a")
            self._write_stream = self._output_file.write
        else:
            self._write_stream = self._rank_zero_info

    def describe(self) -> None:
        """Writes the summary (to the file, or the log) and closes the file: usable outside a Trainer too."""
        self._prepare_streams()
        summary = self.summary()
        if summary and self._write_stream is not None:
            self._write_stream(summary)
        if self._output_file is not None:
            self._output_file.flush()
        self.teardown(stage=self._stage)

    def _stats_to_str(self, stats: Dict[str, str]) -> str:
        stage = f"{self._stage.upper()} " if self._stage is not None else ""
        output = [stage + "Profiler Report"]
        for action, value in stats.items():
            header = f"Profile stats for: {action}"
            if self._local_rank is not None:
                header += f" rank: {self._local_rank}"
            output.append(header)
            output.append(value)
        return os.linesep.join(output)

    def setup(self, stage: str, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        """Called by the Trainer before a run: the stage names the report, ``log_dir`` is the default ``dirpath``."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: Optional[str]) -> None:
        """Closes the report file."""
        self._write_stream = None
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def __del__(self) -> None:
        if "_stage" in self.__dict__:
            self.teardown(stage=self._stage)

    @property
    def local_rank(self) -> int:
        return 0 if self._local_rank is None else self._local_rank
