"""Tied (shared) parameters, Lightning's ``utilities.parameter_tying``: find them by name, and tie them again after
something (a device move of a copy, a state-dict load into separate tensors) untied them."""
from __future__ import annotations

from typing import Dict, List

from torch import nn


def find_shared_parameters(module: nn.Module) -> List[List[str]]:
    """The groups of parameter names (two or more each) that refer to one tensor, in registration order."""
    seen: Dict[int, List[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        seen.setdefault(id(param), []).append(name)
    return [names for names in seen.values() if len(names) > 1]


def _owner(module: nn.Module, path: str):
    *parents, leaf = path.split(".")
    for name in parents:
        module = getattr(module, name)
    return module, leaf


def set_shared_parameters(module: nn.Module, shared_params: List[List[str]]) -> nn.Module:
    """Makes every name of each group (``find_shared_parameters``'s result) refer to its first name's parameter."""
    for names in shared_params:
        owner, leaf = _owner(module, names[0])
        ref = getattr(owner, leaf)
        for path in names[1:]:
            owner, leaf = _owner(module, path)
            setattr(owner, leaf, ref)
    return module


__all__ = ["find_shared_parameters", "set_shared_parameters"]
