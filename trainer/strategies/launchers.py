"""Launchers: how the processes of a distributed run come to exist.

``SubprocessScriptLauncher`` (``start_method="popen"``, Lightning's ``_SubprocessScriptLauncher``): rank 0 is
the current process; it re-runs ``sys.argv`` ``devices - 1`` times with ``MASTER_ADDR/MASTER_PORT/WORLD_SIZE/
RANK/LOCAL_RANK/NODE_RANK`` set. A process that finds ``LOCAL_RANK`` set (our children, ``torchrun``, SLURM)
starts nothing. A watcher thread in rank 0 follows the children: when one dies with an error, rank 0 gets
a grace period to fail on its own (its next collective sees the dead peer), then every process of the group
is killed and rank 0 exits with the child's error. When rank 0 raises, it kills its children. Each rank that
raises writes its traceback to a shared error folder, so rank 0 re-raises *that* error, naming the rank.

``MultiProcessingLauncher`` (``ddp_spawn``; ``start_method`` "spawn"/"fork"/"forkserver", Lightning's
``_MultiProcessingLauncher``): ``torch.multiprocessing.start_processes`` runs every rank in a new process; the
main process only waits. Rank 0 sends back the model weights (a temporary file), ``callback_metrics``,
``logged_metrics``, the best checkpoint path, the trainer state and the stage's results, which the main process
loads into its own objects. ``torch.multiprocessing`` ends every worker when one raises and re-raises the
worker's exception (with its traceback) in the main process.
"""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch

from trainer.exceptions import MisconfigurationException
from trainer.strategies.environment import ClusterEnvironment

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_ERROR_DIR_ENV = "TRAINER_DDP_ERROR_DIR"
#: seconds rank 0 waits, after a child died, for its own collective to fail before the watcher ends the group
CHILD_FAILURE_GRACE_S = float(os.environ.get("TRAINER_DDP_FAILURE_GRACE_S", "5"))


class RankFailedError(RuntimeError):
    """Another rank of the job raised; the message holds that rank's traceback."""


