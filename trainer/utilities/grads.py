"""Gradient norms per parameter and overall, with Lightning's keys (``utilities.grad_norm``)."""
from __future__ import annotations

from typing import Dict, Union

import torch
from torch import nn


def grad_norm(
    module: nn.Module, norm_type: Union[float, int, str], group_separator: str = "/"
) -> Dict[str, torch.Tensor]:
    """The p-norm of each parameter's gradient and of all gradients together (as one concatenated vector).

    Keys: ``grad_{p}_norm{group_separator}{parameter name}`` per parameter that has a gradient, and
    ``grad_{p}_norm_total`` (present only when some parameter has a gradient), ``p`` written as a float
    (``grad_2.0_norm/layer.weight``). ``norm_type`` may be ``"inf"``.
    """
    p = float(norm_type)
    if p <= 0:
        raise ValueError(f"`norm_type` must be a positive number or 'inf' (infinity norm). Got {p}")
    prefix = f"grad_{p}_norm"
    norms = {
        f"{prefix}{group_separator}{name}": param.grad.detach().norm(p)
        for name, param in module.named_parameters()
        if param.grad is not None
    }
    if norms:
        # the norm of the per-parameter norms is the norm of the concatenated gradients (any p, inf included)
        # on the CPU, in the gradients' dtype, as Lightning's ``torch.tensor(list_of_norms)``
        norms[f"{prefix}_total"] = torch.stack([v.cpu() for v in norms.values()]).norm(p)
    return norms


__all__ = ["grad_norm"]
