"""Accelerator and device resolution: ``accelerator`` + ``devices`` -> the devices this run uses."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Union

import torch

from trainer.exceptions import MisconfigurationException

ACCELERATOR_CHOICES = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _xla_available() -> bool:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class DeviceSpec:
    accelerator: str  # "cpu" | "cuda" | "mps" | "tpu"
    device_ids: List[int]

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    def root_device(self) -> torch.device:
        if self.accelerator == "cpu":
            return torch.device("cpu")
        if self.accelerator == "tpu":  # pragma: no cover - needs torch_xla
            import torch_xla.core.xla_model as xm

            return xm.xla_device()
        return torch.device(self.accelerator, self.device_ids[0])


class Accelerator:
    """The hardware a run uses (Lightning's Accelerator interface, for code that inspects it)."""

    name = "cpu"

    def setup_device(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.set_device(device)

    def teardown(self) -> None:
        pass

    def get_device_stats(self, device: Any) -> Dict[str, Any]:
        return {}

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def auto_device_count() -> int:
        return 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_PSUTIL_MISSING = "Requirement 'psutil' not met. HINT: Try running `pip install -U 'psutil'`"


def psutil_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("psutil") is not None


def get_cpu_stats() -> Dict[str, float]:
    """Lightning's CPU stats (system-wide CPU, RAM and swap use, in %), from the optional ``psutil``."""
    if not psutil_available():
        raise ModuleNotFoundError(f"Fetching CPU device stats requires `psutil` to be installed. {_PSUTIL_MISSING}")
    import psutil

    return {
        "cpu_vm_percent": psutil.virtual_memory().percent,
        "cpu_percent": psutil.cpu_percent(),
        "cpu_swap_percent": psutil.swap_memory().percent,
    }


class CPUAccelerator(Accelerator):
    name = "cpu"

    def get_device_stats(self, device: Any) -> Dict[str, Any]:
        return get_cpu_stats()


class CUDAAccelerator(Accelerator):
    name = "cuda"

    def get_device_stats(self, device: Any) -> Dict[str, Any]:
        return dict(torch.cuda.memory_stats(device))

    @staticmethod
    def is_available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def auto_device_count() -> int:
        return torch.cuda.device_count()


class MPSAccelerator(Accelerator):
    name = "mps"

    @staticmethod
    def is_available() -> bool:
        return _mps_available()


class XLAAccelerator(Accelerator):
    name = "tpu"

    @staticmethod
    def is_available() -> bool:
        return _xla_available()


def build_accelerator(name: str) -> Accelerator:
    return {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator, "tpu": XLAAccelerator}[name]()


def resolve_accelerator(accelerator: Any) -> str:
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATOR_CHOICES:
        raise MisconfigurationException(
            f"`Trainer(accelerator={accelerator!r})` is not a valid accelerator. Allowed: {list(ACCELERATOR_CHOICES)}."
        )
    accelerator = accelerator.lower()
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if accelerator in ("gpu", "cuda"):
        if torch.cuda.is_available():
            return "cuda"
        if accelerator == "gpu" and _mps_available():
            return "mps"
        raise MisconfigurationException(
            f"`Trainer(accelerator={accelerator!r})` asks for a GPU but none is available"
            f" (torch {torch.__version__}, torch.cuda.is_available() is False). Use accelerator='cpu' or 'auto'."
        )
    if accelerator == "mps" and not _mps_available():
        raise MisconfigurationException("`Trainer(accelerator='mps')` asks for Apple MPS but it is not available.")
    if accelerator == "tpu" and not _xla_available():
        raise MisconfigurationException(
            "`Trainer(accelerator='tpu')` needs the `torch_xla` package, which is not installed."
        )
    return accelerator


def _available_count(accelerator: str) -> int:
    if accelerator == "cuda":
        return torch.cuda.device_count()
    if accelerator == "cpu":
        return max(1, os.cpu_count() or 1)
    return 1


def resolve_devices(devices: Union[int, str, List[int]], accelerator: str) -> DeviceSpec:
    """Parses ``devices`` (int, list of ids, ``"auto"``, ``-1``, ``"0,1"``, ``"2"``) for ``accelerator``."""
    bad = MisconfigurationException(
        f"`Trainer(devices={devices!r})` is not valid: use a positive int, -1 (all), 'auto', a list of device"
        " indices, or a string such as '2' or '0,1'."
    )
    if isinstance(devices, bool):
        raise bad
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            count = 1 if accelerator == "cpu" else max(1, _available_count(accelerator))
            return DeviceSpec(accelerator, list(range(count)))
        try:
            if "," in text:
                devices = [int(x) for x in text.split(",") if x.strip() != ""]
            else:
                devices = int(text)
        except ValueError:
            raise bad from None
    if isinstance(devices, int):
        if devices == -1:
            devices = _available_count(accelerator)
        if devices <= 0:
            raise bad
        if accelerator == "cuda" and devices > torch.cuda.device_count():
            raise MisconfigurationException(
                f"`Trainer(devices={devices})` asks for {devices} CUDA devices but {torch.cuda.device_count()}"
                " are available."
            )
        return DeviceSpec(accelerator, list(range(devices)))
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices):
            raise bad
        if accelerator == "cuda":
            missing = [d for d in devices if d >= torch.cuda.device_count()]
            if missing:
                raise MisconfigurationException(
                    f"`Trainer(devices={list(devices)})`: CUDA device(s) {missing} do not exist"
                    f" ({torch.cuda.device_count()} available)."
                )
        if accelerator == "cpu":
            return DeviceSpec(accelerator, list(range(len(devices))))
        return DeviceSpec(accelerator, list(devices))
    raise bad
