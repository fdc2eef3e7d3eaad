"""``trainer.compile_report``: what the compiled engine did, for users and tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class Tier(str, Enum):
    """How the training step runs (``CompileReport.mode``); compares equal to its value ("full", ...)."""

    FULL = "full"  # one graph per variant: forward, backward, passes, update
    FWD_BWD = "fwd_bwd"  # forward+backward compiled, hooks/clipping/scaler eager, a compiled update
    FSDP = "fsdp"  # compiled regions around FSDP's collectives + a sharded update (sharded.py)
    REGIONS = "regions"  # training_step as compiled regions between graph breaks (regions.py)
    EAGER = "eager"  # the eager engine

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class EvalReport:
    """The compiled ``validation_step``/``test_step``/``predict_step`` (:mod:`trainer.compile.eval`)
    of this Trainer so far (all stages together)."""

    graphs_built: int
    compile_seconds: float
    steps_run: int
    fallback_reasons: Dict[str, str]  # step name -> why it runs eagerly

    def __str__(self) -> str:
        text = f"eval: {self.graphs_built} graph(s), {self.compile_seconds:.1f}s compiling, {self.steps_run} steps"
        if self.fallback_reasons:
            text += ", eager: " + "; ".join(f"{k} ({v})" for k, v in self.fallback_reasons.items())
        return text


@dataclass
class CompileReport:
    """What the compiled training step did in this fit (``trainer.compile_report``).

    enabled: ``Trainer(compile=...)`` was on.
    mode: ``"full"``: the whole step is one graph per variant (single device, and DDP with the
        all-reduce in the graph); ``"fwd_bwd"``: forward+backward compiled, hooks/clipping/
        accumulation/scaler eager, the update a second graph when it can be; ``"fsdp"``: each FSDP
        unit's forward/backward compiled between FSDP2's hooks and the sharded update one graph
        (trainer/compile/sharded.py); ``"regions"``: the step is not one graph, so ``training_step``
        runs as compiled regions between graph breaks with the eager loop around it and the compiled
        update (``regions``, ``graph_breaks``; trainer/compile/regions.py); ``"eager"``: fell back
        (see ``fallback_reason``); None: not run yet.
    graphs_built: every graph compiled in this fit: one per step variant (``step``, ``micro``,
        ``final``, ``fwd_bwd``, ``update``) and batch signature, plus the recompiles.
    recompiles: graphs built again for a key (variant and batch signature) that already had one,
        because something baked into the graph changed (optimizer hyperparameters other than lr,
        ``accumulate_grad_batches``, a Python value the step reads: see ``recompile_reasons``). A new batch shape (a
        short last batch) is a new graph, not a
        recompile.
    compile_seconds: time spent capturing, running the passes and compiling (inductor).
    fallback_reason: why the step is not one full graph: the cause of the eager fallback (mode
        ``"eager"``), or of the split (mode ``"fwd_bwd"``, e.g. an overridden hook, or a semantic
        pass left out while its feature is in use); None for the full tier.
    passes_applied: the passes that changed at least one graph of this fit, in pass order (a pass
        with nothing to do, e.g. ``clipping`` without ``gradient_clip_val``, ``amp`` under
        ``32-true``, ``accumulation`` with k=1, is not named).
    graph_keys: one entry per graph built (``variant:signature``; ``update``; FSDP: ``region#n``).
    steps_run: batches run by the compiled step (micro-batches included).
    recompile_reasons: the guarded Python values whose change made the step be captured again, in the
        user's words (``self.beta == 0.5``: the value the graph was built with), one per set-up again.
    """

    enabled: bool = False
    mode: Optional[str] = None
    graphs_built: int = 0
    recompiles: int = 0
    compile_seconds: float = 0.0
    fallback_reason: Optional[str] = None
    passes_applied: List[str] = field(default_factory=list)
    graph_keys: List[str] = field(default_factory=list)
    steps_run: int = 0
    recompile_reasons: List[str] = field(default_factory=list)
    update_compiled: bool = False  # fwd_bwd tier: the optimizer update ran as its own compiled graph
    cudagraph_captures: int = 0  # CompileConfig(cudagraphs=True): step graphs recorded as CUDA graphs
    cudagraph_reason: Optional[str] = None  # cudagraphs asked for but the step runs without: why
    _eval_engine: Any = field(default=None, repr=False, compare=False)
    # mode "regions": each compiled region of training_step (ops, source lines, the break that ends it),
    # each graph break ("file:line: reason"), and how many region graphs were compiled (recompiles included)
    regions: List[str] = field(default_factory=list)
    graph_breaks: List[str] = field(default_factory=list)
    region_compiles: int = 0

    @property
    def eval(self) -> Optional[EvalReport]:
        """The compiled eval steps' figures (None: no eval step ran with compile on)."""
        engine = self._eval_engine
        if engine is None:
            return None
        return EvalReport(engine.graphs_built, engine.compile_seconds, engine.steps_run, engine.fallback_reasons)

    def __str__(self) -> str:
        if not self.enabled:
            return "compile: off"
        ev = self.eval
        tail = f"; {ev}" if ev is not None else ""
        if self.mode is None:
            return f"compile: no training step run{tail}"
        if self.mode == "eager":
            return f"compile: fell back to eager ({self.fallback_reason}){tail}"
        if self.mode == "regions":
            return (f"compile: regions, {len(self.regions)} region(s) ({self.region_compiles} compile(s)),"
                    f" {len(self.graph_breaks)} graph break(s)"
                    f" ({'; '.join(self.graph_breaks)}), {self.steps_run} steps"
                    + (", compiled update" if self.update_compiled else "") + tail)
        return (
            f"compile: {self.mode}, {self.graphs_built} graph(s), {self.recompiles} recompile(s),"
            f" {self.compile_seconds:.1f}s compiling, passes {self.passes_applied}, {self.steps_run} steps"
            + (", compiled update" if self.update_compiled else "")
            + (f", {self.cudagraph_captures} CUDA graph capture(s)" if self.cudagraph_captures else "")
            + (f", no CUDA graphs ({self.cudagraph_reason})" if self.cudagraph_reason else "") + tail
        )
