"""The Trainer's constructor arguments, checked and normalised once, before the Trainer does anything.

:meth:`TrainerArguments.check` takes ``Trainer.__init__``'s arguments as given and either raises for the
first bad one (``MisconfigurationException`` naming the argument, the value and what is allowed; where
Lightning 2.6.6 rejects the same input, Lightning's exception class and wording first, ours after) or
returns the arguments with Lightning's defaults filled in and the parsed forms of the ones that need
parsing (durations, batch limits, precision, plugins, the compile setting). The Trainer wires its parts
from the result; nothing here has an effect beyond Lightning's info lines (``announce_batch_flags``).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, Optional, Union

from trainer.exceptions import MisconfigurationException
from trainer.precision import normalize_precision
from trainer.utilities.rank_zero import rank_zero_info

_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
_STRICT_FLAGS = ("inference_mode", "use_distributed_sampler", "detect_anomaly", "barebones", "sync_batchnorm")
_OPTIONAL_FLAGS = ("enable_checkpointing", "enable_progress_bar", "enable_model_summary", "benchmark")


@dataclass(frozen=True)
class TrainerArguments:
    """``Trainer.__init__``'s arguments after :meth:`check`: every one valid, defaults resolved as
    Lightning resolves them (``barebones`` included), durations and limits parsed."""

    accelerator: Any
    strategy: Any
    devices: Any
    num_nodes: int
    precision: Any  # as given (the precision plugin sees it); the resolved flag is ``precision_flag``
    logger: Any
    callbacks: Any
    fast_dev_run: Union[int, bool]
    max_epochs: Optional[int]
    min_epochs: Optional[int]
    max_steps: int
    min_steps: Optional[int]
    max_time: Optional[timedelta]  # parsed
    limit_train_batches: Optional[Union[int, float]]  # as given (Lightning's info lines name them so)
    limit_val_batches: Optional[Union[int, float]]
    limit_test_batches: Optional[Union[int, float]]
    limit_predict_batches: Optional[Union[int, float]]
    overfit_batches: Union[int, float]
    val_check_interval: Any
    check_val_every_n_epoch: Optional[int]
    num_sanity_val_steps: Optional[int]
    log_every_n_steps: Optional[int]
    enable_checkpointing: Optional[bool]
    enable_progress_bar: Optional[bool]
    enable_model_summary: Optional[bool]
    accumulate_grad_batches: int
    gradient_clip_val: Optional[Union[int, float]]
    gradient_clip_algorithm: Optional[str]  # lower case
    deterministic: Optional[Union[bool, str]]
    benchmark: Optional[bool]
    inference_mode: bool
    use_distributed_sampler: bool
    profiler: Any
    detect_anomaly: bool
    barebones: bool
    plugins: Any
    sync_batchnorm: bool
    reload_dataloaders_every_n_epochs: int
    default_root_dir: Any
    enable_autolog_hparams: bool
    model_registry: Optional[str]
    compile: Any
    # parsed and resolved
    limits: Dict[str, Union[int, float]]  # limit_*_batches: None -> 1.0, a float fraction or an int count
    overfit: Union[int, float]
    val_check_seconds: Optional[float]  # a time-based val_check_interval, in seconds
    precision_flag: str  # "32-true", "bf16-mixed", ... (a precision plugin's when one is passed)
    compile_config: Any  # trainer.compile.CompileConfig
    plugin_flags: Any  # trainer.plugins._resolve: the precision / checkpoint IO / environment plugins passed

    @classmethod
    def check(cls, **given: Any) -> "TrainerArguments":
        """All checks, in Lightning's order where it has one, before anything else happens."""
        if given["barebones"] is True:  # Lightning checks these first, before any other argument
            _check_barebones(**{name: given[name] for name, _ in _BAREBONES_REASONS})
        _check_counts(given)
        _check_val_schedule(given["check_val_every_n_epoch"], given["val_check_interval"],
                            given["reload_dataloaders_every_n_epochs"])
        _check_fast_dev_run(given["fast_dev_run"])
        _check_clip_val(given["gradient_clip_val"])
        algorithm = _check_clip_algorithm(given["gradient_clip_algorithm"])
        if given["deterministic"] not in (None, True, False, "warn"):
            raise _bad("deterministic", given["deterministic"], "allowed values are True, False, 'warn' and None")
        seconds = _check_val_check_interval(given["val_check_interval"])
        _check_flags(given)
        max_time = _parse_max_time(given["max_time"])
        limits = {name: _batch_limit(name, given[name]) for name in _LIMITS}
        overfit = _batch_limit("overfit_batches", given["overfit_batches"])
        precision_flag = normalize_precision("32-true" if given["precision"] is None else given["precision"])
        from trainer.compile import resolve_compile
        from trainer.plugins._resolve import resolve_plugins

        compile_config = resolve_compile(given["compile"])
        plugin_flags = resolve_plugins(given["plugins"], given["precision"], given["sync_batchnorm"])
        if plugin_flags.precision is not None:
            precision_flag = normalize_precision(plugin_flags.precision.precision)
        resolved = dict(given, gradient_clip_algorithm=algorithm, max_time=max_time)
        if given["barebones"]:  # the conflicting arguments were rejected above
            resolved.update(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, log_every_n_steps=0, num_sanity_val_steps=0)
        return cls(**resolved, limits=limits, overfit=overfit, val_check_seconds=seconds,
                   precision_flag=precision_flag, compile_config=compile_config, plugin_flags=plugin_flags)

    def announce_batch_flags(self) -> None:
        """Lightning's info lines for batch flags given as ``1`` / ``1.0``."""
        _announce_batch_flags(
            self.fast_dev_run, self.overfit_batches, **{name: getattr(self, name) for name in _LIMITS},
            val_check_interval=self.val_check_interval,
        )


