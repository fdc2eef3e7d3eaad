"""LightningCLI (trainer.cli) against pytorch-lightning's: the same CLI calls give the same parsed config, the same
printed config keys, the same files and the same errors; the CLI builds ``trainer.Trainer``.

Each parity test runs the call under Lightning first (the oracle) and then under `trainer`. Our Trainer has one
argument Lightning's lacks (``compile``: the compiled engine switch), so ``trainer.compile`` is the one key allowed
in ours only.
"""
from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml
from helpers import import_framework, make_loader

pytest.importorskip("jsonargparse")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUR_ONLY_TRAINER_KEYS = {"compile"}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def cli_module(L: ModuleType) -> ModuleType:
    import importlib

    return importlib.import_module(f"{L.__name__}.cli")


@functools.lru_cache(maxsize=None)
def classes(L: ModuleType) -> tuple:
    """A model and a datamodule with typed ``__init__`` arguments, per framework."""

    class CLIModel(L.LightningModule):
        def __init__(self, hidden: int = 4, lr: float = 0.1, batch_size: int = 4, activation: str = "relu"):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class CLIData(L.LightningDataModule):
        def __init__(self, batch_size: int = 4, n: int = 16):
            super().__init__()
            self.batch_size = batch_size
            self.n = n

        def train_dataloader(self):
            return make_loader(self.n, self.batch_size)

        def val_dataloader(self):
            return make_loader(self.n // 2, self.batch_size, seed=1)

    return CLIModel, CLIData


def make_cli(L: ModuleType, args: Any, tmp_path, cli_class: Any = None, **kw: Any) -> Any:
    model, data = classes(L)
    kw.setdefault("trainer_defaults", dict(QUIET, default_root_dir=str(tmp_path), logger=False))
    cls = cli_class or cli_module(L).LightningCLI
    return cls(model, data, args=args, **kw)


def outcome(fn) -> tuple:
    """(exit code or exception class name, message, stdout) of running ``fn`` to the end."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            fn()
    except SystemExit as exc:
        return exc.code, err.getvalue(), out.getvalue()
    except Exception as exc:  # noqa: BLE001 - the point is to compare it
        return type(exc).__name__, str(exc), out.getvalue()
    return None, err.getvalue(), out.getvalue()


def error_message(stderr: str) -> str:
    """jsonargparse's ``error: ...`` part of an exit message (the usage lines above it list our extra
    ``--trainer.compile`` option)."""
    assert "error:" in stderr, stderr
    return stderr[stderr.index("error:"):]


def comparable(config: dict) -> dict:
    """A parsed/dumped config with the entries that legitimately differ between frameworks removed."""
    config = yaml.safe_load(yaml.safe_dump(config))
    trainer_cfg = config.get("trainer", {})
    for key in OUR_ONLY_TRAINER_KEYS | {"default_root_dir"}:
        trainer_cfg.pop(key, None)
    return config


def _class_paths_to_names(config: Any) -> Any:
    """``pytorch_lightning.x.Y`` / ``trainer.x.Y`` -> ``Y`` (each framework's own classes)."""
    if isinstance(config, dict):
        return {k: _class_paths_to_names(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_class_paths_to_names(v) for v in config]
    if isinstance(config, str) and re.match(r"^(pytorch_lightning|trainer)\.[\w.]+$", config):
        return config.rsplit(".", 1)[1]
    return config


# --------------------------------------------------------------------------------------------- parsing
def test_parsed_config_matches_lightning(tmp_path):
    (tmp_path / "a.yaml").write_text("trainer:\n  max_epochs: 5\n  limit_train_batches: 2\nmodel:\n  hidden: 6\n")
    (tmp_path / "b.yaml").write_text("model:\n  lr: 0.5\ndata:\n  batch_size: 2\n")
    args = [
        f"--config={tmp_path / 'a.yaml'}", f"--config={tmp_path / 'b.yaml'}",  # merged in order
        "--trainer.max_epochs=3", "--model.activation=tanh", "--seed_everything=7",
        "--optimizer=Adam", "--optimizer.lr=0.01", "--lr_scheduler=StepLR", "--lr_scheduler.step_size=2",
        "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val_loss",
        "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}",
    ]
    configs = {}
    for name in ("lightning", "trainer"):
        cli = make_cli(import_framework(name), args, tmp_path, run=False)
        assert len(cli.config.config) == 2  # the paths of the files given
        configs[name] = comparable(yaml.safe_load(cli.parser.dump(cli.config, skip_none=False)))
    theirs, ours = configs["lightning"], configs["trainer"]
    assert theirs["trainer"]["max_epochs"] == 3 and theirs["model"]["hidden"] == 6 and theirs["model"]["lr"] == 0.5
    assert theirs["seed_everything"] == 7 and theirs["optimizer"]["class_path"] == "torch.optim.Adam"
    assert _class_paths_to_names(ours) == _class_paths_to_names(theirs)


def test_instantiated_objects(tmp_path):
    args = ["--optimizer=Adam", "--optimizer.lr=0.01", "--trainer.max_epochs=2", "--trainer.callbacks+=EarlyStopping",
            "--trainer.callbacks.monitor=val_loss"]
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        cli = make_cli(L, args, tmp_path, run=False)
        assert isinstance(cli.trainer, L.Trainer) and type(cli.model) is classes(L)[0]
        assert isinstance(cli.datamodule, classes(L)[1])
        assert cli.trainer.max_epochs == 2
        assert any(type(c).__name__ == "EarlyStopping" and c.monitor == "val_loss" for c in cli.trainer.callbacks)
        optimizer = cli.model.configure_optimizers()  # replaced by the CLI's: the configured Adam
        assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 0.01
    from trainer import Trainer

    assert type(make_cli(import_framework("trainer"), [], tmp_path, run=False).trainer) is Trainer


def test_args_as_dict_trainer_defaults_and_seed(tmp_path):
    config = {"trainer": {"max_epochs": 4}, "model": {"hidden": 9}, "seed_everything": 123}
    for name in ("lightning", "trainer"):
        cli = make_cli(import_framework(name), config, tmp_path, run=False)
        assert (cli.trainer.max_epochs, cli.model.hparams.hidden, cli.config.seed_everything) == (4, 9, 123)
        assert os.environ["PL_GLOBAL_SEED"] == "123"
        cli = make_cli(import_framework(name), [], tmp_path, run=False, seed_everything_default=False)
        assert cli.config.seed_everything is False
        cli = make_cli(import_framework(name), [], tmp_path, run=False, seed_everything_default=True)
        assert isinstance(cli.config.seed_everything, int)  # the random seed chosen is recorded


def test_reduce_lr_on_plateau_and_link_arguments(tmp_path):
    results = []
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        mod = cli_module(L)

        class LinkedCLI(mod.LightningCLI):
            def add_arguments_to_parser(self, parser):
                parser.link_arguments("data.batch_size", "model.batch_size")

        args = ["--data.batch_size=3", "--optimizer=SGD", "--optimizer.lr=0.2",
                f"--lr_scheduler={mod.__name__}.ReduceLROnPlateau", "--lr_scheduler.monitor=val_loss"]
        cli = make_cli(L, args, tmp_path, cli_class=LinkedCLI, run=False)
        assert cli.model.hparams.batch_size == 3
        configured = cli.model.configure_optimizers()
        assert configured["lr_scheduler"]["monitor"] == "val_loss"
        assert isinstance(configured["lr_scheduler"]["scheduler"], mod.ReduceLROnPlateau)
        results.append(outcome(lambda: make_cli(L, ["--model.batch_size=5"], tmp_path, cli_class=LinkedCLI, run=False)))
    theirs, ours = results
    assert theirs[0] == 2 and "model.batch_size" in error_message(theirs[1])  # a link target cannot be given
    assert ours[0] == theirs[0] and error_message(ours[1]) == error_message(theirs[1])


def test_subclass_mode_model(tmp_path):
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        model, data = classes(L)
        config = {"model": {"class_path": f"{__name__}.classes_ref_{name}", "init_args": {"hidden": 3}}}
        cli = cli_module(L).LightningCLI(
            L.LightningModule, data, subclass_mode_model=True, run=False, args=config,
            trainer_defaults=dict(QUIET, default_root_dir=str(tmp_path), logger=False),
        )
        assert type(cli.model) is model and cli.model.hparams.hidden == 3


# module-level names, so a class_path can point at each framework's model
classes_ref_lightning = classes(import_framework("lightning"))[0]
classes_ref_trainer = classes(import_framework("trainer"))[0]


# --------------------------------------------------------------------------------------------- print_config / errors
def test_print_config_keys_match_lightning(tmp_path):
    printed = {}
    for name in ("lightning", "trainer"):
        code, err, out = outcome(lambda: make_cli(import_framework(name), ["fit", "--print_config"], tmp_path))
        assert code == 0, err
        printed[name] = yaml.safe_load(out)
    theirs, ours = printed["lightning"], printed["trainer"]
    assert set(theirs) == {
        "seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path", "weights_only"
    }
    assert set(ours) == set(theirs)
    assert set(ours["trainer"]) == set(theirs["trainer"]) | OUR_ONLY_TRAINER_KEYS
    for key in ("model", "data"):
        assert ours[key] == theirs[key]
    assert comparable(ours) == comparable(theirs)


BAD_ARGS = [
    ("no_subcommand", []),
    ("unknown_subcommand", ["train"]),
    ("wrong_type", ["fit", "--trainer.max_epochs=abc"]),
    ("unknown_model_arg", ["fit", "--model.nope=1"]),
    ("unknown_optimizer", ["fit", "--optimizer=NoSuchOptimizer"]),
    ("missing_config_file", ["fit", "--config=/nonexistent/config.yaml"]),
]


@pytest.mark.parametrize(("case", "args"), BAD_ARGS, ids=[c for c, _ in BAD_ARGS])
def test_bad_args_fail_like_lightning(tmp_path, case, args):
    results = [outcome(lambda: make_cli(import_framework(n), args, tmp_path)) for n in ("lightning", "trainer")]
    theirs, ours = results
    assert theirs[0] == 2, f"{case}: Lightning no longer exits with 2: {theirs}"
    assert ours[0] == theirs[0]
    assert error_message(ours[1]) == error_message(theirs[1])  # jsonargparse's message, word for word


def test_add_lightning_class_args_rejects_other_classes():
    results = []
    for name in ("lightning", "trainer"):
        mod = cli_module(import_framework(name))
        results.append(outcome(lambda: mod.LightningArgumentParser().add_lightning_class_args(dict, "x")))
    theirs, ours = results
    assert theirs[0] == "MisconfigurationException" and "Cannot add arguments from" in theirs[1]
    assert ours[:2] == theirs[:2]


# --------------------------------------------------------------------------------------------- running / saving
def test_fit_saves_config_and_refuses_to_overwrite(tmp_path):
    saved, second = {}, {}
    for name in ("lightning", "trainer"):
        root = tmp_path / name
        args = ["fit", "--trainer.max_epochs=1", f"--trainer.default_root_dir={root}", "--trainer.logger=false"]
        cli = make_cli(import_framework(name), args, root, trainer_defaults=QUIET)
        assert cli.trainer.current_epoch == 1 and cli.subcommand == "fit"
        with open(root / "config.yaml") as f:
            text = f.read()
        saved[name] = (text.splitlines()[0], comparable(yaml.safe_load(text)))
        second[name] = outcome(lambda: make_cli(import_framework(name), args, root, trainer_defaults=QUIET))
        # overwrite=True writes it again
        make_cli(import_framework(name), args, root, trainer_defaults=QUIET, save_config_kwargs={"overwrite": True})
    assert saved["lightning"][0] == "# pytorch_lightning==2.6.6" and saved["trainer"][0].startswith("# trainer==")
    assert saved["trainer"][1] == saved["lightning"][1]
    assert second["lightning"][0] == "RuntimeError" and "expected" in second["lightning"][1]
    assert second["trainer"][:2] == (
        second["lightning"][0], second["lightning"][1].replace(str(tmp_path / "lightning"), str(tmp_path / "trainer"))
    )


def test_validate_test_predict_subcommands(tmp_path):
    for sub in ("validate", "test", "predict"):
        for name in ("lightning", "trainer"):
            L = import_framework(name)
            model, data = classes(L)

            class Data(data):
                def test_dataloader(self):
                    return make_loader(8, 4, seed=2)

                def predict_dataloader(self):
                    return make_loader(8, 4, seed=3)

            class Model(model):
                test_step = model.validation_step

                def predict_step(self, batch, batch_idx):
                    return self.layer(batch[0])

            args = [sub, f"--trainer.default_root_dir={tmp_path / name / sub}", "--trainer.logger=false"]
            cli = cli_module(L).LightningCLI(Model, Data, args=args, trainer_defaults=QUIET)
            assert cli.subcommand == sub and cli.trainer.state.fn == sub


def test_fast_dev_run_skips_config_saving(tmp_path):
    for name in ("lightning", "trainer"):
        root = tmp_path / name
        make_cli(import_framework(name), ["fit", "--trainer.fast_dev_run=1", f"--trainer.default_root_dir={root}"],
                 root, trainer_defaults=QUIET)
        assert not (root / "config.yaml").exists()


def test_save_to_log_dir_false_needs_an_override(tmp_path):
    results = []
    for name in ("lightning", "trainer"):
        mod = cli_module(import_framework(name))
        results.append(outcome(lambda: mod.SaveConfigCallback(mod.LightningArgumentParser(), None, save_to_log_dir=False)))
    assert results[0][0] == "ValueError"
    assert results[1][:2] == results[0][:2]


# --------------------------------------------------------------------------------------------- packaging
def test_missing_jsonargparse_names_package_and_install_command():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'jsonargparse': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib.metadata as md\n"
        "real = md.version\n"
        "def version(name):\n"
        "    if name == 'jsonargparse': raise md.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "md.version = version\n"
        "import trainer.cli\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: Requirement 'jsonargparse[signatures]>=4.27.7' not met")
    assert "pip install -U 'jsonargparse[signatures]>=4.27.7'" in last


def test_example_script_trains_with_its_config(tmp_path):
    script = os.path.join(ROOT, "examples", "cli_example.py")
    config = os.path.join(ROOT, "examples", "cli_example.yaml")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, script, "fit", f"--config={config}", "--trainer.max_epochs=1",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in proc.stderr
    saved = list(tmp_path.rglob("config.yaml"))
    assert len(saved) == 1 and yaml.safe_load(saved[0].read_text())["trainer"]["max_epochs"] == 1
    assert list(tmp_path.rglob("*.ckpt"))


def test_ckpt_path_hyperparameters_update_the_model_config(tmp_path):
    hidden = {}
    for name in ("lightning", "trainer"):
        root = tmp_path / name
        L = import_framework(name)
        fit_args = ["fit", "--trainer.max_epochs=1", "--model.hidden=11", f"--trainer.default_root_dir={root}",
                    "--trainer.logger=false"]
        fitted = make_cli(L, fit_args, root, trainer_defaults=QUIET)
        ckpt = fitted.trainer.checkpoint_callback.best_model_path
        assert os.path.isfile(ckpt)
        # validate with the checkpoint: the hyperparameters saved in it win over the default (hidden=4)
        cli = make_cli(L, ["validate", f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={root / 'v'}",
                           "--trainer.logger=false"], root, trainer_defaults=QUIET)
        hidden[name] = (cli.config.validate.model.hidden, cli.model.hparams.hidden)
    assert hidden["lightning"] == (11, 11)
    assert hidden["trainer"] == hidden["lightning"]


def test_per_subcommand_parser_kwargs_and_env(tmp_path, monkeypatch):
    (tmp_path / "fit_defaults.yaml").write_text("trainer:\n  max_epochs: 6\nmodel:\n  hidden: 5\n")
    monkeypatch.setenv("PL_FIT__MODEL__LR", "0.25")
    seen = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        mod = cli_module(L)

        class NoRunCLI(mod.LightningCLI):
            def fit(self, **kwargs):  # the subcommand runs this instead of trainer.fit
                self.fit_kwargs = kwargs

        parser_kwargs = {"default_env": True, "fit": {"default_config_files": [str(tmp_path / "fit_defaults.yaml")]}}
        cli = make_cli(L, ["fit"], tmp_path, cli_class=NoRunCLI, parser_kwargs=parser_kwargs)
        seen[name] = (cli.trainer.max_epochs, cli.model.hparams.hidden, cli.model.hparams.lr,
                      sorted(cli.fit_kwargs), type(cli.fit_kwargs["model"]).__name__)
    assert seen["lightning"] == (6, 5, 0.25, ["ckpt_path", "datamodule", "model", "weights_only"], "CLIModel")
    assert seen["trainer"] == seen["lightning"]


def test_instantiate_class():
    from trainer.cli import instantiate_class

    layer = torch.nn.Linear(2, 2)
    optimizer = instantiate_class(layer.parameters(), {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.3}})
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["lr"] == 0.3
    with pytest.raises(ValueError, match="dotted import path like 'torch.optim.SGD', got 'SGD'"):
        instantiate_class(layer.parameters(), {"class_path": "SGD"})
    with pytest.raises(ValueError, match="must be a dict with a 'class_path' key"):
        instantiate_class(layer.parameters(), {"init_args": {}})


