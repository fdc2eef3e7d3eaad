"""Graph passes over the captured training step, applied in order (see ``CompileConfig.passes``).

Each pass is a pure function ``(GraphModule, example_inputs, cfg) -> GraphModule`` in its own
file. ``cfg`` is a :class:`StepConfig`. Passes find their nodes through the capture's conventions:
placeholders carry ``node.meta["role"] = (kind, index)`` (kind: param, frozen, buffer, state name,
lr, acc, batch) and the optimizer update is one ``trainer_compile::*_param_`` node per parameter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import fx

from trainer.compile.ops import UPDATE_OPS


class Variant(str, Enum):
    """Which graph of the step a capture builds; compares equal to its value ("step", ...)."""

    STEP = "step"  # no accumulation: forward, backward, update
    MICRO = "micro"  # a window's batch before its last: gradients added to the window's buffers
    FINAL = "final"  # a window's last batch: summed gradients, clipping, update
    FWD_BWD = "fwd_bwd"  # forward and backward only: gradients out (tier fwd_bwd)
    UPDATE = "update"  # the optimizer update alone, from gradients in

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def updates(self) -> bool:
        """The graph applies the optimizer update (and so clipping, the gradient all-reduce)."""
        return self in (Variant.STEP, Variant.FINAL)


@dataclass(frozen=True)
class StepConfig:
    variant: Variant
    accumulate: int = 1
    clip_val: Optional[float] = None
    clip_algorithm: str = "norm"
    precision: str = "32-true"
    use_cpp: bool = True  # fusion target: torch.ops.trainer.* (trainer._C) or a foreach torch expression
    scaler: Optional[Tuple[float, float, int]] = None  # 16-mixed: GradScaler (growth, backoff, interval)
    sync: Optional[Tuple[str, int, int]] = None  # DDP: (process group name, world size, bucket bytes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))  # a plain string names its member


Pass = Callable[[fx.GraphModule, Sequence[Any], StepConfig], fx.GraphModule]


def update_nodes(graph: fx.Graph) -> List[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target in UPDATE_OPS]


def placeholders(graph: fx.Graph, kind: str) -> Dict[int, fx.Node]:
    out = {}
    for n in graph.nodes:
        if n.op == "placeholder" and n.meta.get("role", (None,))[0] == kind:
            out[n.meta["role"][1]] = n
    return out


def role(node: Any) -> Tuple[Optional[str], int]:
    return node.meta.get("role", (None, -1)) if isinstance(node, fx.Node) else (None, -1)


def _load() -> Dict[str, Pass]:
    from .accumulation import accumulation
    from .amp import amp
    from .clipping import clipping
    from .gradient_sync import gradient_sync
    from .optimizer_fusion import optimizer_fusion

    return {"amp": amp, "accumulation": accumulation, "clipping": clipping,
            "gradient_sync": gradient_sync, "optimizer_fusion": optimizer_fusion}


class _Registry(dict):
    def __missing__(self, key: str) -> Pass:
        self.update(_load())
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        if not dict.__len__(self):
            self.update(_load())
        return dict.__contains__(self, key)

    def __iter__(self):
        if not dict.__len__(self):
            self.update(_load())
        return dict.__iter__(self)


PASSES: Dict[str, Pass] = _Registry()


def run_passes(
    gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig, names: Sequence[str],
    debug_dir: Optional[str] = None, tag: str = "step", applied: Optional[List[str]] = None,
) -> fx.GraphModule:
    """Applies ``names`` in order; with ``debug_dir`` writes ``{tag}.{i}.{name}.{before,after}.py``.

    ``applied``: the names of the passes that changed the graph are appended to it (a pass with
    nothing to do for this graph, e.g. ``clipping`` without ``gradient_clip_val`` or on a ``micro``
    graph, leaves the code as it was and is not named)."""
    for i, name in enumerate(names):
        before = gm.code
        if debug_dir:
            os.makedirs(debug_dir, exist_ok=True)
            with open(os.path.join(debug_dir, f"{tag}.{i}.{name}.before.py"), "w") as f:
                f.write(before)
        gm = PASSES[name](gm, example_inputs, cfg)
        gm.graph.lint()
        gm.recompile()
        if applied is not None and gm.code != before:
            applied.append(name)
        if debug_dir:
            with open(os.path.join(debug_dir, f"{tag}.{i}.{name}.after.py"), "w") as f:
                f.write(gm.code)
    return gm


__all__ = ["PASSES", "StepConfig", "placeholders", "role", "run_passes", "update_nodes"]
