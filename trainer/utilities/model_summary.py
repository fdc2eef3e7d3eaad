"""Lightning's ``utilities.model_summary``: ``ModelSummary(model, max_depth)`` (the table the ``ModelSummary``
callback prints; ``str()`` of it is the table) and ``summarize(model, max_depth)``, which returns one."""
from __future__ import annotations

from torch import nn

from trainer.callbacks.model_summary import (
    LayerSummary,
    Summary,
    _batch_shape,
    get_formatted_model_size,
    get_human_readable_count,
)


class ModelSummary(Summary):
    """``ModelSummary(model, max_depth=1)``: per-layer names, types, parameter counts, modes and FLOPs, the totals
    (``total_parameters``, ``trainable_parameters``, ``model_size``); ``str()`` is the table."""

parse_batch_shape = _batch_shape  # a batch's shape as the summary's "In sizes" column shows it


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> ModelSummary:
    """The ``ModelSummary`` of ``lightning_module`` down to ``max_depth`` (Lightning returns the object; print it
    for the table)."""
    return ModelSummary(lightning_module, max_depth=max_depth)


__all__ = ["LayerSummary", "ModelSummary", "get_formatted_model_size", "get_human_readable_count", "parse_batch_shape",
           "summarize"]
