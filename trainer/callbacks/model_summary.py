"""``ModelSummary`` callback and ``summarize``: Lightning's layer table of a module.

The table (columns `` | Name | Type | Params | Mode | FLOPs`` plus ``In sizes``/``Out sizes`` when the module has
an ``example_input_array``) and the totals below it are formatted exactly as Lightning 2.6 prints them, so logs
diff cleanly between the two.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainer.callbacks._utils import is_global_zero, warn_once
from trainer.callbacks.callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

PARAMETER_NUM_UNITS = [" ", "K", "M", "B", "T"]
UNKNOWN_SIZE = "?"
LEFTOVER_PARAMS_NAME = "other params"
NOT_APPLICABLE = "n/a"

_PRECISION_TO_BITS = {
    "64": 64, "32": 32, "16": 16, "bf16": 16, "16-true": 16, "bf16-true": 16, "32-true": 32, "64-true": 64,
}


def _num_params(params: Any) -> int:
    total = 0
    for p in params:
        if isinstance(p, nn.parameter.UninitializedParameter):
            warn_once(
                "The total number of parameters detected may be inaccurate because the model contains"
                " an instance of `UninitializedParameter`. To get an accurate number, set `self.example_input_array`"
                " in your LightningModule."
            )
            continue
        total += p.numel()
    return total


def _batch_shape(batch: Any) -> Union[str, list]:
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [_batch_shape(b) for b in batch]
    return UNKNOWN_SIZE


class LayerSummary:
    """Type, parameter count, mode and (after a forward pass) input/output shapes of one submodule."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._in_size: Any = None
        self._out_size: Any = None
        self._hook_handle = None
        if not isinstance(module, torch.jit.ScriptModule):
            self._hook_handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, _: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        inp = (*args, *kwargs.values()) if kwargs is not None else args
        if len(inp) == 1:
            inp = inp[0]
        self._in_size = _batch_shape(inp)
        self._out_size = _batch_shape(out)
        self.detach_hook()  # shapes of the first call only (a shared module may be called again)

    def detach_hook(self) -> None:
        if self._hook_handle is not None:
            self._hook_handle.remove()
            self._hook_handle = None

    @property
    def in_size(self) -> Union[str, list]:
        return self._in_size or UNKNOWN_SIZE

    @property
    def out_size(self) -> Union[str, list]:
        return self._out_size or UNKNOWN_SIZE

    @property
    def layer_type(self) -> str:
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        return _num_params(self._module.parameters())

    @property
    def training(self) -> bool:
        return self._module.training