def _check_counts(given: Dict[str, Any]) -> None:
    _check_max_steps(given["max_steps"])
    _check_int("min_steps", given["min_steps"], 0, allow_none=True)
    _check_max_epochs(given["max_epochs"])
    _check_int("min_epochs", given["min_epochs"], 0, allow_none=True)
    _check_int("num_nodes", given["num_nodes"], 1)
    _check_int("accumulate_grad_batches", given["accumulate_grad_batches"], 1)
    _check_int("num_sanity_val_steps", given["num_sanity_val_steps"], -1, allow_none=True, extra=" (-1 runs all)")
    _check_int("log_every_n_steps", given["log_every_n_steps"], 0, allow_none=True)


def _check_fast_dev_run(fast_dev_run: Any) -> None:
    if not isinstance(fast_dev_run, bool) and (not isinstance(fast_dev_run, int) or fast_dev_run < 0):
        # Lightning's wording; it only rejects negative ints (a float passes there and is truncated)
        raise MisconfigurationException(
            f"fast_dev_run={fast_dev_run!r} is not a valid configuration. It should be >= 0"
            + ("." if isinstance(fast_dev_run, int) else " (a bool or an int number of batches).")
        )


def _check_clip_val(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)):
        # Lightning's class and wording: a TypeError, not a MisconfigurationException
        raise TypeError(f"`gradient_clip_val` should be an int or a float. Got {value}."
                        + _shown("gradient_clip_val", value))
    if isinstance(value, bool) or value < 0 or math.isnan(value):
        raise _bad("gradient_clip_val", value, "expected a number >= 0 or None")


def _check_clip_algorithm(value: Any) -> Optional[str]:
    """The algorithm in lower case (Lightning accepts any case)."""
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ("value", "norm"):
        raise MisconfigurationException(
            f"`gradient_clip_algorithm` {value} is invalid. Allowed algorithms:"
            f" ['value', 'norm']. Got `Trainer(gradient_clip_algorithm={value!r})`."
        )
    return value.lower()


