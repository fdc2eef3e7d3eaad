"""Runs ``ddp_script.py`` as a subprocess (free port, a clean environment) and reads what each rank wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "ddp_script.py")
ROOT = os.path.dirname(os.path.dirname(HERE))
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID", "PL_GLOBAL_SEED")


def free_port() -> int:
    from trainer.strategies.environment import find_free_port

    return find_free_port()


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


class Run:
    def __init__(self, out: str, proc: subprocess.CompletedProcess, seconds: float) -> None:
        self.out, self.proc, self.seconds = out, proc, seconds

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def result(self, rank: int = 0) -> Dict[str, Any]:
        with open(os.path.join(self.out, f"result_{rank}.json")) as f:
            return json.load(f)

    def weights(self, rank: int = 0) -> Dict[str, torch.Tensor]:
        return torch.load(os.path.join(self.out, f"weights_{rank}.pt"), weights_only=True)


def run_script(out: str, *args: str, torchrun: bool = False, timeout: float = 120, check: bool = True,
               nproc: int = 2, script: str = SCRIPT, extra_env: Optional[Dict[str, str]] = None) -> Run:
    """``script --out OUT *args`` in a clean environment (``extra_env`` added), launched by the Trainer
    itself or by ``torchrun``; raises with the output's tail when it fails and ``check``."""
    kw = dict(torchrun=torchrun, timeout=timeout, nproc=nproc, script=script, extra_env=extra_env or {})
    run = _run_script(out, *args, **kw)
    if run.proc.returncode != 0 and "address already in use" in run.output.lower():
        # the free port was taken by another process between choosing it and binding it: once more
        run = _run_script(out, *args, **kw)
    if check and run.proc.returncode != 0:
        raise AssertionError(f"{run.proc.args} failed ({run.proc.returncode}):\n{run.output[-6000:]}")
    return run


def _run_script(out: str, *args: str, torchrun: bool, timeout: float, nproc: int, script: str,
                extra_env: Dict[str, str]) -> Run:
    port = free_port()
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={port}",
               script, "--out", out, *args]
        env = clean_env(**extra_env)
    else:
        cmd = [sys.executable, script, "--out", out, *args]
        env = clean_env(MASTER_PORT=str(port), **extra_env)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return Run(out, proc, time.monotonic() - t0)


def run_in_process(out: str, *args: str, module: str = "ddp_script") -> Run:
    """The single-process reference, in this process (no launcher): ``module.main(["--out", out, *args])``."""
    import importlib

    sys.path.insert(0, HERE)
    try:
        script = importlib.import_module(module)
    finally:
        sys.path.remove(HERE)
    t0 = time.monotonic()
    script.main(["--out", out, *args])
    return Run(out, subprocess.CompletedProcess([], 0, "", ""), time.monotonic() - t0)


def max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


__all__: List[str] = ["run_script", "run_in_process", "max_diff", "free_port", "clean_env", "Run"]
_ = Optional
