"""Builds the optional C++/CUDA extension ``trainer._C`` with ninja.

The Python package works without it: ``trainer.optim`` falls back to Triton or ``torch.optim``.
CUDA sources are compiled only where both a CUDA toolkit and a CUDA build of torch exist.
Set ``TRAINER_NO_EXT=1`` to skip the extension entirely.
"""
import glob
import os

from setuptools import setup

ext_modules = []
cmdclass = {}
if os.environ.get("TRAINER_NO_EXT", "0") != "1":
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if cpp_sources:
        import torch
        from torch.utils import cpp_extension

        cuda_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
        with_cuda = bool(cuda_sources) and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
        # -fno-math-errno: without it gcc keeps sqrtf scalar (errno on negative input) and the
        # AdamW loop does not vectorise at all.
        cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno"]
        if os.environ.get("TRAINER_NATIVE", "1") == "1":
            cxx_flags.append("-march=native")
        extra = {"cxx": cxx_flags + (["-DTRAINER_WITH_CUDA"] if with_cuda else [])}
        if with_cuda:
            extra["nvcc"] = ["-O3", "--use_fast_math", "-DTRAINER_WITH_CUDA"]
            ext_cls = cpp_extension.CUDAExtension
            sources = cpp_sources + cuda_sources
        else:
            ext_cls = cpp_extension.CppExtension
            sources = cpp_sources
        ext_modules.append(
            ext_cls(name="trainer._C", sources=sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])
        )
        cmdclass["build_ext"] = cpp_extension.BuildExtension.with_options(use_ninja=True)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
