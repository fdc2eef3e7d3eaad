"""``ModelPruning``: ``torch.nn.utils.prune`` applied at epoch ends, with Lightning 2.6's arguments.

Pruning reparametrises each pruned tensor as ``<name>_orig * <name>_mask`` (a forward pre-hook); the
``_orig`` parameter is the very tensor the optimizer holds, so training goes on unchanged. With
``make_pruning_permanent`` the masks are folded in when training ends and in every saved checkpoint.
With the lottery ticket hypothesis the kept weights are reset to their values at the start of the fit.
"""
from __future__ import annotations

import inspect
import logging
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn.utils.prune as pytorch_prune
from torch import Tensor, nn

from trainer.callbacks._utils import is_global_zero
from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException
from trainer.module import LightningModule
from trainer.utilities import apply_to_collection

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_PYTORCH_PRUNING_FUNCTIONS: Dict[str, Callable] = {
    "ln_structured": pytorch_prune.ln_structured,
    "l1_unstructured": pytorch_prune.l1_unstructured,
    "random_structured": pytorch_prune.random_structured,
    "random_unstructured": pytorch_prune.random_unstructured,
}
_PYTORCH_PRUNING_METHOD: Dict[str, type] = {
    "ln_structured": pytorch_prune.LnStructured,
    "l1_unstructured": pytorch_prune.L1Unstructured,
    "random_structured": pytorch_prune.RandomStructured,
    "random_unstructured": pytorch_prune.RandomUnstructured,
}
_PARAM_TUPLE = Tuple[nn.Module, str]
_PARAM_LIST = Sequence[_PARAM_TUPLE]
_MODULE_CONTAINERS = (LightningModule, nn.Sequential, nn.ModuleList, nn.ModuleDict)


