"""Every public name of pytorch-lightning's user-facing modules exists in ``trainer`` at the same path
(``scripts/lightning_names.py`` lists them; its ``KNOWN_ABSENT`` says why the few left out are), and the cluster
environments added for it (Kubeflow, LSF; MPI and XLA raising naming their package) behave as Lightning's."""
from __future__ import annotations

import importlib
import importlib.util
import os
import socket
from typing import Any, Dict

import pytest

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts",
                      "lightning_names.py")


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("lightning_names", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_public_lightning_name_is_missing():
    names = _script()
    assert names.public_names(importlib.import_module("pytorch_lightning.plugins"))  # the listing sees names
    assert names.missing_names() == {}


def _env(name: str) -> Any:
    return importlib.import_module(("pytorch_lightning" if name == "lightning" else "trainer")
                                   + ".plugins.environments")


def _outcome(fn: Any) -> Any:
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc).__name__, str(exc)


def _kubeflow(name: str) -> Dict[str, Any]:
    env = _env(name).KubeflowEnvironment()
    return {
        "values": (env.creates_processes_externally, env.main_address, env.main_port, env.world_size(),
                   env.global_rank(), env.local_rank(), env.node_rank()),
        "set": (env.set_world_size(9), env.set_global_rank(9), env.world_size(), env.global_rank()),
        "detect": _outcome(env.detect)[0],
    }


def test_kubeflow_environment_matches_lightning(monkeypatch):
    for key, value in {"MASTER_ADDR": "10.0.0.3", "MASTER_PORT": "29501", "WORLD_SIZE": "4", "RANK": "2"}.items():
        monkeypatch.setenv(key, value)
    pl = _kubeflow("lightning")
    assert pl["values"] == (True, "10.0.0.3", 29501, 4, 2, 0, 2) and pl["detect"] == "NotImplementedError"
    assert _kubeflow("trainer") == pl


def _lsf(name: str) -> Dict[str, Any]:
    cls = _env(name).LSFEnvironment
    detected = cls.detect()
    env = cls()
    return {
        "detect": detected,
        "values": (env.creates_processes_externally, env.main_address, env.main_port, env.world_size(),
                   env.global_rank(), env.local_rank(), env.node_rank()),
        "exported": (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]),
    }


@pytest.mark.parametrize("port", [None, "12345"])
def test_lsf_environment_matches_lightning(monkeypatch, tmp_path, port):
    rankfile = tmp_path / "ranks"
    rankfile.write_text("launch\nhost-a\nhost-a\nhost-b\nhost-b\n")
    monkeypatch.setattr(socket, "gethostname", lambda: "host-b")
    env = {"LSB_JOBID": "4242", "LSB_DJOB_RANKFILE": str(rankfile), "JSM_NAMESPACE_LOCAL_RANK": "1",
           "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "3"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for name in ("lightning", "trainer"):
        monkeypatch.delenv("MASTER_ADDR", raising=False)
        if port is None:
            monkeypatch.delenv("MASTER_PORT", raising=False)
        else:
            monkeypatch.setenv("MASTER_PORT", port)
        result = _lsf(name)
        if name == "lightning":
            pl = result
            assert pl["values"] == (True, "host-a", int(port or 10242), 4, 3, 1, 1) and pl["detect"]
        else:
            assert result == pl


def test_lsf_environment_errors_match_lightning(monkeypatch):
    for key in ("LSB_DJOB_RANKFILE", "JSM_NAMESPACE_SIZE", "LSB_JOBID"):
        monkeypatch.delenv(key, raising=False)
    pl = _outcome(lambda: _env("lightning").LSFEnvironment())
    assert pl[0] == "ValueError"
    assert _outcome(lambda: _env("trainer").LSFEnvironment()) == pl


@pytest.mark.parametrize("cls, package", [("MPIEnvironment", "mpi4py"), ("XLAEnvironment", "torch_xla"),
                                          ("XLACheckpointIO", "torch_xla")])
def test_environments_without_their_package_raise_naming_it(cls, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    module = "plugins.io" if cls == "XLACheckpointIO" else "plugins.environments"
    pl = _outcome(lambda: getattr(importlib.import_module(f"pytorch_lightning.{module}"), cls)())
    assert pl[0] == "ModuleNotFoundError" and package in pl[1]
    ours = _outcome(lambda: getattr(importlib.import_module(f"trainer.{module}"), cls)())
    assert ours[0] == "ModuleNotFoundError" and package in ours[1]


def _utilities(name: str) -> Dict[str, Any]:
    import torch
    from helpers import boring_model_class, import_framework

    root = "pytorch_lightning" if name == "lightning" else "trainer"
    summary_mod = importlib.import_module(f"{root}.utilities.model_summary")
    memory = importlib.import_module(f"{root}.utilities.memory")
    helpers = importlib.import_module(f"{root}.utilities.model_helpers")
    L = import_framework(name)
    model = boring_model_class(L)(n=8)
    summary = summary_mod.summarize(model, max_depth=1)
    x = torch.ones(2, requires_grad=True) * 2
    detached = memory.recursive_detach({"a": x, "b": [x]})
    return {
        "summary type": type(summary).__name__, "table": str(summary).splitlines()[:4],
        "params": (summary.total_parameters, summary.trainable_parameters),
        "detached": (detached["a"].requires_grad, detached["b"][0].requires_grad),
        "overridden": (helpers.is_overridden("training_step", model), helpers.is_overridden("on_fit_end", model)),
        "oom": memory.is_oom_error(RuntimeError("CUDA out of memory.")),
    }


def test_utilities_helpers_match_lightning():
    pl = _utilities("lightning")
    assert pl["summary type"] == "ModelSummary" and pl["detached"] == (False, False) and pl["oom"]
    ours = _utilities("trainer")
    assert ours == pl