def _check_val_check_interval(value: Any) -> Optional[float]:
    """Seconds of a time-based interval; None for a batch count or an epoch fraction (checked here)."""
    if isinstance(value, (str, dict, timedelta)):
        return _parse_time_interval_seconds(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad("val_check_interval", value,
                   "expected a float in (0.0, 1.0] (a fraction of the epoch), an int > 0 (batches) or a"
                   " duration (str 'DD:HH:MM:SS', datetime.timedelta, or a dict of timedelta kwargs)")
    if value <= 0 or (isinstance(value, float) and value > 1.0 and value % 1.0 != 0):
        raise _bad("val_check_interval", value,
                   f"you have passed invalid value {value} for val_check_interval, it has to be in [0.0, 1.0] or an"
                   " int (Lightning's wording): expected a float in (0.0, 1.0] (a fraction of the epoch) or an int > 0"
                   " (batches)")
    return None


def _check_flags(given: Dict[str, Any]) -> None:
    for name in _STRICT_FLAGS:
        if not isinstance(given[name], bool):
            raise _bad(name, given[name], "expected True or False")
    for name in _OPTIONAL_FLAGS:
        if given[name] is not None and not isinstance(given[name], bool):
            raise _bad(name, given[name], "expected True, False or None")


def _bad(name: str, value: Any, allowed: str) -> MisconfigurationException:
    return MisconfigurationException(f"`Trainer({name}={value!r})` is invalid: {allowed}.")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False, extra: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(name, value, f"expected an int >= {minimum}{extra}")


def _batch_limit(name: str, value: Any) -> Union[int, float]:
    """Lightning's ``_determine_batch_limits``: None -> 1.0; a float in [0, 1] or an int >= 0."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, value, "expected a float in [0.0, 1.0] (a fraction) or an int >= 0 (a count)")
    if 0 <= value <= 1:
        return value
    if value > 1 and value % 1.0 == 0:
        return int(value)
    raise MisconfigurationException(
        f"`Trainer({name}={value!r})` is invalid: you have passed invalid value {value} for {name}, it has to be in"
        " [0.0, 1.0] or an int."
    )


# the flags where Lightning tells what a value of exactly 1 / 1.0 means: (int 1, float 1.0)
_ONE_MEANS = {
    "limit_train_batches": ("1 batch per epoch will be used.", "100% of the batches per epoch will be used."),
    "val_check_interval": ("validation will run after every batch.",
                           "validation will run at the end of the training epoch."),
}
_ONE_MEANS_DEFAULT = ("1 batch will be used.", "100% of the batches will be used.")


def _one_batch_message(name: str, value: Any) -> Optional[str]:
    """Lightning's info line for a batch flag given as ``1`` (a count) or ``1.0`` (a fraction), which users mix
    up; None for any other value."""
    as_count, as_fraction = _ONE_MEANS.get(name, _ONE_MEANS_DEFAULT)
    if isinstance(value, int) and value == 1:
        return f"`Trainer({name}=1)` was configured so {as_count}"
    if isinstance(value, float) and value == 1.0:
        return f"`Trainer({name}=1.0)` was configured so {as_fraction}."  # Lightning's double full stop, kept
    return None


def _announce_batch_flags(fast_dev_run: Any, overfit_batches: Any, **flags: Any) -> None:
    """The info lines of Lightning's ``_init_debugging_flags``, for the flags it reads, in its order:
    ``overfit_batches`` always; under ``fast_dev_run`` nothing else (it overrides them); ``limit_train_batches``
    and ``limit_val_batches`` only without ``overfit_batches``."""
    names = ["overfit_batches"]
    if not fast_dev_run:
        if not overfit_batches > 0:
            names += ["limit_train_batches", "limit_val_batches"]
        names += ["limit_test_batches", "limit_predict_batches", "val_check_interval"]
    values = dict(flags, overfit_batches=overfit_batches)
    for name in names:
        message = _one_batch_message(name, values[name])
        if message is not None:
            rank_zero_info(message)


def _shown(name: str, value: Any) -> str:
    """After a Lightning message that shows ``str(value)``: the exact value, where its str hides what it is
    (``'1'`` prints as ``1``)."""
    return "" if repr(value) == str(value) else f" (`Trainer({name}={value!r})`)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_max_epochs(value: Any) -> None:
    """Lightning's FitLoop check and wording; a non-int (which Lightning lets through) fails here too."""
    if value is not None and (not _is_int(value) or value < -1):
        raise MisconfigurationException(
            f"`max_epochs` must be a non-negative integer or -1. You passed in {value!r}."
            + ("" if _is_int(value) else " It takes an int (-1: no limit) or None.")
        )


def _check_max_steps(value: Any) -> None:
    """Lightning's _TrainingEpochLoop check and wording (Lightning fails on None with a bare TypeError)."""
    if not _is_int(value) or value < -1:
        raise MisconfigurationException(
            f"`max_steps` must be a non-negative integer or -1 (infinite steps). You passed in {value!r}."
        )


def _parse_time_interval_seconds(value: Union[str, timedelta, Dict[str, Any]]) -> float:
    """Seconds of a time-based ``val_check_interval`` (Lightning's formats and errors): a ``timedelta``, a dict of
    ``timedelta`` keyword arguments, or a string ``'DD:HH:MM:SS'`` of integers."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, dict):
        try:
            seconds = timedelta(**value).total_seconds()
        except TypeError as e:  # Lightning lets timedelta's TypeError through; ours then names the argument
            raise TypeError(f"{e}. Got `Trainer(val_check_interval={value!r})`: a dict holds datetime.timedelta's"
                            " keyword arguments (days, hours, minutes, seconds, ...).") from None
    else:
        parts = value.split(":")
        if len(parts) != 4:
            raise MisconfigurationException(
                f"Invalid time format for `val_check_interval`: {value!r}. Expected 'DD:HH:MM:SS'.")
        try:
            days, hours, minutes, secs = (int(p) for p in parts)
        except ValueError:
            raise MisconfigurationException(
                f"Non-integer component in `val_check_interval` string: {value!r}. Use 'DD:HH:MM:SS'.") from None
        seconds = timedelta(days=days, hours=hours, minutes=minutes, seconds=secs).total_seconds()
    return seconds


def _check_val_schedule(check_val_every_n_epoch: Any, val_check_interval: Any, reload_every_n: Any) -> None:
    """Lightning's _DataConnector.on_trainer_init checks, in its order and wording."""
    if check_val_every_n_epoch is not None:
        if not _is_int(check_val_every_n_epoch):
            raise MisconfigurationException(
                f"`check_val_every_n_epoch` should be an integer, found {check_val_every_n_epoch!r}."
            )
        if check_val_every_n_epoch < 1:  # Lightning accepts it and then never validates (or divides by zero)
            raise _bad("check_val_every_n_epoch", check_val_every_n_epoch, "expected an int >= 1 or None")
    elif isinstance(val_check_interval, float):
        raise MisconfigurationException(
            "`val_check_interval` should be an integer or a time-based duration (str 'DD:HH:MM:SS', "
            "datetime.timedelta, or dict kwargs for timedelta) when `check_val_every_n_epoch=None`."
            f" Got `Trainer(val_check_interval={val_check_interval!r}, check_val_every_n_epoch=None)`:"
            " with no epoch schedule a fraction of an epoch has no meaning; pass an int number of batches or a"
            " duration."
        )
    if not _is_int(reload_every_n) or reload_every_n < 0:
        raise MisconfigurationException(
            f"`reload_dataloaders_every_n_epochs` should be an int >= 0, got {reload_every_n}."
            + _shown("reload_dataloaders_every_n_epochs", reload_every_n)
        )


_BAREBONES_REASONS = (  # (argument, what it enables) in Lightning's order of checks
    ("enable_checkpointing", "Checkpointing can impact raw speed"),
    ("logger", "Logging can impact raw speed"),
    ("enable_progress_bar", "The progress bar can impact raw speed"),
    ("log_every_n_steps", "Logging can impact raw speed"),
    ("enable_model_summary", "Model summary can impact raw speed"),
    ("num_sanity_val_steps", "Sanity checking can impact raw speed"),
    ("fast_dev_run", "Development run is not meant for raw speed evaluation"),
    ("detect_anomaly", "Anomaly detection can impact raw speed"),
    ("profiler", "Profiling can impact raw speed"),
)

_BAREBONES_INFO = (
    "You are running in `Trainer(barebones=True)` mode. All features that may impact raw speed have been"
    " disabled to facilitate analyzing the Trainer overhead. Specifically, the following features are"
    " deactivated:" + os.linesep + os.linesep.join((
        " - Checkpointing: `Trainer(enable_checkpointing=True)`",
        " - Progress bar: `Trainer(enable_progress_bar=True)`",
        " - Model summary: `Trainer(enable_model_summary=True)`",
        " - Logging: `Trainer(logger=True)`, `Trainer(log_every_n_steps>0)`,"
        " `LightningModule.log(...)`, `LightningModule.log_dict(...)`",
        " - Sanity checking: `Trainer(num_sanity_val_steps>0)`",
        " - Development run: `Trainer(fast_dev_run=True)`",
        " - Anomaly detection: `Trainer(detect_anomaly=True)`",
        " - Profiling: `Trainer(profiler=...)`",
    ))
)


def _check_barebones(**values: Any) -> None:
    """``Trainer(barebones=True)`` with a feature it switches off: Lightning's ValueError and wording."""

    def conflicts(name: str, value: Any) -> bool:
        if name == "logger":
            return value is not None and value is not False
        if name in ("log_every_n_steps", "num_sanity_val_steps"):
            return value is not None and value != 0
        if name == "fast_dev_run":
            return value is not False and value != 0
        if name == "profiler":
            return value is not None
        return bool(value)

    for name, reason in _BAREBONES_REASONS:
        value = values[name]
        if conflicts(name, value):
            raise ValueError(
                f"`Trainer(barebones=True, {name}={value!r})` was passed. {reason} so it is disabled in barebones mode."
            )


_TIME_RE = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")


def _parse_max_time(value: Any) -> Optional[timedelta]:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        try:
            return timedelta(**value)
        except TypeError:
            raise _bad("max_time", value, "a dict must hold timedelta keys (days, hours, minutes, seconds)") from None
    if isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if m:
            d, h, mi, s = (int(x) for x in m.groups())
            return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise _bad("max_time", value, "expected 'DD:HH:MM:SS', a datetime.timedelta or a dict like {'hours': 1}")

