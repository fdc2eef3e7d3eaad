"""Builds the optional C++/CUDA extension ``trainer._C`` with ninja.

The Python package works without it: ``trainer.optim`` falls back to Triton or ``torch.optim``.
CUDA sources are compiled only where both a CUDA toolkit and a CUDA build of torch exist (see
:func:`cuda_build_decision`; ``TRAINER_CUDA=0`` skips them, ``TRAINER_CUDA=1`` overrides a toolkit
major-version mismatch, which otherwise stops the build with :class:`CudaBuildError`). The CUDA
architectures default to :data:`DEFAULT_CUDA_ARCHS` when no GPU is visible; ``-march=native`` is
opt-in (``TRAINER_NATIVE=1``). Set ``TRAINER_NO_EXT=1`` to skip the extension entirely.

Importable without side effects (``setup()`` runs only as ``__main__``, which is how both
``python setup.py`` and pip's setuptools backend execute it), so tests can check the decision.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess

from setuptools import setup


def nvcc_version(cuda_home: str | None) -> str | None:
    """``"13.0"`` from ``$CUDA_HOME/bin/nvcc --version``, or None when nvcc cannot be run."""
    if not cuda_home:
        return None
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def toolkit_root(cuda_home: str | None) -> str | None:
    """``cuda_home``, or ``/usr/local/cuda`` when ``cuda_home`` has no headers and that one does.

    torch takes CUDA_HOME from the nvcc on PATH; a ``/usr/local/bin/nvcc`` wrapper script then
    yields ``/usr/local``, which holds no CUDA headers.
    """
    def has_headers(d):
        return bool(d) and os.path.isfile(os.path.join(d, "include", "cuda_runtime.h"))

    if cuda_home and not has_headers(cuda_home) and has_headers("/usr/local/cuda"):
        return "/usr/local/cuda"
    return cuda_home


class CudaBuildError(RuntimeError):
    """A CUDA toolkit and torch were found but cannot build together; raised rather than a silent CPU-only build."""


DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def cuda_arch_list(env: dict, visible_gpus: int) -> str | None:
    """The ``TORCH_CUDA_ARCH_LIST`` to build with, or None to let torch target the visible GPUs.

    A user's setting wins. With no GPU visible (a login node, a container build) torch would
    otherwise guess from nothing: build for Ampere (8.0) and Hopper (9.0) with PTX for newer cards.
    """
    if env.get("TORCH_CUDA_ARCH_LIST"):
        return env["TORCH_CUDA_ARCH_LIST"]
    return None if visible_gpus > 0 else DEFAULT_CUDA_ARCHS


def cxx_flags(env: dict) -> list[str]:
    """Host compiler flags. ``-march=native`` only with ``TRAINER_NATIVE=1``: an extension built for
    the build machine's CPU dies with SIGILL on an older compute node."""
    native = env.get("TRAINER_NATIVE", "0")
    if native not in ("0", "1"):
        raise ValueError(f"TRAINER_NATIVE={native!r}: expected '0' (portable, default) or '1' (-march=native)")
    # -fno-math-errno: without it gcc keeps sqrtf scalar (errno on negative input) and the
    # AdamW loop does not vectorise at all.
    flags = ["-O3", "-fopenmp", "-fno-math-errno"]
    if native == "1":
        # 512-bit vectors where the CPU has them (gcc defaults to 256-bit loops on Intel cores)
        flags += ["-march=native", "-mprefer-vector-width=512"]
    return flags


def cuda_build_decision(cuda_sources: list[str], torch_cuda: str | None, torch_hip: str | None,
                        cuda_home: str | None, nvcc: str | None, env: dict | None = None) -> tuple[bool, str]:
    """Whether to compile ``csrc/*.cu`` into ``trainer._C``, and why (printed by the build).

    ``torch_cuda``/``torch_hip``: ``torch.version.cuda``/``.hip`` (None for a CPU build);
    ``cuda_home``: ``torch.utils.cpp_extension.CUDA_HOME``; ``nvcc``: :func:`nvcc_version`.
    A CPU torch never gets CUDA sources, even where a toolkit is installed: the objects would
    link against CUDA libraries torch does not ship.
    """
    env = os.environ if env is None else env
    if not cuda_sources:
        return False, "no csrc/*.cu sources"
    if env.get("TRAINER_CUDA") == "0":
        return False, "disabled by TRAINER_CUDA=0"
    if torch_hip:
        return False, f"torch is a ROCm build (HIP {torch_hip}); the CUDA sources are not hipified"
    if not torch_cuda:
        return False, "torch is a CPU build (torch.version.cuda is None)"
    if not cuda_home:
        return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    if not os.path.isfile(os.path.join(cuda_home, "include", "cuda_runtime.h")):
        # e.g. torch guessed CUDA_HOME=/usr/local from a /usr/local/bin/nvcc wrapper script
        return False, f"CUDA_HOME={cuda_home} has no include/cuda_runtime.h (set CUDA_HOME to the toolkit root)"
    if nvcc and nvcc.split(".")[0] != torch_cuda.split(".")[0] and env.get("TRAINER_CUDA") != "1":
        # torch's BuildExtension refuses a major-version mismatch. A silent CPU-only build here
        # would leave a GPU user on the slow path without a word: stop and say what to do.
        raise CudaBuildError(f"nvcc {nvcc} at {cuda_home} and torch's CUDA {torch_cuda} differ in major version: "
                             "point CUDA_HOME at a matching toolkit, or set TRAINER_CUDA=0 to build the extension "
                             "without CUDA kernels, or TRAINER_CUDA=1 to try anyway")
    return True, f"CUDA {torch_cuda} torch, nvcc {nvcc or '?'} at {cuda_home}"


def _extensions() -> tuple[list, dict]:
    if os.environ.get("TRAINER_NO_EXT", "0") == "1":
        return [], {}
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not cpp_sources:
        return [], {}
    import torch
    from torch.utils import cpp_extension

    cuda_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    cuda_home = toolkit_root(cpp_extension.CUDA_HOME)
    if cuda_home and torch.version.cuda:
        cpp_extension.CUDA_HOME = cuda_home  # include and library paths of CUDAExtension come from it
    with_cuda, why = cuda_build_decision(cuda_sources, torch.version.cuda, getattr(torch.version, "hip", None),
                                         cuda_home, nvcc_version(cuda_home) if torch.version.cuda else None)
    print(f"trainer._C: {'with' if with_cuda else 'without'} CUDA kernels: {why}")
    extra = {"cxx": cxx_flags(os.environ) + (["-DTRAINER_WITH_CUDA"] if with_cuda else [])}
    if with_cuda:
        archs = cuda_arch_list(os.environ, torch.cuda.device_count())
        if archs is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by CUDAExtension's BuildExtension
        print(f"trainer._C: TORCH_CUDA_ARCH_LIST={archs or '(the visible GPUs)'}")
        # No --use_fast_math: the kernels are memory bound, and IEEE sqrt/division (no flush of
        # denormals) keep them within float rounding of torch.optim and of the CPU kernels.
        extra["nvcc"] = ["-O3", "-lineinfo", "-DTRAINER_WITH_CUDA"]
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp_sources + cuda_sources
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp_sources
    ext = ext_cls(name="trainer._C", sources=sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":
    ext_modules, cmdclass = _extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
