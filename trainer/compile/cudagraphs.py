"""CUDA-graph replay of the compiled training step (``CompileConfig(cudagraphs=True)``).

The ``full`` tier's step graph (forward, backward, clipping, AMP and the fused update) is a fixed
sequence of kernels over tensors that live for the whole fit: parameters, gradient-window buffers,
optimizer state, the lr/step/scaler tensors. Only the batch is new every step. That is the case
CUDA graphs are made for: the kernel launches are recorded once and replayed with one
``cudaGraphLaunch``, so the per-step host cost no longer grows with the number of kernels.

How a graph is used (:class:`GraphReplay`, one per compiled step graph, i.e. per variant and batch
shape):

- the first ``warmup`` calls run the compiled function normally, on a side stream as the CUDA
  graph documentation asks (lazy cuBLAS/workspace initialisation, Triton autotuning and the
  caching allocator's first allocations must not happen during a capture);
- the next call captures it with the batch read from static input buffers, then replays the
  capture once (a capture records the kernels but does not run them);
- from then on each call copies the batch into the static buffers (one device copy per batch
  tensor), replays, and returns clones of the static outputs (the loss and logged values stay
  valid after the next replay; one small copy each);
- the persistent inputs are checked by address on every call (``data_ptr``): if anything replaced
  one (``p.data = ...``, an optimizer ``load_state_dict``), the graph is captured again rather than
  replayed over freed memory.

What a capture needs that the engine must provide: every input on the GPU (Adam's ``step`` counter
is moved to the parameter's device, as ``capturable=True`` keeps it; see the engine), no host
synchronisation inside the step (the fp16 inf check and the skipped step already stay on the
device), and no collectives (DDP/FSDP steps run without CUDA graphs; the report says why). RNG
(dropout) is graph-safe: PyTorch registers the default CUDA generator with every capture, whose
philox offset advances on each replay.

The graph primitives come from a small backend object (:class:`CudaBackend` on a GPU: ``warmup(fn)``
and ``capture(fn)`` returning an object with ``replay()`` and ``outputs``), so that the replay logic
is unit-tested on the CPU with a stand-in that re-runs the function over the same static buffers
and copies its results into fixed output tensors; the real CUDA path is exercised by the GPU tests
(skipped without a GPU).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional, Sequence

import torch
from torch import Tensor


class _Recorded:
    """A captured CUDA graph and the static tensors its replay writes the step's outputs into."""

    __slots__ = ("graph", "outputs")

    def __init__(self, graph: Any, outputs: Any) -> None:
        self.graph = graph
        self.outputs = list(outputs)

    def replay(self) -> None:
        self.graph.replay()


def capture_kwargs(pool: Any) -> dict:
    """Arguments of ``torch.cuda.graph`` for a step graph.

    ``capture_error_mode="thread_local"``: the default "global" mode makes any CUDA call from
    another thread during capture an error, and a pinned-memory DataLoader's thread makes such
    calls. ``pool``: the memory pool of the engine's first graph (None for the first), so the
    micro/final/short-batch graphs share one pool instead of each reserving its own activations.
    They replay one after another on one stream and their outputs are cloned out at once, so
    the memory one graph frees is dead when another reuses it.
    """
    return {"pool": pool, "capture_error_mode": "thread_local"}


class CudaBackend:
    """The CUDA primitives: the side stream for warm-up, and capture into one memory pool shared by
    every graph this backend records (one backend per engine)."""

    def __init__(self) -> None:
        self.side = torch.cuda.Stream()
        self.pool: Any = None

    def warmup(self, fn: Callable[[], Any]) -> Any:
        current = torch.cuda.current_stream()
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            out = fn()
        current.wait_stream(self.side)
        return out

    def capture(self, fn: Callable[[], Any]) -> _Recorded:
        """Records ``fn`` (nothing runs until ``replay``)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, **capture_kwargs(self.pool)):
            out = fn()
        if self.pool is None:
            self.pool = graph.pool()
        return _Recorded(graph, out)


def make_backend() -> Any:
    return CudaBackend()


def cuda_graph_reason(tensors: Sequence[Any]) -> Optional[str]:
    """Why the step's inputs cannot be captured (None: they can)."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    for t in tensors:
        if isinstance(t, Tensor) and t.device.type != "cuda":
            return f"an input of the step graph lives on {t.device} (a CUDA graph records GPU work only)"
    return None


class GraphReplay:
    """One compiled step graph run as a CUDA graph. Called exactly like the compiled function:
    ``(*persistent, *batch)``; returns its outputs (cloned out of the graph's static memory)."""

    def __init__(self, fn: Callable[..., Any], n_persistent: int, warmup: int = 2, backend: Any = None,
                 on_capture: Optional[Callable[[], None]] = None,
                 on_failure: Optional[Callable[[str], None]] = None) -> None:
        self.fn = fn
        self.on_failure = on_failure
        self.failed: Optional[str] = None  # why recording failed: the compiled graph runs unrecorded
        self.n_persistent = n_persistent
        self.warmup = warmup
        self.backend = backend if backend is not None else make_backend()
        self.on_capture = on_capture
        self.calls = 0
        self.captures = 0
        self.replays = 0
        self._graph: Any = None
        self._ptrs: List[int] = []
        self._static_in: List[Tensor] = []

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.failed is not None:
            return self.fn(*args)
        n = self.n_persistent
        persistent, batch = args[:n], args[n:]
        if self._graph is not None and not self._same_persistent(persistent):
            self._graph = None  # an input was replaced since the capture: record again
        if self._graph is None:
            if self.calls <= self.warmup:
                return self.backend.warmup(lambda: self.fn(*args))
            if not self._capture(persistent, batch):
                return self.fn(*args)  # nothing ran while recording: this step runs unrecorded
        else:
            for static, t in zip(self._static_in, batch):
                if isinstance(static, Tensor):
                    static.copy_(t)
        graph = self._graph
        graph.replay()
        self.replays += 1
        return [o.clone() if isinstance(o, Tensor) else o for o in graph.outputs]

    def _same_persistent(self, persistent: Sequence[Any]) -> bool:
        ptrs = self._ptrs
        for i, t in enumerate(persistent):
            if isinstance(t, Tensor) and t.data_ptr() != ptrs[i]:
                return False
        return True

    def _capture(self, persistent: Sequence[Any], batch: Sequence[Any]) -> bool:
        self._graph = None  # free the previous graph's pool first
        self._static_in = [t.clone() if isinstance(t, Tensor) else t for t in batch]
        static_in = self._static_in
        fn = self.fn
        self._ptrs = [t.data_ptr() if isinstance(t, Tensor) else 0 for t in persistent]
        try:
            self._graph = self.backend.capture(lambda: fn(*persistent, *static_in))
        except Exception as e:  # a recording runs no kernel: the step is still to be run
            self._graph, self._static_in = None, []
            self.failed = (f"recording the compiled step as a CUDA graph failed ({type(e).__name__}: {e}); a step"
                           " that synchronises with the host (e.g. `.item()`, a data-dependent shape) cannot be"
                           " recorded. The compiled graph runs without CUDA graphs (`CompileConfig(cudagraphs=False)`"
                           " says so up front)")
            from trainer.compile.engine import CompileWarning

            warnings.warn(f"trainer.compile: {self.failed}", CompileWarning, stacklevel=3)
            if self.on_failure is not None:
                self.on_failure(self.failed)
            return False
        self.captures += 1
        if self.on_capture is not None:
            self.on_capture()
        return True


__all__ = ["CudaBackend", "GraphReplay", "capture_kwargs", "cuda_graph_reason", "make_backend"]
