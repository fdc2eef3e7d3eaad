"""``RichModelSummary``: the model summary as a ``rich`` table (Lightning's default summary when rich is installed)."""
from __future__ import annotations

import importlib.util
from typing import Any

from trainer.callbacks.model_summary import ModelSummary, get_formatted_model_size, get_human_readable_count

_RICH_AVAILABLE = importlib.util.find_spec("rich") is not None


class RichModelSummary(ModelSummary):
    """Print the summary with ``rich`` (to the rich console, i.e. stdout), same columns and totals as Lightning.

    Args:
        max_depth: Deepest nesting level shown (-1: all, 0: no summary).
        header_style: rich style of the header row (keyword, default ``"bold magenta"``).
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not _RICH_AVAILABLE:
            raise ModuleNotFoundError(
                "`RichModelSummary` requires `rich` to be installed. Install it by running `pip install -U rich`."
            )
        super().__init__(max_depth, **summarize_kwargs)

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
        from rich import get_console
        from rich.table import Table

        console = get_console()
        column_names = [name for name, _ in summary_data]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        table.add_column("Name", justify="left", no_wrap=True)
        table.add_column("Type")
        table.add_column("Params", justify="right")
        table.add_column("Mode")
        table.add_column("FLOPs", justify="right")
        for name in ("In sizes", "Out sizes"):
            if name in column_names:
                table.add_column(name, justify="right", style="white")
        for row in zip(*(values for _, values in summary_data)):
            table.add_row(*row)
        console.print(table)

        counts = [
            f"{get_human_readable_count(int(n)):<10}"
            for n in (trainable_parameters, total_parameters - trainable_parameters, total_parameters)
        ]
        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_column()
        grid.add_row(f"[bold]Trainable params[/]: {counts[0]}")
        grid.add_row(f"[bold]Non-trainable params[/]: {counts[1]}")
        grid.add_row(f"[bold]Total params[/]: {counts[2]}")
        grid.add_row(f"[bold]Total estimated model params size (MB)[/]: {get_formatted_model_size(model_size):<10}")
        grid.add_row(f"[bold]Modules in train mode[/]: {total_training_modes['train']}")
        grid.add_row(f"[bold]Modules in eval mode[/]: {total_training_modes['eval']}")
        grid.add_row(f"[bold]Total FLOPs[/]: {get_human_readable_count(total_flops)}")
        console.print(grid)