def _write_rank_error(rank: int) -> None:
    folder = os.environ.get(_ERROR_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return
    try:
        with open(os.path.join(folder, f"rank_{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
    except OSError:  # pragma: no cover
        pass


def _read_rank_errors(folder: Optional[str], exclude: int) -> Dict[int, str]:
    out: Dict[int, str] = {}
    if not folder or not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if name.startswith("rank_") and name.endswith(".txt"):
            rank = int(name[5:-4])
            if rank != exclude:
                with open(os.path.join(folder, name)) as f:
                    out[rank] = f.read()
    return out


def _script_command() -> List[str]:
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is None or not getattr(spec, "name", None):
        if not sys.argv or not sys.argv[0] or sys.argv[0] == "-c":
            raise MisconfigurationException(
                "`Trainer(devices>1)` with the default `start_method='popen'` re-runs your script in each new"
                " process, but this Python session has no script (interactive or `python -c`). Run a script, use"
                " `strategy='ddp_spawn'`, or start the processes with `torchrun`."
            )
        return [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    return [sys.executable, "-m", spec.name, *sys.argv[1:]]


class _Children:
    """The processes this (rank 0) process started; module-level so later Trainers in the script reuse them."""

    procs: Dict[int, subprocess.Popen] = {}
    error_dir: Optional[str] = None
    failed: Optional[tuple] = None  # (rank, returncode)
    handling = False  # rank 0's own exception handler runs: the watcher leaves the ending to it


def _kill_children(sig: int = signal.SIGKILL) -> None:
    for proc in _Children.procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig) if hasattr(os, "killpg") else proc.send_signal(sig)
            except (ProcessLookupError, PermissionError, OSError):
                try:
                    proc.send_signal(sig)
                except Exception:
                    pass


def _watch_children() -> None:
    while True:
        time.sleep(0.2)
        for rank, proc in list(_Children.procs.items()):
            code = proc.poll()
            if code is not None and code != 0 and _Children.failed is None:
                _Children.failed = (rank, code)
        if _Children.failed is None:
            if all(p.poll() is not None for p in _Children.procs.values()):
                return
            continue
        deadline = time.monotonic() + CHILD_FAILURE_GRACE_S
        while time.monotonic() < deadline and not _Children.handling:
            time.sleep(0.1)
        if _Children.handling:
            return  # rank 0's handler ends the run with the right error
        rank, code = _Children.failed
        errors = _read_rank_errors(_Children.error_dir, exclude=0)
        detail = errors.get(rank, f"(exit code {code}; see its output above)")
        sys.stderr.write(
            f"\n[trainer] Rank {rank} failed; ending every process of the job (rank 0 was still running).\n"
            f"Rank {rank}'s error:\n{detail}\n"
        )
        sys.stderr.flush()
        _kill_children()
        os._exit(code if 0 < code < 256 else 1)


def _wait_children_at_exit() -> None:
    deadline = time.monotonic() + 60
    for proc in _Children.procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    _kill_children()
    if _Children.error_dir:
        shutil.rmtree(_Children.error_dir, ignore_errors=True)


class SubprocessScriptLauncher:
    """Re-runs the script for local ranks ``1..devices-1`` (rank 0 is this process)."""

    is_interactive_compatible = False

    def __init__(self, cluster_environment: ClusterEnvironment, num_processes: int, num_nodes: int) -> None:
        self.cluster_environment = cluster_environment
        self.num_processes = num_processes
        self.num_nodes = num_nodes

    def launch(self, function: Callable, *args: Any, trainer: "Trainer", **kwargs: Any) -> Any:
        strategy = trainer.strategy
        if not self.cluster_environment.creates_processes_externally and self.num_processes * self.num_nodes > 1:
            self._call_children_scripts()
            strategy._set_world_ranks()  # type: ignore[attr-defined]
        strategy.setup_environment()  # type: ignore[attr-defined]
        rank = strategy.global_rank
        try:
            return function(*args, **kwargs)
        except BaseException as exc:
            from trainer.strategies.ddp import mark_rank_failed

            mark_rank_failed()
            if _Children.procs:  # rank 0 of a job we launched
                _Children.handling = True
                if self._other_rank_failed_first(exc):
                    raise self._rank_zero_error(exc) from exc
                raise
            _write_rank_error(rank)
            raise

    def _call_children_scripts(self) -> None:
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = "0"
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        os.environ["RANK"] = str(env.node_rank() * self.num_processes)
        _Children.error_dir = tempfile.mkdtemp(prefix="trainer-ddp-errors-")
        os.environ[_ERROR_DIR_ENV] = _Children.error_dir
        command = _script_command()
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            child_env["RANK"] = str(env.node_rank() * self.num_processes + local_rank)
            # own process group, so the whole child tree can be killed at once
            proc = subprocess.Popen(command, env=child_env, start_new_session=True)
            _Children.procs[local_rank] = proc
        threading.Thread(target=_watch_children, name="trainer-ddp-watcher", daemon=True).start()
        atexit.register(_wait_children_at_exit)

    @staticmethod
    def _other_rank_failed_first(exc: BaseException) -> bool:
        # give the children a moment to finish writing their error and exit
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if _read_rank_errors(_Children.error_dir, exclude=0) or _Children.failed:
                break
            if all(p.poll() is not None for p in _Children.procs.values()):
                break
            time.sleep(0.05)
        errors = _read_rank_errors(_Children.error_dir, exclude=0)
        if not errors:
            _kill_children()
            return False
        _kill_children()
        # rank 0's own error is a consequence when it is a communication failure
        return _is_comm_error(exc)

    @staticmethod
    def _rank_zero_error(exc: BaseException) -> BaseException:
        errors = _read_rank_errors(_Children.error_dir, exclude=0)
        rank = min(errors)
        return RankFailedError(f"Rank {rank} raised an exception, which ended the job:\n{errors[rank]}")

    def kill(self, signum: int) -> None:
        _kill_children(signum)


def _is_comm_error(exc: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("connection", "gloo", "nccl", "peer", "timed out", "timeout", "broken pipe")
    )


# -------------------------------------------------------------------- torch.multiprocessing
@dataclass
class _WorkerOutput:
    weights_path: Optional[str]
    best_model_path: Optional[str]
    state: Any
    results: Any
    callback_metrics: Dict[str, Any]
    logged_metrics: Dict[str, Any]
    global_step: int
    current_epoch_state: Any


def _to_cpu(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def _spawn_worker(process_idx: int, trainer: "Trainer", function: Callable, args: tuple, kwargs: dict,
                  weights_dir: str) -> None:
    strategy = trainer.strategy
    # torch.multiprocessing shares every pickled tensor's memory between the workers: the ranks would step the
    # *same* weights. Each rank gets its own copy (Lightning's `_disable_module_memory_sharing`).
    _unshare_modules((trainer.lightning_module, args, kwargs))
    if trainer.lightning_module is not None:  # a pickled LightningModule leaves its Trainer behind (Lightning's)
        trainer.lightning_module.trainer = trainer
    os.environ["LOCAL_RANK"] = str(process_idx)  # this worker's launcher must not launch again
    strategy._set_spawn_rank(process_idx)  # type: ignore[attr-defined]
    strategy.setup_environment()  # type: ignore[attr-defined]
    try:
        results = function(*args, **kwargs)
    except BaseException:
        from trainer.strategies.ddp import mark_rank_failed

        mark_rank_failed()
        raise
    if strategy.global_rank != 0:
        return
    weights_path = None
    module = trainer.lightning_module
    if module is not None:
        weights_path = os.path.join(weights_dir, "weights.pt")
        torch.save(strategy.lightning_module_state_dict(), weights_path)
    ckpt = trainer.checkpoint_callback
    results = _to_cpu_collection(results)
    torch.save(_WorkerOutput(
        weights_path=weights_path,
        best_model_path=getattr(ckpt, "best_model_path", None) if ckpt is not None else None,
        state=trainer.state,
        results=results,
        callback_metrics=_to_cpu(dict(trainer.callback_metrics)),
        logged_metrics=_to_cpu(dict(trainer.logged_metrics)),
        global_step=trainer.global_step,
        current_epoch_state=trainer.fit_loop.state_dict(),
    ), os.path.join(weights_dir, "output.pt"))  # a file: shared-memory tensors would die with the worker


@torch.no_grad()
def _unshare_modules(data: Any) -> None:
    seen = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.nn.Module):
            if id(obj) in seen:
                return
            seen.add(id(obj))
            for tensor in list(obj.parameters()) + list(obj.buffers()):
                tensor.data = tensor.data.clone()
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item)

    visit(data)


def _to_cpu_collection(obj: Any) -> Any:
    from trainer.utilities import apply_to_collection

    return apply_to_collection(obj, torch.Tensor, lambda t: t.detach().cpu())


class MultiProcessingLauncher:
    """``torch.multiprocessing.start_processes``: every rank is a new process; the main process waits."""

    is_interactive_compatible = True

    def __init__(self, strategy: Any, start_method: str = "spawn") -> None:
        self.strategy = strategy
        self.start_method = start_method

    def launch(self, function: Callable, *args: Any, trainer: "Trainer", **kwargs: Any) -> Any:
        import torch.multiprocessing as mp

        strategy = trainer.strategy
        nprocs = strategy.num_processes  # type: ignore[attr-defined]
        if self.start_method != "fork":
            try:
                pickle.dumps((trainer, function, args, kwargs))
            except Exception as err:
                raise MisconfigurationException(
                    f"`Trainer(strategy='ddp_spawn')` (start_method={self.start_method!r}) sends the Trainer, the"
                    f" model and the data to {nprocs} new processes by pickling them, and they cannot be pickled:"
                    f" {type(err).__name__}: {err}. Define the classes at module level (not inside a function),"
                    " avoid lambdas/open handles in the model, or use `strategy='ddp'` (re-runs the script)."
                ) from err
        env = strategy.cluster_environment  # type: ignore[attr-defined]
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        weights_dir = tempfile.mkdtemp(prefix="trainer-spawn-")
        try:
            context = mp.start_processes(
                _spawn_worker, args=(trainer, function, args, kwargs, weights_dir),
                nprocs=nprocs, start_method=self.start_method, join=False,
            )
            while not context.join():
                pass
            output: _WorkerOutput = torch.load(os.path.join(weights_dir, "output.pt"), weights_only=False)
            self._recover_results_in_main_process(output, trainer)
            return output.results
        finally:
            shutil.rmtree(weights_dir, ignore_errors=True)

    @staticmethod
    def _recover_results_in_main_process(output: _WorkerOutput, trainer: "Trainer") -> None:
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and output.best_model_path is not None:
            ckpt.best_model_path = output.best_model_path  # type: ignore[attr-defined]
        if output.weights_path is not None and trainer.lightning_module is not None:
            state = torch.load(output.weights_path, map_location="cpu", weights_only=False)
            trainer.lightning_module.load_state_dict(state)
        trainer.state = output.state
        trainer._logger_connector._callback_metrics.update(output.callback_metrics)
        logged = getattr(trainer._logger_connector, "_logged_metrics", None)
        if isinstance(logged, dict):
            logged.update(output.logged_metrics)
        try:
            trainer.fit_loop.load_state_dict(output.current_epoch_state)
        except Exception:  # pragma: no cover - progress counters are informative only
            pass

    def kill(self, signum: int) -> None:  # torch.multiprocessing ends its workers itself
        pass


__all__ = ["SubprocessScriptLauncher", "MultiProcessingLauncher", "RankFailedError"]