def test_more_than_one_automatic_optimizer_is_refused_like_lightning(tmp_path):
    results = []
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        mod = cli_module(L)

        class TwoOptimizersCLI(mod.LightningCLI):
            def add_arguments_to_parser(self, parser):
                parser.add_optimizer_args(torch.optim.SGD, nested_key="opt1")
                parser.add_optimizer_args(torch.optim.Adam, nested_key="opt2")

        results.append(outcome(lambda: make_cli(L, [], tmp_path, cli_class=TwoOptimizersCLI, run=False)))
    assert results[0][0] == "MisconfigurationException" and "expects at most one optimizer" in results[0][1]
    assert results[1][:2] == results[0][:2]


def test_config_lands_in_the_default_loggers_version_folder(tmp_path):
    found = {}
    for name in ("lightning", "trainer"):
        root = tmp_path / name
        make_cli(import_framework(name), ["fit", "--trainer.max_epochs=1", f"--trainer.default_root_dir={root}"],
                 root, trainer_defaults=QUIET)
        found[name] = sorted(str(p.relative_to(root)) for p in root.rglob("config.yaml"))
    assert found["lightning"] == ["lightning_logs/version_0/config.yaml"]
    assert found["trainer"] == found["lightning"]


@functools.lru_cache(maxsize=None)
def _encoder_model(L: ModuleType) -> type:
    class EncoderModel(L.LightningModule):
        def __init__(self, encoder: torch.nn.Module, scale: float = 1.0):
            super().__init__()
            self.save_hyperparameters()
            self.encoder = encoder
            self.head = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.head(self.encoder(x)) * self.hparams.scale, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return EncoderModel


