"""``CombinedLoader``: several iterables (usually DataLoaders) iterated together, as Lightning 2.x does.

A collection of iterables (one iterable, a list/tuple/dict of them, nested as deep as needed) is flattened
into a list of leaves. Each step draws from the leaves according to a mode and hands back
``(batch, batch_idx, dataloader_idx)``:

* ``"min_size"``: one batch from every iterable, in the collection's structure; stops with the shortest.
* ``"max_size_cycle"``: the same, but an exhausted iterable restarts until the longest one is exhausted
  (the training default for several train loaders).
* ``"max_size"``: the same, but an exhausted iterable gives ``None`` until the longest one is exhausted.
* ``"sequential"``: each iterable in turn, its batches as they are, ``dataloader_idx`` naming the iterable and
  ``batch_idx`` counting from 0 within it (the evaluation and prediction default).

``len()`` is only known once iterated (``iter(loader)`` first, Lightning's rule): limits set by the Trainer
(``limit_*_batches``, one per iterable) enter it, and in ``"sequential"`` mode they also cut each iterable.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Type, Union

import torch.utils._pytree as pytree

from trainer.utilities.data import loader_iter, sized_len

Number = Union[int, float]
_BatchTuple = Tuple[Any, int, int]  # batch, batch_idx, dataloader_idx


# ------------------------------------------------------------------------------------ structure
def _is_leaf(node: Any) -> bool:
    """A leaf is anything pytree does not open, and a container holding only numbers/strings
    (``[1, 2, 3]`` is one iterable, not three)."""
    if pytree.tree_is_leaf(node):
        return True
    children, _ = pytree.tree_flatten(node, is_leaf=lambda child: child is not node)
    return all(isinstance(child, (int, float, str)) for child in children)


def _flatten(iterables: Any) -> Tuple[List[Any], pytree.TreeSpec]:
    return pytree.tree_flatten(iterables, is_leaf=_is_leaf)


def _lengths(iterables: List[Any]) -> List[Number]:
    return [float("inf") if (n := sized_len(it)) is None else n for it in iterables]


def _capped(iterables: List[Any], limits: Optional[List[Number]]) -> List[Number]:
    lengths = _lengths(iterables)
    if limits is None:
        return lengths
    return [min(length, limit) for length, limit in zip(lengths, limits)]


# ------------------------------------------------------------------------------------ modes
class _ModeIterator(Iterator[_BatchTuple]):
    """Iterates flat ``iterables`` under one mode; ``limits`` (one per iterable) are the Trainer's batch limits."""

    def __init__(self, iterables: List[Iterable], limits: Optional[List[Number]] = None) -> None:
        if limits is not None and len(limits) != len(iterables):
            raise ValueError(f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(iterables)})")
        self.iterables = iterables
        self.limits = limits
        self.iterators: List[Iterator] = []
        self._idx = 0  # the next batch_idx

    def __iter__(self) -> "_ModeIterator":
        self.iterators = [loader_iter(it) for it in self.iterables]
        self._idx = 0
        return self

    def __next__(self) -> _BatchTuple:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def _emit(self, batches: List[Any]) -> _BatchTuple:
        index = self._idx
        self._idx += 1
        return batches, index, 0

    def reset(self) -> None:
        self.iterators = []
        self._idx = 0

    def __getstate__(self) -> Dict[str, Any]:
        """Copies and pickles (``copy.deepcopy`` of a callback that holds the trainer) leave the live iterators
        behind: a DataLoader's iterator or a generator cannot be copied; the copy has to be iterated afresh."""
        state = self.__dict__.copy()
        state["iterators"] = [None if _uncopyable(it) else it for it in self.iterators]
        return state


def _uncopyable(iterator: Any) -> bool:
    from types import GeneratorType

    from torch.utils.data.dataloader import _BaseDataLoaderIter

    return isinstance(iterator, (GeneratorType, _BaseDataLoaderIter))


class _MinSize(_ModeIterator):
    def __next__(self) -> _BatchTuple:
        return self._emit([next(it) for it in self.iterators])

    def __len__(self) -> int:
        return min(_lengths(self.iterables) + list(self.limits or []))  # type: ignore[return-value]


