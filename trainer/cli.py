"""``LightningCLI``: Lightning 2.6's configurable command line tool, built on ``jsonargparse``.

The CLI turns the signatures of ``trainer.Trainer``, a ``LightningModule`` and a ``LightningDataModule`` into
``--trainer.*`` / ``--model.*`` / ``--data.*`` arguments (and YAML config keys), adds the ``fit`` / ``validate`` /
``test`` / ``predict`` subcommands, optional ``--optimizer`` / ``--lr_scheduler`` groups that replace the model's
``configure_optimizers``, and saves the resolved config as ``config.yaml`` in the run's log dir.

It builds ``trainer.Trainer`` (not Lightning's) and accepts ``trainer.LightningModule`` subclasses; a Lightning
script that uses ``lightning.pytorch.cli.LightningCLI`` runs after changing its import lines only.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Iterable
from functools import partial, update_wrapper
from types import MethodType
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type, Union

import torch
import yaml
from packaging.version import Version
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

import trainer as _package
from trainer.callbacks.callback import Callback
from trainer.datamodule import LightningDataModule
from trainer.exceptions import MisconfigurationException
from trainer.hooks import is_overridden
from trainer.module import LightningModule
from trainer.seed import seed_everything
from trainer.trainer import Trainer

_JSONARGPARSE_REQUIREMENT = "jsonargparse[signatures]>=4.27.7"


def _jsonargparse_signatures_missing() -> Optional[str]:
    """Why ``jsonargparse[signatures]`` cannot be used (``None`` when it can)."""
    try:
        version = importlib.metadata.version("jsonargparse")
    except importlib.metadata.PackageNotFoundError:
        return "jsonargparse is not installed"
    if Version(version) < Version("4.27.7"):
        return f"jsonargparse {version} is installed"
    # the `signatures` extra: docstrings for help messages, typeshed stubs for builtin signatures
    for module in ("docstring_parser", "typeshed_client"):
        if importlib.util.find_spec(module) is None:
            return f"{module} (from the `signatures` extra) is not installed"
    return None


_missing = _jsonargparse_signatures_missing()
if _missing is not None:
    raise ModuleNotFoundError(
        f"Requirement {_JSONARGPARSE_REQUIREMENT!r} not met ({_missing}): `trainer.cli` (LightningCLI) needs it."
        f" HINT: Try running `pip install -U '{_JSONARGPARSE_REQUIREMENT}'` (or `pip install 'trainer[cli]'`)."
    )

import docstring_parser  # noqa: E402
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, class_from_function  # noqa: E402

try:  # torch's modules have unresolvable import paths in their signatures (pytorch/pytorch#74483)
    from jsonargparse import register_unresolvable_import_paths

    register_unresolvable_import_paths(torch)
except ImportError:  # pragma: no cover - old jsonargparse
    pass
try:  # configs may be read from any fsspec filesystem, as Lightning allows
    from jsonargparse import set_parsing_settings

    set_parsing_settings(config_read_mode_fsspec_enabled=True)
except ImportError:  # pragma: no cover - jsonargparse < 4.35
    from jsonargparse import set_config_read_mode

    set_config_read_mode(fsspec_enabled=True)


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """``torch``'s ``ReduceLROnPlateau`` with the ``monitor`` metric it steps on (the CLI needs to know it)."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


# Only this module's ReduceLROnPlateau is accepted: torch's has no `monitor`.
LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
LRSchedulerType = Union[Type[LRScheduler], Type[ReduceLROnPlateau]]

# Type aliases for CLI users' signatures (Lightning's names).
ArgsType = Optional[Union[List[str], Dict[str, Any], Namespace]]
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]

_LIGHTNING_CLASSES = (Trainer, LightningModule, LightningDataModule, Callback)
_AUTOMATIC = "AUTOMATIC"


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