@pytest.mark.parametrize("support", [True, False])
def test_load_from_checkpoint_support_matches_lightning(tmp_path, support):
    """``LightningCLI(load_from_checkpoint_support=True)``: the model saves its parsed config (the nested encoder as
    ``class_path``/``init_args``) and ``Model.load_from_checkpoint`` rebuilds it from that; with ``False`` the
    hyper-parameters hold the encoder object itself."""
    seen = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        model_cls, root = _encoder_model(L), tmp_path / name
        args = ["fit", "--trainer.max_steps=2", f"--trainer.default_root_dir={root}", "--trainer.logger=false",
                "--model.encoder=torch.nn.Linear", "--model.encoder.in_features=8", "--model.encoder.out_features=8",
                "--model.scale=0.5"]
        cli = cli_module(L).LightningCLI(model_cls, classes(L)[1], args=args, trainer_defaults=QUIET,
                                         load_from_checkpoint_support=support)
        ckpt = cli.trainer.checkpoint_callback.best_model_path
        saved = torch.load(ckpt, weights_only=False)["hyper_parameters"]
        instantiator = saved.pop("_instantiator", None)
        try:  # the default weights_only load refuses a pickled module (support=False saves the object)
            model_cls.load_from_checkpoint(ckpt)
            default_load = "ok"
        except Exception as exc:  # noqa: BLE001 - compared below
            default_load = type(exc).__name__
        loaded = model_cls.load_from_checkpoint(ckpt, weights_only=False)
        seen[name] = {
            "default load": default_load,
            "hparams": {k: (v if isinstance(v, (dict, float)) else type(v).__name__) for k, v in saved.items()},
            "instantiator": instantiator and instantiator.split(".", 1)[1],
            "encoder": (type(loaded.encoder).__name__, tuple(loaded.encoder.weight.shape)),
            "weights equal": torch.equal(loaded.encoder.weight, cli.model.encoder.weight),
            "scale": loaded.hparams.scale,
        }
    pl = seen["lightning"]
    assert pl["encoder"] == ("Linear", (8, 8)) and pl["weights equal"] and pl["scale"] == 0.5
    if support:
        assert pl["instantiator"] == "cli.instantiate_module" and pl["default load"] == "ok"
        assert pl["hparams"]["encoder"]["class_path"] == "torch.nn.Linear"
    else:
        assert pl["instantiator"] is None and pl["hparams"]["encoder"] == "Linear"
        # Lightning's default weights_only load refuses the pickled module; ours reads it (trainer.checkpoint's
        # loader, outside the CLI), so that one entry is not compared here
        assert pl["default load"] == "UnpicklingError"
        pl.pop("default load"), seen["trainer"].pop("default load")
    assert seen["trainer"] == pl


def test_load_from_checkpoint_refuses_an_untrusted_instantiator(tmp_path):
    """Lightning's allowlist: a checkpoint naming another instantiator is refused before anything runs."""
    import trainer as L

    model_cls = _encoder_model(L)
    model = model_cls(torch.nn.Linear(8, 8))
    path = tmp_path / "m.ckpt"
    checkpoint = {"state_dict": model.state_dict(), "pytorch-lightning_version": "2.6.6",
                  "hyper_parameters": {"encoder": {"class_path": "torch.nn.Linear"}, "_instantiator": "os.system"}}
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="'os.system' from the checkpoint is not in the allowlist"):
        model_cls.load_from_checkpoint(path)