class _MaxSizeCycle(_ModeIterator):
    """An exhausted iterable restarts (a new ``iter()``, so a shuffling sampler draws a new order) until every
    iterable was exhausted at least once."""

    def __init__(self, iterables: List[Iterable], limits: Optional[List[Number]] = None) -> None:
        super().__init__(iterables, limits)
        self._exhausted: List[bool] = []

    def __iter__(self) -> "_MaxSizeCycle":
        super().__iter__()
        self._exhausted = [False] * len(self.iterables)
        return self

    def __next__(self) -> _BatchTuple:
        batches = []
        for i, iterator in enumerate(self.iterators):
            try:
                batches.append(next(iterator))
            except StopIteration:
                self._exhausted[i] = True
                if all(self._exhausted):
                    raise
                self.iterators[i] = loader_iter(self.iterables[i])
                batches.append(next(self.iterators[i]))
        return self._emit(batches)

    def __len__(self) -> int:
        return max(_capped(self.iterables, self.limits))  # type: ignore[return-value]

    def reset(self) -> None:
        super().reset()
        self._exhausted = []


class _MaxSize(_ModeIterator):
    def __next__(self) -> _BatchTuple:
        batches: List[Any] = []
        for iterator in self.iterators:
            batches.append(next(iterator, _EXHAUSTED))
        if all(b is _EXHAUSTED for b in batches):
            raise StopIteration
        return self._emit([None if b is _EXHAUSTED else b for b in batches])

    def __len__(self) -> int:
        return max(_capped(self.iterables, self.limits))  # type: ignore[return-value]


_EXHAUSTED = object()


class _Sequential(_ModeIterator):
    """One iterable after the other; only the current one has an iterator (so at most one set of workers runs)."""

    def __init__(self, iterables: List[Iterable], limits: Optional[List[Number]] = None) -> None:
        super().__init__(iterables, limits)
        self._iterable_idx = 0

    def __iter__(self) -> "_Sequential":
        self._idx = 0
        self._iterable_idx = 0
        self._open_current()
        return self

    def __next__(self) -> _BatchTuple:
        while self._iterable_idx < len(self.iterables):
            if self.limits is None or self._idx < self.limits[self._iterable_idx]:
                try:
                    batch = next(self.iterators[0])
                except StopIteration:
                    pass
                else:
                    index = self._idx
                    self._idx += 1
                    return batch, index, self._iterable_idx
            self._iterable_idx += 1
            self._idx = 0
            self._open_current()
        raise StopIteration

    def _open_current(self) -> None:
        if self._iterable_idx < len(self.iterables):
            self.iterators = [loader_iter(self.iterables[self._iterable_idx])]
        else:
            self.iterators = []

    def __len__(self) -> int:
        return sum(_capped(self.iterables, self.limits))  # type: ignore[return-value]

    def reset(self) -> None:
        super().reset()
        self._iterable_idx = 0


_MODES: Dict[str, Tuple[Type[_ModeIterator], Callable[[List[int]], int]]] = {
    "min_size": (_MinSize, min),
    "max_size_cycle": (_MaxSizeCycle, max),
    "max_size": (_MaxSize, max),
    "sequential": (_Sequential, sum),
}
_SUPPORTED_MODES = tuple(_MODES)