class LightningArgumentParser(ArgumentParser):
    """A ``jsonargparse.ArgumentParser`` that knows the Lightning classes, optimizers and LR schedulers."""

    def __init__(
        self,
        *args: Any,
        description: str = "Lightning Trainer command line tool",
        env_prefix: str = "PL",
        default_env: bool = False,
        **kwargs: Any,
    ) -> None:
        """Args as ``jsonargparse.ArgumentParser``; ``env_prefix``/``default_env`` enable ``PL_*`` variables."""
        super().__init__(*args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs)
        self.callback_keys: List[str] = []
        # nested key -> (class or tuple of classes, link target or "AUTOMATIC")
        self._optimizers: Dict[str, Tuple[Union[type, Tuple[type, ...]], str]] = {}
        self._lr_schedulers: Dict[str, Tuple[Union[type, Tuple[type, ...]], str]] = {}

    def add_lightning_class_args(
        self,
        lightning_class: Union[Callable[..., Any], type],
        nested_key: str,
        subclass_mode: bool = False,
        required: bool = True,
    ) -> List[str]:
        """Add the init arguments of a Trainer / LightningModule / LightningDataModule / Callback (class or
        function returning one) under ``nested_key``; returns the names added."""
        if callable(lightning_class) and not isinstance(lightning_class, type):
            lightning_class = class_from_function(lightning_class)
        if not (isinstance(lightning_class, type) and issubclass(lightning_class, _LIGHTNING_CLASSES)):
            raise MisconfigurationException(
                f"Cannot add arguments from: {lightning_class}. You should provide either a callable or a subclass of:"
                " Trainer, LightningModule, LightningDataModule, or Callback."
            )
        if issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return self.add_subclass_arguments(lightning_class, nested_key, fail_untyped=False, required=required)
        return self.add_class_arguments(
            lightning_class,
            nested_key,
            fail_untyped=False,
            instantiate=not issubclass(lightning_class, Trainer),  # the CLI builds the Trainer itself
            sub_configs=True,
        )

    def add_optimizer_args(
        self,
        optimizer_class: Union[Type[Optimizer], Tuple[Type[Optimizer], ...]] = (Optimizer,),
        nested_key: str = "optimizer",
        link_to: str = _AUTOMATIC,
    ) -> None:
        """Add an optimizer's init arguments (all but ``params``) under ``nested_key``; a tuple allows subclasses.
        ``link_to`` names a parser key to receive them, or ``"AUTOMATIC"`` for ``configure_optimizers``."""
        _check_classes("optimizer_class", optimizer_class, (Optimizer,))
        self._add_uninstantiated_group(optimizer_class, nested_key, skip={"params"})
        self._optimizers[nested_key] = (optimizer_class, link_to)

    def add_lr_scheduler_args(
        self,
        lr_scheduler_class: Union[LRSchedulerType, Tuple[LRSchedulerType, ...]] = LRSchedulerTypeTuple,
        nested_key: str = "lr_scheduler",
        link_to: str = _AUTOMATIC,
    ) -> None:
        """Add an LR scheduler's init arguments (all but ``optimizer``) under ``nested_key``; a tuple allows
        subclasses. ``link_to`` as in :meth:`add_optimizer_args`."""
        _check_classes("lr_scheduler_class", lr_scheduler_class, LRSchedulerTypeTuple)
        self._add_uninstantiated_group(lr_scheduler_class, nested_key, skip={"optimizer"})
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)

    def _add_uninstantiated_group(self, class_or_classes: Any, nested_key: str, skip: Set[str]) -> None:
        kwargs: Dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": skip}
        if isinstance(class_or_classes, tuple):
            self.add_subclass_arguments(class_or_classes, nested_key, **kwargs)
        else:
            self.add_class_arguments(class_or_classes, nested_key, sub_configs=True, **kwargs)