class ModelPruning(Callback):
    """Prunes ``parameters_to_prune`` (all weights and biases by default) at the end of training epochs.

    Args:
        pruning_fn: a name in ``torch.nn.utils.prune`` (``"l1_unstructured"``, ``"ln_structured"``,
            ``"random_structured"``, ``"random_unstructured"``) or a ``BasePruningMethod`` subclass.
        parameters_to_prune: ``(module, "name")`` pairs; empty: every ``parameter_names`` of every layer.
        parameter_names: ``"weight"`` and/or ``"bias"``.
        use_global_unstructured: prune across all the tensors at once (unstructured methods only).
        amount: fraction (float) or count (int) to prune, or ``epoch -> amount``.
        apply_pruning: whether to prune, or ``epoch -> bool``.
        make_pruning_permanent: fold the masks in when training ends and in saved checkpoints.
        use_lottery_ticket_hypothesis: reset the kept weights to their original values (or ``epoch -> bool``).
        resample_parameters: with the lottery ticket: re-initialise instead of the original values.
        pruning_dim: the dimension of structured pruning.
        pruning_norm: the norm of ``ln_structured``.
        verbose: 0 silent, 1 overall sparsity, 2 per-layer sparsity.
        prune_on_train_epoch_end: prune at the training epoch end (else at the validation epoch end).
    """

    PARAMETER_NAMES = ("weight", "bias")

    def __init__(
        self,
        pruning_fn: Union[Callable, str],
        parameters_to_prune: _PARAM_LIST = (),
        parameter_names: Optional[List[str]] = None,
        use_global_unstructured: bool = True,
        amount: Union[int, float, Callable[[int], Union[int, float]]] = 0.5,
        apply_pruning: Union[bool, Callable[[int], bool]] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: Union[bool, Callable[[int], bool]] = True,
        resample_parameters: bool = False,
        pruning_dim: Optional[int] = None,
        pruning_norm: Optional[int] = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
    ) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = parameters_to_prune
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = parameter_names or self.PARAMETER_NAMES
        self._global_kwargs: Dict[str, Any] = {}
        self._original_layers: Optional[Dict[int, Dict[str, Any]]] = None
        self._pruning_method_name: Optional[str] = None
        self._is_global_zero = True

        for name in self._parameter_names:
            if name not in self.PARAMETER_NAMES:
                raise MisconfigurationException(
                    f"The provided `parameter_names` name: {name} isn't in {self.PARAMETER_NAMES}"
                )
        self.pruning_fn = self._resolve_pruning_fn(pruning_fn, pruning_dim, pruning_norm)
        if use_global_unstructured and self.pruning_fn.PRUNING_TYPE != "unstructured":  # type: ignore[union-attr]
            raise MisconfigurationException(
                'Only the "unstructured" PRUNING_TYPE is supported with `use_global_unstructured=True`.'
                f" Found method {self.pruning_fn} of type {self.pruning_fn.PRUNING_TYPE}. "  # type: ignore[union-attr]
            )
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        if not (isinstance(amount, (int, float)) or callable(amount)):
            raise MisconfigurationException(
                "`amount` should be provided and be either an int, a float or Callable function."
            )
        self.amount = amount
        if verbose not in (0, 1, 2):
            raise MisconfigurationException("`verbose` must be any of (0, 1, 2)")
        self._verbose = verbose

    def _resolve_pruning_fn(self, pruning_fn: Union[Callable, str], pruning_dim: Optional[int],
                            pruning_norm: Optional[int]) -> Any:
        """A name becomes torch's method class (global) or function (local) with its ``dim``/``n``."""
        if isinstance(pruning_fn, str):
            name = pruning_fn.lower()
            if name not in _PYTORCH_PRUNING_FUNCTIONS:
                raise MisconfigurationException(
                    f"The provided `pruning_fn` {name} isn't available in PyTorch's"
                    f" built-in functions: {list(_PYTORCH_PRUNING_FUNCTIONS.keys())} "
                )
            kwargs: Dict[str, Any] = {}
            if name.endswith("_structured"):
                if pruning_dim is None:
                    raise MisconfigurationException(
                        "When requesting `structured` pruning, the `pruning_dim` should be provided."
                    )
                if name == "ln_structured":
                    if pruning_norm is None:
                        raise MisconfigurationException(
                            "When requesting `ln_structured` pruning, the `pruning_norm` should be provided."
                        )
                    kwargs["n"] = pruning_norm
                kwargs["dim"] = pruning_dim
            return self._create_pruning_fn(name, **kwargs)
        if self._is_pruning_method(pruning_fn):
            if not self._use_global_unstructured:
                raise MisconfigurationException(
                    "PyTorch `BasePruningMethod` is currently only supported with `use_global_unstructured=True`."
                )
            return pruning_fn
        raise MisconfigurationException(
            f"`pruning_fn` is expected to be a str in {list(_PYTORCH_PRUNING_FUNCTIONS.keys())}"
            f" or a PyTorch `BasePruningMethod`. Found: {pruning_fn}."
            " HINT: if passing a `BasePruningMethod`, pass the class, not an instance"
        )

    def filter_parameters_to_prune(self, parameters_to_prune: _PARAM_LIST = ()) -> _PARAM_LIST:
        """Override to choose which of the sanitised ``(module, name)`` pairs are pruned."""
        return parameters_to_prune

    def _create_pruning_fn(self, pruning_fn: str, **kwargs: Any) -> Union[Callable, type]:
        method = (_PYTORCH_PRUNING_METHOD if self._use_global_unstructured else _PYTORCH_PRUNING_FUNCTIONS)[pruning_fn]
        self._pruning_method_name = method.__name__
        if self._use_global_unstructured:
            self._global_kwargs = kwargs
            return method
        return ModelPruning._wrap_pruning_fn(method, **kwargs)

    @staticmethod
    def _wrap_pruning_fn(pruning_fn: Callable, **kwargs: Any) -> Callable:
        return partial(pruning_fn, **kwargs)

    # ------------------------------------------------------------------ pruning
    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Folds every pruning mask of ``module`` into its tensor and removes the pre-hooks."""
        for _, submodule in module.named_modules():
            for key in list(submodule._forward_pre_hooks):
                hook = submodule._forward_pre_hooks[key]
                if isinstance(hook, pytorch_prune.BasePruningMethod):
                    hook.remove(submodule)
                    del submodule._forward_pre_hooks[key]

    @staticmethod
    def _copy_param(new: nn.Module, old: nn.Module, name: str) -> None:
        dst = getattr(new, name + "_orig") if hasattr(new, name + "_orig") else getattr(new, name)
        src = getattr(old, name)
        if not isinstance(dst, Tensor) or not isinstance(src, Tensor):
            return
        # In place, so the optimizer and the compiled engine keep reading the same storage. Lightning assigns
        # `dst.data = src.data.to(dst.device)`: on the same device the kept original then shares the trained
        # tensor's storage, and later resets copy the trained values. Aliasing the original the other way round
        # keeps exactly that behaviour (the second reset of a fit is Lightning's).
        dst.data.copy_(src.data.to(dst.device))
        if src.device == dst.device and src.dtype == dst.dtype:
            src.data = dst.data

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Resets the kept weights to the values they had at the start (or re-samples them)."""
        assert self._original_layers is not None
        for ref in self._original_layers.values():
            original = ref["data"]
            if self._resample_parameters and callable(getattr(original, "reset_parameters", None)):
                original = deepcopy(original)  # keep the original values for later epochs
                original.reset_parameters()
            for i, name in ref["names"]:
                module, _ = self._parameters_to_prune[i]
                self._copy_param(module, original, name)

    def _apply_local_pruning(self, amount: Union[int, float]) -> None:
        for module, name in self._parameters_to_prune:
            self.pruning_fn(module, name=name, amount=amount)

    def _resolve_global_kwargs(self, amount: Union[int, float]) -> Dict[str, Any]:
        self._global_kwargs["amount"] = amount
        accepted = set(inspect.signature(self.pruning_fn).parameters) - {"self"}
        return {k: v for k, v in self._global_kwargs.items() if k in accepted}

    def _apply_global_pruning(self, amount: Union[int, float]) -> None:
        pytorch_prune.global_unstructured(
            self._parameters_to_prune, pruning_method=self.pruning_fn, **self._resolve_global_kwargs(amount)
        )

    @staticmethod
    def _get_pruned_stats(module: nn.Module, name: str) -> Tuple[int, int]:
        mask = getattr(module, f"{name}_mask", None)
        if mask is None:
            return 0, 1
        return int((mask == 0).sum().item()), mask.numel()

    def apply_pruning(self, amount: Union[int, float]) -> None:
        """Prunes ``parameters_to_prune`` by ``amount`` (globally or tensor by tensor)."""
        prev = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else []
        if self._use_global_unstructured:
            self._apply_global_pruning(amount)
        else:
            self._apply_local_pruning(amount)
        if self._verbose:
            curr = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune]
            self._log_sparsity_stats(prev, curr, amount=amount)

    def _log_sparsity_stats(self, prev: List[Tuple[int, int]], curr: List[Tuple[int, int]],
                            amount: Union[int, float] = 0) -> None:
        if not self._is_global_zero:
            return
        total = sum(n for _, n in curr)
        prev_zeros = sum(z for z, _ in prev)
        curr_zeros = sum(z for z, _ in curr)
        log.info(
            f"Applied `{self._pruning_method_name}`. Pruned:"
            f" {prev_zeros}/{total} ({prev_zeros / total:.2%}) ->"
            f" {curr_zeros}/{total} ({curr_zeros / total:.2%})"
        )
        if self._verbose == 2:
            for (module, name), (pz, pn), (cz, cn) in zip(self._parameters_to_prune, prev, curr):
                log.info(
                    f"Applied `{self._pruning_method_name}` to `{module!r}.{name}` with amount={amount}. Pruned:"
                    f" {pz} ({pz / pn:.2%}) -> {cz} ({cz / cn:.2%})"
                )

    def _run_pruning(self, current_epoch: int) -> None:
        prune = self._apply_pruning(current_epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(current_epoch) if callable(self.amount) else self.amount
        if not prune or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(current_epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", pl_module: LightningModule, stage: str) -> None:
        self._is_global_zero = is_global_zero(trainer)
        pairs = self.sanitize_parameters_to_prune(pl_module, self._parameters_to_prune,
                                                  parameter_names=self._parameter_names)
        self._parameters_to_prune = self.filter_parameters_to_prune(pairs)
        if self._use_lottery_ticket_hypothesis:
            # one copy per module, shared by its pruned tensors
            self._original_layers = {}
            for i, (module, name) in enumerate(self._parameters_to_prune):
                ref = self._original_layers.setdefault(id(module), {"data": deepcopy(module), "names": []})
                ref["names"].append((i, name))

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: LightningModule) -> None:
        if self._prune_on_train_epoch_end:
            log.debug("`ModelPruning.on_train_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer: "Trainer", pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._prune_on_train_epoch_end:
            log.debug("`ModelPruning.on_validation_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer: "Trainer", pl_module: LightningModule) -> None:
        if self._make_pruning_permanent:
            log.debug("`ModelPruning.on_train_end`. Pruning is made permanent for this checkpoint")
            self.make_pruning_permanent(pl_module)

    def _make_pruning_permanent_on_state_dict(self, pl_module: LightningModule) -> Dict[str, Any]:
        """The module's state with every ``<name>_orig``/``<name>_mask`` pair folded into ``<name>``, on the CPU."""
        state_dict = pl_module.state_dict()
        pruned = {k[: -len("_mask")] for k in state_dict if k.endswith("_mask")}
        for name in pruned:
            orig = state_dict.pop(name + "_orig")
            mask = state_dict.pop(name + "_mask")
            state_dict[name] = mask.to(dtype=orig.dtype) * orig
        return apply_to_collection(state_dict, Tensor, lambda t: t.cpu())

    def on_save_checkpoint(self, trainer: "Trainer", pl_module: LightningModule, checkpoint: Dict[str, Any]) -> None:
        if self._make_pruning_permanent:
            log.debug("`ModelPruning.on_save_checkpoint`. Pruning is made permanent for this checkpoint")
            checkpoint["state_dict"] = self._make_pruning_permanent_on_state_dict(pl_module)

    @staticmethod
    def sanitize_parameters_to_prune(
        pl_module: LightningModule, parameters_to_prune: _PARAM_LIST = (), parameter_names: Sequence[str] = ()
    ) -> _PARAM_LIST:
        """Checks ``parameters_to_prune`` against the model, or lists every ``parameter_names`` of its layers."""
        names = parameter_names or ModelPruning.PARAMETER_NAMES
        layers = [m for m in pl_module.modules() if not isinstance(m, _MODULE_CONTAINERS)]
        if not parameters_to_prune:
            return [(m, p) for p in names for m in layers if isinstance(getattr(m, p, None), nn.Parameter)]
        well_formed = (
            isinstance(parameters_to_prune, (list, tuple))
            and all(len(p) == 2 for p in parameters_to_prune)
            and all(isinstance(a, nn.Module) and isinstance(b, str) for a, b in parameters_to_prune)
        )
        if not well_formed:
            raise MisconfigurationException(
                "The provided `parameters_to_prune` should either be list of tuple"
                " with 2 elements: (nn.Module, parameter_name_to_prune) or None"
            )
        missing_modules, missing_parameters = [], []
        for module, name in parameters_to_prune:
            if module not in layers:
                missing_modules.append(module)
            elif not hasattr(module, name):
                missing_parameters.append(name)
        if missing_modules or missing_parameters:
            raise MisconfigurationException(
                "Some provided `parameters_to_prune` don't exist in the model."
                f" Found missing modules: {missing_modules} and missing parameters: {missing_parameters}"
            )
        return parameters_to_prune

    @staticmethod
    def _is_pruning_method(method: Any) -> bool:
        return inspect.isclass(method) and issubclass(method, pytorch_prune.BasePruningMethod)