# ------------------------------------------------------------------------------------ the loader
class CombinedLoader(Iterable):
    """Iterates a collection of iterables under one of Lightning's modes (see the module docstring).

    Args:
        iterables: one iterable or a (nested) list/tuple/dict of them.
        mode: ``"min_size"`` (default), ``"max_size_cycle"``, ``"max_size"`` or ``"sequential"``.

    Iterating yields ``(batch, batch_idx, dataloader_idx)``; ``batch`` has the structure of ``iterables``
    (except in ``"sequential"`` mode, where it is one iterable's batch).
    """

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in _MODES:
            raise ValueError(f"Unsupported mode {mode!r}, please select one of: {list(_MODES)}.")
        self._iterables = iterables
        self._flattened, self._spec = _flatten(iterables)
        self._mode = mode
        self._iterator: Optional[_ModeIterator] = None
        self._limits: Optional[List[Number]] = None
        self._single_leaf = self._spec.is_leaf()  # one iterable: its batch needs no rebuilding

    # ---------------------------------------------------------------- structure
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def iterables(self) -> Any:
        """The collection of iterables, in the structure it was given (with any replaced leaves)."""
        return self._iterables

    @property
    def flattened(self) -> List[Any]:
        """The iterables as a flat list (the leaves of :attr:`iterables`)."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: List[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(flattened)}) and existing length ({len(self._flattened)})"
            )
        self._iterables = pytree.tree_unflatten(flattened, self._spec)
        self._flattened = list(flattened)

    @property
    def sampler(self) -> Any:
        """Each iterable's ``sampler`` (None where it has none), in the structure of :attr:`iterables`."""
        return pytree.tree_unflatten([getattr(it, "sampler", None) for it in self._flattened], self._spec)

    @property
    def batch_sampler(self) -> Any:
        """Each iterable's ``batch_sampler`` (None where it has none), in the structure of :attr:`iterables`."""
        return pytree.tree_unflatten([getattr(it, "batch_sampler", None) for it in self._flattened], self._spec)

    @property
    def limits(self) -> Optional[List[Number]]:
        """At most this many batches of each iterable (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: Optional[Union[Number, List[Number]]]) -> None:
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        elif isinstance(limits, list) and len(limits) != len(self._flattened):
            raise ValueError(
                f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(self._flattened)})"
            )
        self._limits = limits

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> "CombinedLoader":
        iterator_cls, _ = _MODES[self._mode]
        iterator = iterator_cls(self._flattened, self._limits)
        iter(iterator)
        self._iterator = iterator
        return self

    def __next__(self) -> _BatchTuple:
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        out = next(self._iterator)
        if self._mode == "sequential":
            return out
        batches, batch_idx, dataloader_idx = out
        batch = batches[0] if self._single_leaf else pytree.tree_unflatten(batches, self._spec)
        return batch, batch_idx, dataloader_idx

    def __len__(self) -> int:
        """The number of batches under the mode and the limits (``iter()`` first)."""
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        return len(self._iterator)

    def reset(self) -> None:
        """Forgets the iterator and shuts down the worker processes of the iterables' iterators."""
        if self._iterator is not None:
            self._iterator.reset()
            self._iterator = None
        for iterable in self._flattened:
            _shutdown_workers(iterable)

    # ---------------------------------------------------------------- used by the Trainer
    def _dataset_length(self) -> int:
        """The datasets' total length under the mode (only iterables with a sized ``dataset`` count)."""
        lengths = [n for it in self._flattened if (n := sized_len(getattr(it, "dataset", None))) is not None]
        if not lengths:
            raise NotImplementedError("All datasets are iterable-style datasets.")
        _, combine = _MODES[self._mode]
        return combine(lengths)

    def _state_dicts(self) -> List[Dict[str, Any]]:
        """State dicts of the iterables that have one (``state_dict`` and ``load_state_dict``)."""
        return [it.state_dict() for it in self._flattened if _stateful(it)]

    def _load_state_dicts(self, states: List[Dict[str, Any]]) -> None:
        if not states:
            return
        stateful = [it for it in self._flattened if _stateful(it)]
        if len(stateful) != len(states):
            raise RuntimeError(
                f"The CombinedLoader has {len(stateful)} stateful loaders, but found {len(states)} states"
                " in the checkpoint. Please make sure you define the same dataloaders that were used when saving"
                " the checkpoint."
            )
        for it, state in zip(stateful, states):
            it.load_state_dict(state)


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _shutdown_workers(loader: Any) -> None:
    """A DataLoader keeps its iterator for persistent workers: stop them and drop it."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    if hasattr(loader, "_iterator"):
        iterator = loader._iterator
        if isinstance(iterator, _MultiProcessingDataLoaderIter):
            iterator._shutdown_workers()
        loader._iterator = None


__all__ = ["CombinedLoader"]