class Summary:
    """The layer summary of ``model`` down to ``max_depth`` (-1: all levels, 0: no layer rows)."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        self._model = model
        self._max_depth = max_depth
        self._flop_counter = FlopCounterMode(display=False, depth=max_depth + 1)
        trainer = getattr(model, "_trainer", None)
        precision = str(getattr(trainer, "precision", "32-true")) if trainer is not None else "32-true"
        if precision not in _PRECISION_TO_BITS:
            warnings.warn(
                f"Precision {precision} is not supported by the model summary. "
                " Estimated model size in MB will not be accurate. Using 32 bits instead."
            )
        self._bytes_per_param_mb = (_PRECISION_TO_BITS.get(precision, 32) / 8.0) * 1e-6
        self._layer_summary = self._summarize()

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._model.named_children())
        return list(self._model.named_modules())[1:]  # without the root

    def _summarize(self) -> "OrderedDict[str, LayerSummary]":
        summary = OrderedDict((name, LayerSummary(module)) for name, module in self.named_modules)
        if getattr(self._model, "example_input_array", None) is not None:
            self._forward_example_input()
        for layer in summary.values():
            layer.detach_hook()
        if self._max_depth >= 1:
            for name in [n for n in summary if n.count(".") >= self._max_depth]:
                del summary[name]
        return summary

    def _forward_example_input(self) -> None:
        model = self._model
        trainer = getattr(model, "_trainer", None)
        input_ = model.example_input_array
        before = getattr(model, "_on_before_batch_transfer", None)
        transfer = getattr(model, "_apply_batch_transfer_handler", None)
        if callable(before) and callable(transfer):
            input_ = transfer(before(input_))
        modes = {name: m.training for name, m in model.named_modules()}
        model.eval()
        forward_context: Any = contextlib.nullcontext()
        plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
        if plugin is not None and hasattr(plugin, "forward_context"):
            forward_context = plugin.forward_context()
        try:
            with torch.no_grad(), forward_context, self._flop_counter:
                if isinstance(input_, (list, tuple)):
                    model(*input_)
                elif isinstance(input_, dict):
                    model(**input_)
                else:
                    model(input_)
        finally:
            for name, m in model.named_modules():
                if name in modes:
                    m.training = modes[name]

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_summary.keys())

    @property
    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self._layer_summary.values()]

    @property
    def in_sizes(self) -> list:
        return [layer.in_size for layer in self._layer_summary.values()]

    @property
    def out_sizes(self) -> list:
        return [layer.out_size for layer in self._layer_summary.values()]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self._layer_summary.values()]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for layer in self._layer_summary.values()]

    @property
    def total_training_modes(self) -> dict[str, int]:
        modes = [m.training for m in self._model.modules()][1:]  # without the root
        return {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def total_parameters(self) -> int:
        return _num_params(self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _num_params(p for p in self._model.parameters() if p.requires_grad)

    @property
    def total_layer_params(self) -> int:
        return sum(self.param_nums)

    @property
    def model_size(self) -> float:
        return self.total_parameters * self._bytes_per_param_mb

    @property
    def total_flops(self) -> int:
        return self._flop_counter.get_total_flops()

    @property
    def flop_counts(self) -> dict[str, dict[Any, int]]:
        counts = self._flop_counter.get_flop_counts()
        root = type(self._model).__name__
        return {name: counts.get(f"{root}.{name}", {}) for name in self.layer_names}

    def _get_summary_data(self) -> list[tuple[str, list[str]]]:
        arrays: list[tuple[str, list[str]]] = [
            (" ", [str(i) for i in range(len(self._layer_summary))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [get_human_readable_count(n) for n in self.param_nums]),
            ("Mode", ["train" if mode else "eval" for mode in self.training_modes]),
            ("FLOPs", [get_human_readable_count(sum(c.values())) for c in self.flop_counts.values()]),
        ]
        if getattr(self._model, "example_input_array", None) is not None:
            arrays.append(("In sizes", [str(x) for x in self.in_sizes]))
            arrays.append(("Out sizes", [str(x) for x in self.out_sizes]))
        leftover = self.total_parameters - self.total_layer_params
        if leftover > 0:
            columns = dict(arrays)
            columns[" "].append(" ")
            columns["Name"].append(LEFTOVER_PARAMS_NAME)
            columns["Type"].append(NOT_APPLICABLE)
            columns["Params"].append(get_human_readable_count(leftover))
            columns["Mode"].append(NOT_APPLICABLE)
            columns["FLOPs"].append(NOT_APPLICABLE)
            for key in ("In sizes", "Out sizes"):
                if key in columns:
                    columns[key].append(NOT_APPLICABLE)
        return arrays

    def __str__(self) -> str:
        return _format_summary_table(
            self.total_parameters,
            self.trainable_parameters,
            self.model_size,
            self.total_training_modes,
            self.total_flops,
            *self._get_summary_data(),
        )

    __repr__ = __str__


def _format_summary_table(
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    total_flops: int,
    *cols: tuple[str, list[str]],
) -> str:
    n_rows = len(cols[0][1])
    n_cols = 1 + len(cols)
    widths = []
    for header, values in cols:
        width = max(len(str(v)) for v in values) if n_rows else 0
        widths.append(max(width, len(header)))
    total_width = sum(widths) + 3 * n_cols

    lines = [" | ".join(f"{header:<{w}}" for (header, _), w in zip(cols, widths)), "-" * total_width]
    for i in range(n_rows):
        lines.append(" | ".join(f"{str(values[i]):<{w}}" for (_, values), w in zip(cols, widths)))
    lines.append("-" * total_width)
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        (total_training_modes["train"], "Modules in train mode"),
        (total_training_modes["eval"], "Modules in eval mode"),
        (get_human_readable_count(total_flops), "Total Flops"),
    ]
    lines.extend(f"{str(value):<10}{label}" for value, label in totals)
    return "\n".join(lines)


def get_formatted_model_size(total_model_size: float) -> str:
    return f"{total_model_size:,.3f}"


def get_human_readable_count(number: int) -> str:
    """``123`` -> ``'123  '``, ``1234`` -> ``'1.2 K'``, ``2e6`` -> ``'2.0 M'`` (Lightning's abbreviations)."""
    assert number >= 0
    num_digits = int(math.floor(math.log10(number)) + 1 if number > 0 else 1)
    num_groups = min(int(math.ceil(num_digits / 3)), len(PARAMETER_NUM_UNITS))
    scaled = number * (10 ** (-3 * (num_groups - 1)))
    index = num_groups - 1
    if index < 1 or scaled >= 100:
        return f"{int(scaled):,d} {PARAMETER_NUM_UNITS[index]}"
    return f"{scaled:,.1f} {PARAMETER_NUM_UNITS[index]}"


def summarize(module: nn.Module, max_depth: int = 1) -> str:
    """Lightning's summary table of ``module`` as a string."""
    return str(Summary(module, max_depth=max_depth))


class ModelSummary(Callback):
    """Log the summary table of the LightningModule when fitting starts.

    Args:
        max_depth: Deepest nesting level shown (-1: all, 0: no summary).
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self._max_depth:
            return
        summary = self._summary(trainer, pl_module)
        if is_global_zero(trainer):
            self.summarize(
                summary._get_summary_data(),
                summary.total_parameters,
                summary.trainable_parameters,
                summary.model_size,
                summary.total_training_modes,
                total_flops=summary.total_flops,
                **self._summarize_kwargs,
            )

    def _summary(self, trainer: "Trainer", pl_module: "LightningModule") -> Summary:
        return Summary(pl_module, max_depth=self._max_depth)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        log.info("\n" + table)