def _check_classes(argument: str, value: Any, allowed: Tuple[type, ...]) -> None:
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, allowed)):
            names = " or ".join(f"`{a.__module__}.{a.__qualname__}`" for a in allowed)
            raise TypeError(f"`{argument}` must be a subclass of {names} (or a tuple of them), got {cls!r}.")


class SaveConfigCallback(Callback):
    """Writes the CLI's parsed config to ``trainer.log_dir/config_filename`` when the run sets up.

    Args:
        parser: The parser that parsed ``config``.
        config: The parsed configuration to save.
        config_filename: Name of the file written in the log dir.
        overwrite: Overwrite an existing file instead of raising.
        multifile: Keep the structure of several input config files.
        save_to_log_dir: Write to the log dir; ``False`` only with an overridden :meth:`save_config`.

    Raises:
        RuntimeError: the file already exists and ``overwrite=False`` (to protect a previous run's results).
    """

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Namespace,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and type(self).save_config is SaveConfigCallback.save_config:
            raise ValueError(
                "`save_to_log_dir=False` only makes sense when subclassing SaveConfigCallback to implement "
                "`save_config` and it is desired to disable the standard behavior of saving to log_dir."
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            self._save_to_log_dir(trainer)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        # every rank agrees, so later `setup` calls (fit then test) skip on all of them
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _save_to_log_dir(self, trainer: Trainer) -> None:
        log_dir = trainer.log_dir
        if log_dir is None:
            raise RuntimeError(f"{type(self).__name__} needs `trainer.log_dir` to save the config, it is None.")
        config_path = os.path.join(log_dir, self.config_filename)
        if not self.overwrite:
            exists = os.path.isfile(config_path) if trainer.is_global_zero else False
            if trainer.strategy.broadcast(exists):
                raise RuntimeError(
                    f"{type(self).__name__} expected {config_path} to NOT exist. Aborting to avoid overwriting"
                    " results of a previous run. You can delete the previous config file,"
                    " set `LightningCLI(save_config_callback=None)` to disable config saving,"
                    ' or set `LightningCLI(save_config_kwargs={"overwrite": True})` to overwrite the config file.'
                )
        if trainer.is_global_zero:
            # nothing has been logged yet, so the logger may not have created the folder
            os.makedirs(log_dir, exist_ok=True)
            self.parser.save(
                self.config, config_path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile
            )

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Override to save the config somewhere else as well (called on rank zero only, so no collectives)."""


class LightningCLI:
    """A configurable command line tool that builds and runs ``trainer.Trainer`` (Lightning's ``LightningCLI``).

    Args:
        model_class: A ``LightningModule`` class, or a function returning one; ``None`` accepts any subclass via
            ``--model=ClassName``.
        datamodule_class: A ``LightningDataModule`` class or function; ``None`` makes ``--data`` optional and
            accepts any subclass.
        save_config_callback: The callback class that saves the config (``None``: no config is saved).
        save_config_kwargs: Keyword arguments for ``save_config_callback``.
        trainer_class: ``trainer.Trainer``, a subclass, or a function returning one.
        trainer_defaults: Overrides of the Trainer's defaults; its ``callbacks`` are always added, not configurable.
        seed_everything_default: The ``--seed_everything`` default: an int, ``True`` (a random seed) or ``False``
            (no seeding).
        parser_kwargs: Keyword arguments of the parsers; keys named after a subcommand apply to that one only.
        parser_class: The parser class (a ``LightningArgumentParser`` subclass).
        subclass_mode_model: Accept any subclass of ``model_class`` (``--model.class_path``).
        subclass_mode_data: Accept any subclass of ``datamodule_class``.
        args: Arguments to parse instead of ``sys.argv``: a command-line style list, a dict or a ``Namespace``.
        run: Add the subcommands and run the chosen one; ``False`` only instantiates the classes.
        auto_configure_optimizers: Add ``--optimizer`` / ``--lr_scheduler`` unless ``add_arguments_to_parser``
            added optimizer or scheduler groups.
        load_from_checkpoint_support: ``save_hyperparameters`` in the model and datamodule the CLI builds saves
            their parsed config (nested classes as ``class_path``/``init_args``) and an instantiator, so that
            ``Model.load_from_checkpoint(path)`` rebuilds them from it as the CLI did.
    """

    def __init__(
        self,
        model_class: Optional[Union[Type[LightningModule], Callable[..., LightningModule]]] = None,
        datamodule_class: Optional[Union[Type[LightningDataModule], Callable[..., LightningDataModule]]] = None,
        save_config_callback: Optional[Type[SaveConfigCallback]] = SaveConfigCallback,
        save_config_kwargs: Optional[Dict[str, Any]] = None,
        trainer_class: Union[Type[Trainer], Callable[..., Trainer]] = Trainer,
        trainer_defaults: Optional[Dict[str, Any]] = None,
        seed_everything_default: Union[bool, int] = True,
        parser_kwargs: Optional[Union[Dict[str, Any], Dict[str, Dict[str, Any]]]] = None,
        parser_class: Type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        self.load_from_checkpoint_support = load_from_checkpoint_support

        self.model_class = model_class
        self._model_class = model_class or LightningModule  # what the parser is given
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._datamodule_class = datamodule_class or LightningDataModule
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data

        main_kwargs, subcommand_kwargs = self._setup_parser_kwargs(self.parser_kwargs)
        self.setup_parser(run, main_kwargs, subcommand_kwargs)
        self.parse_arguments(self.parser, args)
        self._parse_ckpt_path()

        self.subcommand = self.config["subcommand"] if run else None
        self._set_seed()

        if load_from_checkpoint_support:
            self._add_instantiators()
        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()

        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------ parser
    def _setup_parser_kwargs(self, parser_kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        names = self.subcommands().keys()
        main = {k: v for k, v in parser_kwargs.items() if k not in names}
        per_subcommand = {k: v for k, v in parser_kwargs.items() if k in names}
        return main, per_subcommand

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Create a parser with the ``-c/--config`` option."""
        kwargs.setdefault("dump_header", [f"trainer=={_package.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format."
        )
        return parser

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: Dict[str, Any], subparser_kwargs: Dict[str, Any]
    ) -> None:
        """Create ``self.parser``: one subparser per subcommand when ``add_subcommands``, else the arguments."""
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_method_arguments: Dict[str, List[str]] = {}
            self._add_subcommands(self.parser, **subparser_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--seed_everything``."""
        parser.add_argument(
            "--seed_everything",
            type=Union[bool, int],
            default=self.seed_everything_default,
            help=(
                "Set to an int to run seed_everything with this value before classes instantiation."
                "Set to True to use a random seed."
            ),
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the ``trainer``, ``model`` and ``data`` groups."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        defaults = {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        parser.set_defaults(defaults)
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        # without a datamodule class the module's own dataloaders may be used: `--data` is optional
        parser.add_lightning_class_args(
            self._datamodule_class,
            "data",
            subclass_mode=self.subclass_mode_data,
            required=self.datamodule_class is not None,
        )

    def _add_arguments(self, parser: LightningArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:  # the user's `add_arguments_to_parser` did not add one
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        self.link_optimizers_and_lr_schedulers(parser)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Override to add arguments or ``parser.link_arguments(...)``."""

    @staticmethod
    def subcommands() -> Dict[str, Set[str]]:
        """The subcommands and the method arguments the CLI fills itself (not configurable)."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: Dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        trainer_class = (
            self.trainer_class if isinstance(self.trainer_class, type) else class_from_function(self.trainer_class)
        )
        for name in self.subcommands():
            description = _get_short_description(getattr(trainer_class, name))
            sub_kwargs = dict(kwargs.get(name, {}))
            sub_kwargs.setdefault("description", description)
            subparser = self._prepare_subcommand_parser(trainer_class, name, **sub_kwargs)
            self._subcommand_parsers[name] = subparser
            subcommands.add_subcommand(name, subparser, help=description)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        skip: Set[Union[str, int]] = set(self.subcommands()[subcommand])
        # remember which method arguments were added, to pass exactly those to the method
        self._subcommand_method_arguments[subcommand] = parser.add_method_arguments(klass, subcommand, skip=skip)
        return parser

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: LightningArgumentParser) -> None:
        """Link every optimizer / scheduler group registered with a ``link_to`` target to that target."""
        for key, (class_type, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == _AUTOMATIC:
                continue
            if isinstance(class_type, tuple):
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=_add_class_path_generator(class_type))

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (or ``sys.argv``) into ``self.config``."""
        if args is not None and len(sys.argv) > 1:
            _warn(
                "LightningCLI's args parameter is intended to run from within Python like if it were from the command "
                "line. To prevent mistakes it is not recommended to provide both args and command line arguments, got: "
                f"sys.argv[1:]={sys.argv[1:]}, args={args}."
            )
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path`` of an existing file, the model's hyperparameters saved in it update the config (so
        the model is rebuilt as it was trained)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not os.path.isfile(ckpt_path):
            return
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        hparams = dict(checkpoint.get(LightningModule.CHECKPOINT_HYPER_PARAMS_KEY) or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:  # saved by a subclass-mode CLI
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    # ------------------------------------------------------------------ instantiation
    def _dump_config(self) -> None:
        """``self.config_dump``: the subcommand's config as plain YAML data (made once)."""
        if hasattr(self, "config_dump"):
            return
        self.config_dump = yaml.safe_load(
            self.parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml")
        )
        if "subcommand" in self.config:
            self.config_dump = self.config_dump[self.config.subcommand]

    def _add_instantiators(self) -> None:
        self.parser.add_instantiator(_InstantiatorFn(cli=self, key="model"), _get_module_type(self._model_class),
                                     subclasses=self.subclass_mode_model)
        self.parser.add_instantiator(_InstantiatorFn(cli=self, key="data"), _get_module_type(self._datamodule_class),
                                     subclasses=self.subclass_mode_data)

    def before_instantiate_classes(self) -> None:
        """Override to run code before the classes are instantiated."""

    def instantiate_classes(self) -> None:
        """Instantiate the datamodule, model and Trainer from ``self.config``."""
        self.config_init = _instantiate(self.parser, self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Override to run code after the classes are instantiated."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer from the config (``kwargs`` override it), with the configured callbacks."""
        extra_callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, extra_callbacks)

    def _instantiate_trainer(self, config: Dict[str, Any], callbacks: List[Callback]) -> Trainer:
        if "callbacks" not in config:
            _warn(
                f"The `{self.trainer_class.__qualname__}` class does not expose the `callbacks` argument so they will"
                " not be included."
            )
            return self.trainer_class(**config)
        config["callbacks"] = _as_list(config["callbacks"]) + callbacks
        if "callbacks" in self.trainer_defaults:
            config["callbacks"] += _as_list(self.trainer_defaults["callbacks"])
        if self.save_config_callback and not config.get("fast_dev_run", False):
            config["callbacks"].append(
                self.save_config_callback(
                    self._parser(self.subcommand),
                    self.config.get(str(self.subcommand), self.config),
                    **self.save_config_kwargs,
                )
            )
        return self.trainer_class(**config)

    def _parser(self, subcommand: Optional[str]) -> LightningArgumentParser:
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    # ------------------------------------------------------------------ optimizers
    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Optimizer, lr_scheduler: Optional[LRSchedulerTypeUnion] = None
    ) -> Any:
        """What the model's ``configure_optimizers`` returns when the CLI configures the optimizer (override to
        customize)."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor}}
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: Optional[str]) -> None:
        """Replace the model's ``configure_optimizers`` when one optimizer (and at most one scheduler) group is
        ``AUTOMATIC`` and the user gave an optimizer."""
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = _automatic_keys(parser._optimizers, (Optimizer,))
        lr_schedulers = _automatic_keys(parser._lr_schedulers, LRSchedulerTypeTuple)
        if not optimizers:
            return
        if len(optimizers) > 1 or len(lr_schedulers) > 1:
            raise MisconfigurationException(
                f"`{self.__class__.__name__}.add_configure_optimizers_method_to_model` expects at most one optimizer "
                f"and one lr_scheduler to be 'AUTOMATIC', but found {optimizers + lr_schedulers}. In this case the "
                "user is expected to link the argument groups and implement `configure_optimizers`, see "
                "https://lightning.ai/docs/pytorch/stable/common/lightning_cli.html"
                "#optimizers-and-learning-rate-schedulers"
            )
        optimizer_init = self._class_init(parser._optimizers, optimizers[0])
        if not optimizer_init:  # the groups exist, but the user configured no optimizer
            return
        lr_scheduler_init = self._class_init(parser._lr_schedulers, lr_schedulers[0]) if lr_schedulers else None

        if is_overridden("configure_optimizers", self.model, LightningModule):
            _warn(
                f"`{self.model.__class__.__name__}.configure_optimizers` will be overridden by "
                f"`{self.__class__.__name__}.configure_optimizers`."
            )
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        lr_scheduler = instantiate_class(optimizer, lr_scheduler_init) if lr_scheduler_init else None
        fn = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=lr_scheduler)
        update_wrapper(fn, self.configure_optimizers)  # keeps `is_overridden` working
        self.model.configure_optimizers = MethodType(fn, self.model)

    def _class_init(self, register: Dict[str, Tuple[Any, str]], key: str) -> Any:
        """The ``{"class_path", "init_args"}`` of group ``key`` (a single-class group gets its class path added)."""
        class_type = register[key][0]
        init = self._get(self.config_init, key)
        if not isinstance(class_type, tuple):
            init = _global_add_class_path(class_type, init)
        return init

    # ------------------------------------------------------------------ running
    def _get(self, config: Namespace, key: str, default: Optional[Any] = None) -> Any:
        """``config[key]``, looked up inside the subcommand's namespace when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)

    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        fn = getattr(self, subcommand, getattr(self.trainer, subcommand))
        fn(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> Dict[str, Any]:
        added = self._subcommand_method_arguments[subcommand]
        kwargs = {k: v for k, v in self.config_init[subcommand].items() if k in added}
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        # True: a random seed is chosen (and recorded in the config, so the saved config reproduces the run)
        seed = seed_everything(workers=True) if seed is True else seed_everything(seed, workers=True)
        target = self.config[self.subcommand] if self.subcommand else self.config
        target["seed_everything"] = seed


# ---------------------------------------------------------------------- helpers
def _get_module_type(value: Union[Callable, type]) -> type:
    """The class a ``model_class``/``datamodule_class`` argument builds (a factory function: its return annotation)."""
    if callable(value) and not isinstance(value, type):
        return inspect.signature(value).return_annotation
    return value


def _set_dict_nested(data: Dict[str, Any], key: str, value: Any) -> None:
    keys = key.split(".")
    for k in keys[:-1]:
        data = data[k]
    data[keys[-1]] = value


class _InstantiatorFn:
    """Builds the model (``key="model"``) or datamodule with the CLI's parsed config as its hyper-parameters."""

    def __init__(self, cli: "LightningCLI", key: str) -> None:
        self.cli = cli
        self.key = key

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: Dict[str, Any], **kwargs: Any) -> Any:
        from trainer.module import _given_hyperparameters_context

        self.cli._dump_config()
        hparams = self.cli.config_dump.get(self.key, {})
        if "class_path" in hparams:  # subclass mode: the arguments at the top, the class under `_class_path`
            hparams = {"_class_path": hparams["class_path"], **hparams.get("init_args", {}),
                       **hparams.get("dict_kwargs", {})}
        for key, value in applied_instantiation_links.items():  # linked arguments take their linked values
            if not key.startswith(f"{self.key}."):
                continue
            key = key[len(f"{self.key}."):]
            if key.startswith("init_args."):
                key = key[len("init_args."):]
            _set_dict_nested(hparams, key, value)
        with _given_hyperparameters_context(hparams=hparams, instantiator="trainer.cli.instantiate_module"):
            return class_type(*args, **kwargs)


def instantiate_module(class_type: type, config: Dict[str, Any]) -> Any:
    """``load_from_checkpoint``'s instantiator for a checkpoint written under LightningCLI: parses the saved
    config against ``class_type``'s signature (nested classes included) and builds it."""
    parser = ArgumentParser(exit_on_error=False)
    if "_class_path" in config:
        parser.add_subclass_arguments(class_type, "module", fail_untyped=False)
        config = {"class_path": config["_class_path"],
                  "dict_kwargs": {k: v for k, v in config.items() if k != "_class_path"}}
    else:
        parser.add_class_arguments(class_type, "module", fail_untyped=False)
    cfg = parser.parse_object({"module": config})
    return _instantiate(parser, cfg).module


def _instantiate(parser: ArgumentParser, config: Namespace) -> Namespace:
    # jsonargparse 4.49 renamed `instantiate_classes` to `instantiate`
    method = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return method(config)


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _automatic_keys(register: Dict[str, Tuple[Any, str]], base: Tuple[type, ...]) -> List[str]:
    keys = []
    for key, (classes, link_to) in register.items():
        classes = classes if isinstance(classes, tuple) else (classes,)
        if link_to == _AUTOMATIC and any(issubclass(c, base) for c in classes):
            keys.append(key)
    return keys


def _class_path_from_class(class_type: type) -> str:
    return f"{class_type.__module__}.{class_type.__name__}"


def _global_add_class_path(
    class_type: type, init_args: Optional[Union[Namespace, Dict[str, Any]]] = None
) -> Dict[str, Any]:
    if isinstance(init_args, Namespace):
        init_args = init_args.as_dict()
    return {"class_path": _class_path_from_class(class_type), "init_args": init_args or {}}


def _add_class_path_generator(class_type: type) -> Callable[[Namespace], Dict[str, Any]]:
    def add_class_path(init_args: Namespace) -> Dict[str, Any]:
        return _global_add_class_path(class_type, init_args)

    return add_class_path


def instantiate_class(args: Union[Any, Tuple[Any, ...]], init: Dict[str, Any]) -> Any:
    """Build ``init["class_path"]`` with positional ``args`` and keyword ``init["init_args"]``."""
    if not isinstance(init, (dict, Namespace)) or "class_path" not in init:
        raise ValueError(f"`init` must be a dict with a 'class_path' key (and optional 'init_args'), got {init!r}.")
    module_name, _, class_name = init["class_path"].rpartition(".")
    if not module_name:
        raise ValueError(f"`class_path` must be a dotted import path like 'torch.optim.SGD', got {init['class_path']!r}.")
    cls = getattr(importlib.import_module(module_name), class_name)
    positional = args if isinstance(args, tuple) else (args,)
    return cls(*positional, **init.get("init_args", {}))


def _get_short_description(component: object) -> Optional[str]:
    if component.__doc__ is None:
        return None
    try:
        return docstring_parser.parse(component.__doc__).short_description
    except (ValueError, docstring_parser.ParseError) as ex:
        _warn(f"Failed parsing docstring for {component}: {ex}")
        return None


__all__ = [
    "ArgsType",
    "LRSchedulerCallable",
    "LRSchedulerTypeTuple",
    "LRSchedulerTypeUnion",
    "LightningArgumentParser",
    "LightningCLI",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "instantiate_class",
]
