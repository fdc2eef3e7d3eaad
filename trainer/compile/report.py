"""``trainer.compile_report``: what the compiled engine did, for users and tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class CompileReport:
    enabled: bool = False
    # "full": the whole step is one graph per variant; "fwd_bwd": forward+backward compiled,
    # hooks and the optimizer step eager; "eager": fell back (see fallback_reason); None: not run yet
    mode: Optional[str] = None
    graphs_built: int = 0
    recompiles: int = 0  # graphs built for a variant that already had one (new shape, new hyperparameters)
    compile_seconds: float = 0.0
    fallback_reason: Optional[str] = None
    passes_applied: List[str] = field(default_factory=list)
    graph_keys: List[str] = field(default_factory=list)
    steps_run: int = 0
    update_compiled: bool = False  # fwd_bwd tier: the optimizer update ran as its own compiled graph

    def __str__(self) -> str:
        if not self.enabled:
            return "compile: off"
        if self.mode == "eager":
            return f"compile: fell back to eager ({self.fallback_reason})"
        return (
            f"compile: {self.mode}, {self.graphs_built} graph(s), {self.recompiles} recompile(s),"
            f" {self.compile_seconds:.1f}s compiling, passes {self.passes_applied}, {self.steps_run} steps"
            + (", compiled update" if self.update_compiled else "")
        )
