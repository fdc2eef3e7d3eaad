"""The compiled engine never silently changes what a training step computes (trainer/compile/guards.py).

Each case is an ordinary LightningModule whose step depends on Python state outside its own
``training_step`` bytecode: a helper reading ``current_epoch`` or ``global_step``, an attribute a
callback sets, a module-level value, a side effect in a helper, a logged value under a Python
``if``, a torchmetrics metric, the optimizer's lr, ``requires_grad`` / ``train()`` / dropout ``p``
changed by a callback. The same script runs under pytorch-lightning, under trainer's eager engine
and under trainer's default (compiled) engine; the weights must agree within 1e-6 (fp32), side
effects must run as often as in Lightning, and the compiled engine must say what it did: captured
again when the value changed (``recompiles``, ``recompile_reasons``), or fell back to eager with
one ``CompileWarning`` naming the cause.
"""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers.frameworks import import_framework
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainer.compile.engine import CompileWarning

EPOCHS = 3  # 4 batches each: 12 optimizer steps
SCALE = 1.0  # read by a training_step, changed by a callback (case "module_global")
WEIGHTS = torch.ones(4)  # per-output loss weights read by a training_step (case "global_tensor")
TOKENS = torch.randint(0, 20, (16, 3), generator=torch.Generator().manual_seed(5))  # "embedding_max_norm_..."


def _data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 4, generator=g))


def _base(L, bn: bool = False, dropout: float = 0.0, momentum: float = 0.0):
    class Base(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            layers = [nn.Linear(8, 16)]
            if bn:
                layers.append(nn.BatchNorm1d(16))
            layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 4)]
            self.net = nn.Sequential(*layers)

        def mse(self, batch):
            x, y = batch
            return F.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=momentum)

    return Base


# ---------------------------------------------------------------------------------------- the cases
def case_epoch_helper(L):
    class M(_base(L)):
        def kl_weight(self):  # KL/curriculum annealing in a helper
            return min(1.0, 0.25 * (1 + self.current_epoch))

        def training_step(self, batch, batch_idx):
            return self.mse(batch) * self.kl_weight()

    return M(), []


def case_global_step_helper(L):
    class M(_base(L)):
        def warm(self):
            return 1.0 + 0.05 * self.trainer.global_step

        def training_step(self, batch, batch_idx):
            return self.mse(batch) * self.warm()

    return M(), []


def case_helper_appends(L):
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.seen = []

        def record(self, loss):
            self.seen.append(loss.detach())
            return loss

        def training_step(self, batch, batch_idx):
            return self.record(self.mse(batch))

    return M(), []


def case_float_attribute_decayed_in_step(L):
    """Lightning's own test_top_k: the step reads a float attribute and decays it (``self.c *= 0.999``). A
    side effect, so regions; plain torch.compile of such a training step stops writing the attribute back
    once dynamo makes the float symbolic (torch 2.13), so the regions specialise floats."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.last_coeff = 10.0

        def training_step(self, batch, batch_idx):
            loss = self.mse(batch) + self.last_coeff
            self.log("coeff_loss", loss)
            self.last_coeff *= 0.999
            return loss

    return M(), []


def case_callback_attribute(L):
    class M(_base(L)):
        beta = 1.0

        def training_step(self, batch, batch_idx):
            return self.mse(batch) * self.beta

    class Anneal(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            pl_module.beta = 1.0 / (1 + trainer.current_epoch)

    return M(), [Anneal()]


def case_module_global(L):
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch) * SCALE

    class Decay(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            module = sys.modules[__name__]
            module.SCALE = module.SCALE * 0.9

    return M(), [Decay()]


def case_annealed_every_step(L):
    class M(_base(L)):
        beta = 1.0

        def training_step(self, batch, batch_idx):
            self.log("beta", self.beta)
            return self.mse(batch) * self.beta

    class Anneal(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pl_module.beta = 0.5 + 0.5 / (1 + trainer.global_step)

    return M(), [Anneal()]


def case_float_in_python_branch(L):
    class M(_base(L)):
        beta = 1.0

        def training_step(self, batch, batch_idx):
            loss = self.mse(batch)
            if self.beta > 0.7:  # a Python decision on the value: it cannot be a graph input
                loss = loss * 2
            return loss * self.beta

    class Anneal(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pl_module.beta = 1.0 / (1 + 0.1 * trainer.global_step)

    return M(), [Anneal()]


def case_log_every_k(L):
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            loss = self.mse(batch)
            if self.global_step % 3 == 0:
                self.log("sampled_loss", loss * 2)
            return loss

    return M(), []


def case_torchmetrics(L):
    import torchmetrics  # installed with pytorch-lightning (test extra)

    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.metric = torchmetrics.MeanSquaredError()

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self.net(x)
            self.metric(out, y)
            self.log("train_mse", self.metric, on_step=False, on_epoch=True)
            return F.mse_loss(out, y)

    return M(), []


def case_reads_lr(L):
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            return self.mse(batch) * (lr * 10)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def lr_seen(self):
            return self.trainer.optimizers[0].param_groups[0]["lr"]

    return M(), []


def case_requires_grad_toggle(L):
    class M(_base(L, momentum=0.9)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class Unfreeze(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            pl_module.net[0].requires_grad_(trainer.current_epoch >= 1)

    return M(), [Unfreeze()]


def case_submodule_mode(L):
    class M(_base(L, bn=True)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class FreezeStats(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            pl_module.net[1].train(trainer.current_epoch != 1)  # BatchNorm in eval mode in epoch 1 only

    return M(), [FreezeStats()]


def case_dropout_p(L):
    class M(_base(L, dropout=0.0)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class DropMore(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            pl_module.net[2].p = 0.0 if trainer.current_epoch == 0 else 0.5

    return M(), [DropMore()]


def case_reads_weight_in_outputs(L):
    """The loss and a logged value are pointwise functions of a weight the update overwrites in place:
    both must be the values before the update (inductor computed them lazily, after it: ``reads_before_writes``)."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.history = []

        def training_step(self, batch, batch_idx):
            w = self.net[0].weight[0, 0]
            self.log("w00x2", w * 2)
            return self.mse(batch) + 1e-3 * w

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.history.append((float(outputs["loss"]), float(self.trainer.callback_metrics["w00x2"])))

    return M(), []


def case_aliased_submodule(L):
    """The same submodule under two attribute names (``self.fwd = self.net``): the capture's stand-in tensors
    must leave both names (it left plain tensors under one, and the next step trained those)."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.fwd = self.net

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.fwd(x), y)

    return M(), []


def case_global_tensor(L):
    """Loss weights in a module-level tensor: a callback rebinds the global every epoch and scales it in
    place after every batch; each step must read the tensor there now (a graph input, not a constant)."""
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.net(x) - y) ** 2 * WEIGHTS).mean()

    class Reweigh(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            sys.modules[__name__].WEIGHTS = torch.linspace(0.5, 2.0, 4) * (1 + trainer.current_epoch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            WEIGHTS.mul_(0.9)

    return M(), [Reweigh()]


def case_attribute_closure_and_list_tensors(L):
    """Tensors in a plain attribute (not a buffer), a closure and a list, one of them counted up in place by
    the step itself and one replaced by a callback: all read as they are at each step."""
    offset = torch.full((4,), 0.1)

    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.temperature = torch.tensor(2.0)
            self.table = [torch.zeros(4)]
            self.calls = torch.zeros((), dtype=torch.int64)

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.calls.add_(1)
            out = self.net(x) / self.temperature + offset + self.table[0]
            self.log("calls", self.calls.float())
            return F.mse_loss(out, y)

    class Cool(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            pl_module.temperature = torch.tensor(2.0 / (1 + trainer.current_epoch))
            pl_module.table[0] = torch.full((4,), 0.05 * trainer.current_epoch)

    return M(), [Cool()]


def case_tensor_needing_grad(L):
    """A tensor that needs a gradient but is no parameter: eager accumulates its ``.grad``, which a graph
    input would not: the step runs eagerly, saying why."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.__dict__["gain"] = torch.ones(4, requires_grad=True)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x) * self.gain, y)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.history = getattr(self, "history", [])
            self.history.append(tuple(self.gain.grad.tolist()))

    return M(), []


# What the compiled engine must report for each case: ("recompiles", n) = captured again n times and
# stayed one graph; ("regions", text) = not one graph (text: the cause), so training_step ran as compiled
# regions (trainer/compile/regions.py) without a warning; ("eager", text) = fell back with one
# CompileWarning containing text.
def case_buffer_counter_in_step(L):
    """``self.count += 1`` on a registered buffer: the store puts back the tensor ``+=`` changed in place
    (no side effect: one graph); the loss reads the new count."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def training_step(self, batch, batch_idx):
            self.count += 1
            return self.mse(batch) * (1 + 0.05 * self.count)

    return M(), []


def case_buffer_changed_in_place_in_regions(L):
    """A step that is regions (a data-dependent branch) and changes a buffer in place that its loss reads:
    AOTAutograd (torch 2.13, plain torch.compile too) differentiates that loss with the buffer's value after
    the change, so that region runs eagerly."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def training_step(self, batch, batch_idx):
            x, y = batch
            if x.sum() > 1e6:  # never taken, but a graph break
                x = x * 0
            self.count.add_(1)
            return F.mse_loss(self.net(x), y) * (1 + 0.05 * self.count)

    return M(), []


def case_data_assigned_by_callback(L):
    """A callback gives a weight new storage (``p.data = ...``) between steps: the graphs held the old one."""
    class M(_base(L, momentum=0.9)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class Shrink(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                pl_module.net[0].weight.data = pl_module.net[0].weight.data * 0.5

    return M(), [Shrink()]


def case_buffer_replaced_by_callback(L):
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.register_buffer("gain", torch.ones(()))

        def training_step(self, batch, batch_idx):
            return self.mse(batch) * self.gain

    class Replace(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                pl_module.gain = torch.full((), 0.5)  # a new tensor registered under the buffer's name

    return M(), [Replace()]


def case_optimizer_state_reloaded(L):
    """``optimizer.load_state_dict`` mid-fit puts new state tensors in place of the ones the graph updates."""
    class M(_base(L, momentum=0.9)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class Reset(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                opt = trainer.optimizers[0]
                state = opt.state_dict()
                for entry in state["state"].values():
                    entry["momentum_buffer"] = entry["momentum_buffer"] * 0
                opt.load_state_dict(state)

    return M(), [Reset()]


def case_data_assigned_in_step(L):
    """``.data`` assigned inside the step (regions): the compiled update must update the new storage."""
    class M(_base(L, momentum=0.9)):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                self.net[0].bias.data = self.net[0].bias.data * 0.5
            return self.mse(batch)

    return M(), []


def case_gradient_hook_at_init(L):
    """``Tensor.register_hook`` on a weight: eager's backward runs it; a graph that computes the gradients
    itself would not (regions: autograd's backward)."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.net[0].weight.register_hook(lambda g: g * 0.1)

        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    return M(), []


def _shrink_grad(p):
    p.grad.mul_(0.1)


def case_post_accumulate_grad_hook(L):
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.net[0].bias.register_post_accumulate_grad_hook(_shrink_grad)

        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    return M(), []


def _hook_added_at_epoch_1(L, add):
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            return self.mse(batch)

    class AddHook(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                add(pl_module.net)

    return M(), [AddHook()]


def case_forward_hook_added_by_callback(L):
    return _hook_added_at_epoch_1(L, lambda net: net[0].register_forward_hook(lambda mod, args, out: out * 0.5))


def case_gradient_hook_added_by_callback(L):
    return _hook_added_at_epoch_1(L, lambda net: net[-1].weight.register_hook(lambda g: g * 0.1))


def case_backward_hook_added_by_callback(L):
    return _hook_added_at_epoch_1(L, lambda net: net[-1].register_full_backward_hook(
        lambda mod, grad_in, grad_out: (grad_in[0] * 0.1,)))


def case_embedding_max_norm_beside_dropout(L):
    """Dropout in a graph where inductor fused the mask's readers with the kernel that allocates the mask,
    ahead of ``bernoulli_`` filling it (torch 2.13; here beside an ``nn.Embedding(max_norm=...)``)."""
    class M(_base(L, dropout=0.3)):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 4, max_norm=0.5)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x) + self.emb(TOKENS).sum(1), y)

    return M(), []


def case_double_backward(L):
    """A gradient penalty (``torch.autograd.grad(..., create_graph=True)``): compiled regions would crash
    in the second backward (AOTAutograd has no double backward), so the step runs eagerly."""
    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            x = x.clone().requires_grad_(True)
            out = self.net(x)
            (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
            return F.mse_loss(out, y) + 0.1 * g.pow(2).mean()

    return M(), []


def case_buffer_replaced_every_step(L):
    """A callback that registers a new tensor under a buffer's name before every step: after two changes in
    a row the step leaves the one-graph tiers (regions) instead of being set up again at every step."""
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.register_buffer("gain", torch.ones(()))

        def training_step(self, batch, batch_idx):
            return self.mse(batch) * self.gain

    class Replace(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pl_module.gain = torch.full((), 1.0 / (1 + trainer.global_step))

    return M(), [Replace()]


CASES = {
    "epoch_helper": (case_epoch_helper, ("recompiles", 2)),
    "global_step_helper": (case_global_step_helper, ("regions", "at every step")),
    "helper_appends": (case_helper_appends, ("regions", "self.seen")),
    "float_attribute_decayed_in_step": (case_float_attribute_decayed_in_step, ("regions", "self.last_coeff")),
    "callback_attribute": (case_callback_attribute, ("recompiles", 2)),
    "module_global": (case_module_global, ("recompiles", 2)),  # SCALE becomes a graph input
    "annealed_every_step": (case_annealed_every_step, ("recompiles", 2)),
    "float_in_python_branch": (case_float_in_python_branch, ("regions", "cannot be a graph input")),
    "log_every_k": (case_log_every_k, ("regions", "at every step")),
    "torchmetrics": (case_torchmetrics, ("regions", "")),
    "reads_lr": (case_reads_lr, ("regions", "at every step")),
    "requires_grad_toggle": (case_requires_grad_toggle, ("recompiles", 1)),
    "submodule_mode": (case_submodule_mode, ("recompiles", 2)),
    "dropout_p": (case_dropout_p, ("recompiles", 1)),
    "reads_weight_in_outputs": (case_reads_weight_in_outputs, ("recompiles", 0)),
    "aliased_submodule": (case_aliased_submodule, ("recompiles", 0)),
    "global_tensor": (case_global_tensor, ("recompiles", 0)),
    "attribute_closure_and_list_tensors": (case_attribute_closure_and_list_tensors, ("recompiles", 0)),
    "tensor_needing_grad": (case_tensor_needing_grad, ("regions", "`self.gain`, a tensor that needs a gradient")),
    "buffer_counter_in_step": (case_buffer_counter_in_step, ("recompiles", 0)),
    "buffer_changed_in_place_in_regions": (case_buffer_changed_in_place_in_regions, ("regions", "not one graph")),
    "data_assigned_by_callback": (case_data_assigned_by_callback, ("recompiles", 1)),
    "buffer_replaced_by_callback": (case_buffer_replaced_by_callback, ("recompiles", 1)),
    "optimizer_state_reloaded": (case_optimizer_state_reloaded, ("recompiles", 1)),
    "data_assigned_in_step": (case_data_assigned_in_step, ("regions", "`.data`")),
    "gradient_hook_at_init": (case_gradient_hook_at_init, ("regions", "`net.0.weight` has a gradient hook")),
    "post_accumulate_grad_hook": (case_post_accumulate_grad_hook, ("regions", "`net.0.bias` has a gradient hook")),
    "forward_hook_added_by_callback": (case_forward_hook_added_by_callback, ("recompiles", 1)),
    "gradient_hook_added_by_callback": (case_gradient_hook_added_by_callback, ("regions", "gradient hook")),
    "backward_hook_added_by_callback": (case_backward_hook_added_by_callback, ("regions", "`net.3` has a backward hook")),
    "embedding_max_norm_beside_dropout": (case_embedding_max_norm_beside_dropout, ("recompiles", 0)),
    "double_backward": (case_double_backward, ("eager", "differentiates twice")),
    "buffer_replaced_every_step": (case_buffer_replaced_every_step, ("regions", "changed at every step")),
}


def _fit(name: str, framework: str, compile_on=None):
    global SCALE, WEIGHTS
    SCALE = 1.0
    WEIGHTS = torch.ones(4)
    L = import_framework(framework)
    model, callbacks = CASES[name][0](L)
    kwargs = dict(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    if compile_on is not None:
        kwargs["compile"] = compile_on
    torch.manual_seed(0)
    trainer = L.Trainer(**kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, DataLoader(_data(), batch_size=16))
    compile_warnings = [w for w in caught if issubclass(w.category, CompileWarning)]
    return model, trainer, compile_warnings


def _observed(model, trainer):
    """What a user can see besides the weights: side effects, logged values, the metric."""
    out = {"SCALE": SCALE, "global_step": trainer.global_step}
    for i, w in enumerate(WEIGHTS.tolist()):
        out[f"WEIGHTS[{i}]"] = w
    if hasattr(model, "seen"):
        out["seen"] = len(model.seen)
    if hasattr(model, "last_coeff"):
        out["last_coeff"] = model.last_coeff
    for i, step in enumerate(getattr(model, "history", ())):
        for j, value in enumerate(step):
            out[f"history[{i}][{j}]"] = value
    for key, value in trainer.callback_metrics.items():
        out[key] = float(value)
    return out


@pytest.fixture(scope="module")
def lightning_runs():
    return {}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_step_matches_lightning(name, lightning_runs):
    pl_model, pl_trainer, _ = _fit(name, "lightning")
    eager_model, eager_trainer, _ = _fit(name, "trainer", compile_on=False)
    model, trainer, compile_warnings = _fit(name, "trainer", compile_on=True)

    pl_state = pl_model.state_dict()
    for framework_model, what in ((eager_model, "eager engine"), (model, "compiled engine")):
        for key, value in framework_model.state_dict().items():
            torch.testing.assert_close(value, pl_state[key], rtol=0, atol=1e-6,
                                       msg=lambda m: f"{name}: {what} {key} differs from Lightning: {m}")
    expected = _observed(pl_model, pl_trainer)
    for got in (_observed(eager_model, eager_trainer), _observed(model, trainer)):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), (name, key)

    report = trainer.compile_report
    kind, detail = CASES[name][1]
    if kind == "recompiles":
        assert report.mode == "full", (name, str(report))
        assert report.recompiles == detail and len(report.recompile_reasons) == detail, (name, str(report))
        assert not compile_warnings, [str(w.message) for w in compile_warnings]
    elif kind == "regions":
        assert report.mode == "regions", (name, str(report))
        assert detail in report.fallback_reason, (name, report.fallback_reason)
        # a side effect gets one eager step before the second capture attempt (it may happen once only)
        assert report.steps_run >= 4 * EPOCHS - 1 and report.regions, (name, str(report))
        assert not compile_warnings, [str(w.message) for w in compile_warnings]
    else:
        assert report.mode == "eager", (name, str(report))
        assert len(compile_warnings) == 1, [str(w.message) for w in compile_warnings]
        assert detail in str(compile_warnings[0].message) and detail in report.fallback_reason


def test_recompile_reason_names_the_value():
    _, trainer, _ = _fit("callback_attribute", "trainer", compile_on=True)
    assert trainer.compile_report.recompile_reasons == ["self.beta == 1.0", "self.beta == 0.5"]


@pytest.mark.parametrize("name, reason", [
    ("data_assigned_by_callback", "`net.0.weight` holds new data (`.data` was assigned)"),
    ("buffer_replaced_by_callback", "`gain` was replaced by another tensor"),
    ("optimizer_state_reloaded", "the optimizer's state was replaced (load_state_dict)"),
])
def test_a_tensor_moved_between_steps_is_named(name, reason):
    _, trainer, _ = _fit(name, "trainer", compile_on=True)
    assert trainer.compile_report.recompile_reasons == [reason]


def test_a_region_changing_an_input_its_gradient_reads_runs_eagerly():
    _, trainer, _ = _fit("buffer_changed_in_place_in_regions", "trainer", compile_on=True)
    eager = [r for r in trainer.compile_report.regions if "runs eagerly" in r]
    assert len(eager) == 1 and "`self.count` in place" in eager[0], trainer.compile_report.regions


@pytest.mark.parametrize("how", ["+=", "add_", "add_ after the loss"])
def test_the_region_backend_differentiates_what_eager_does(how):
    """torch.compile of a step that changes a buffer its loss reads, with the regions' backend: eager's
    gradient (inductor's own AOTAutograd path reads the changed value in the backward, torch 2.13)."""
    from trainer.compile.regions import _backend

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(8, 4)
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x, y):
            if how == "+=":
                self.count += 1
            elif how == "add_":
                self.count.add_(1)
            loss = F.mse_loss(self.net(x), y) * (1 + 0.01 * self.count)
            if how == "add_ after the loss":
                self.count.add_(1)
            return loss

    x, y = torch.randn(16, 8), torch.randn(16, 4)
    grads = []
    for compiled in (False, True):
        torch._dynamo.reset()
        m = Counter()
        step = torch.compile(m, backend=_backend) if compiled else m
        for _ in range(2):
            m.zero_grad()
            step(x, y).backward()
        grads.append((m.net.weight.grad.clone(), m.count.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-7)
    assert float(grads[1][1]) == float(grads[0][1]) == 2.0


def test_a_float_changing_every_step_becomes_a_graph_input():
    _, trainer, _ = _fit("module_global", "trainer", compile_on=True)
    report = trainer.compile_report
    assert report.recompile_reasons[-1] == "SCALE == 0.9 (changes at every step: now a graph input)"
    assert report.steps_run == 4 * EPOCHS  # every step ran compiled


def test_strict_mode_raises_on_a_side_effect():
    from trainer.compile import CompileError

    with pytest.raises(CompileError, match=r"self\.seen"):
        _fit("helper_appends", "trainer", compile_on="strict")


def test_a_compiler_failure_falls_back_with_one_warning(monkeypatch):
    """An error inside inductor (or its C++/Triton codegen) ends in the eager engine, not in a crash."""
    from trainer.compile import engine

    def broken(gm, example_inputs):
        raise RuntimeError("C++ compile error: something inductor could not build\nmore detail")

    monkeypatch.setattr(engine, "_compile_graph", broken)
    pl_model, _, _ = _fit("epoch_helper", "lightning")
    model, trainer, compile_warnings = _fit("epoch_helper", "trainer", compile_on=True)
    assert trainer.compile_report.mode == "eager"
    assert len(compile_warnings) == 1
    assert "the compiler failed" in str(compile_warnings[0].message)
    assert "C++ compile error" in str(compile_warnings[0].message)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, pl_model.state_dict()[key], rtol=0, atol=1e-6)


# ------------------------------------------------------------------ state set once, restored, or compile-aware
_ACTIVE = None  # set and put back by a context manager inside a step (case "restored_global")


class _Activate:
    def __enter__(self):
        global _ACTIVE
        self.old, _ACTIVE = _ACTIVE, "collecting"

    def __exit__(self, *exc):
        global _ACTIVE
        _ACTIVE = self.old


def _three_way(build):
    """(Lightning model, eager-engine model, compiled model and trainer, compile warnings) for ``build(L)``."""
    kwargs = dict(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    out = []
    for framework, compile_on in (("lightning", None), ("trainer", False), ("trainer", True)):
        L = import_framework(framework)
        model = build(L)
        torch.manual_seed(0)
        trainer = L.Trainer(**kwargs, **({} if compile_on is None else {"compile": compile_on}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, DataLoader(_data(), batch_size=16))
        out.append((model, trainer, [w for w in caught if issubclass(w.category, CompileWarning)]))
    pl_state = out[0][0].state_dict()
    for model, _, _ in out[1:]:
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, pl_state[key], rtol=0, atol=1e-6)
    return out


def test_state_set_at_the_first_step_only_is_captured_from_the_second():
    """transformers' ``config.problem_type = ...`` at the first forward: a side effect once, then none. The
    first step runs eagerly (the write happens, as in Lightning), the second is captured as one graph."""
    def build(L):
        class M(_base(L)):
            problem_type = None

            def training_step(self, batch, batch_idx):
                if self.problem_type is None:
                    self.problem_type = "regression"
                return self.mse(batch)

        return M()

    (pl_model, _, _), _, (model, trainer, warned) = _three_way(build)
    report = trainer.compile_report
    assert model.problem_type == pl_model.problem_type == "regression"
    assert report.mode == "full" and not warned, str(report)
    assert report.steps_run == 4 * EPOCHS - 1, str(report)  # all but the first
    assert report.recompile_reasons == ["captured again after one eager step: `training_step` changes"
                                        " `self.problem_type` (a Python side effect that a graph would run once,"
                                        " at capture, instead of every step)"]


def test_a_message_logged_once_is_logged_once_and_the_step_is_one_graph_from_the_first(caplog):
    """transformers' ``logger.warning_once`` (an ``lru_cache``-d Logger method dynamo cannot trace) in
    the step: every step runs compiled, the first included, and the message is logged once, at the first
    step, as in Lightning (the capture's trace runs the call for real)."""
    import logging

    import transformers.utils.logging  # noqa: F401  (installs Logger.warning_once)

    log = logging.getLogger("trainer_tests.once")

    def build(L):
        class M(_base(L)):
            def training_step(self, batch, batch_idx):
                log.warning_once("this step is configured in an unusual way")
                return self.mse(batch)

        return M()

    def fits():
        with caplog.at_level(logging.WARNING, logger="trainer_tests.once"):
            return _three_way(build)

    # each fit's first call logs, as in a fresh process
    (_, _, _), _, (_, trainer, warned) = _once_per_fit(fits, logging.Logger.warning_once)
    report = trainer.compile_report
    assert report.mode == "full" and not warned, str(report)
    assert report.steps_run == 4 * EPOCHS, str(report)  # the first step too: no eager step, no second trace
    assert not report.recompile_reasons, report.recompile_reasons
    messages = [r.getMessage() for r in caplog.records if r.name == "trainer_tests.once"]
    assert messages == ["this step is configured in an unusual way"] * 3  # once in each of the three fits


def _once_per_fit(fits, once):
    """``fits()`` with ``once``'s cache cleared before each of its three fits (Lightning, eager, compiled)."""
    import pytorch_lightning

    import trainer as trainer_pkg

    original = {}
    for mod in (pytorch_lightning.Trainer, trainer_pkg.Trainer):
        original[mod] = mod.fit

        def fit(self, *args, _orig=mod.fit, **kwargs):
            once.cache_clear()
            return _orig(self, *args, **kwargs)

        mod.fit = fit
    try:
        return fits()
    finally:
        for mod, f in original.items():
            mod.fit = f


def test_a_global_set_and_restored_within_the_step_is_no_side_effect():
    def build(L):
        class M(_base(L)):
            def training_step(self, batch, batch_idx):
                with _Activate():
                    loss = self.mse(batch)
                return loss

        return M()

    _, _, (_, trainer, warned) = _three_way(build)
    assert _ACTIVE is None
    assert trainer.compile_report.mode == "full" and not warned, str(trainer.compile_report)
    assert trainer.compile_report.recompile_reasons == []


def test_code_branching_on_is_compiling_is_traced_one_way():
    """Both tracers (dynamo for the guards, make_fx for the graph) see ``torch.compiler.is_compiling()`` True,
    so they trace the same path: here the data-dependent check that compiled code skips."""
    def build(L):
        class M(_base(L)):
            def training_step(self, batch, batch_idx):
                x, y = batch
                if not torch.compiler.is_compiling() and bool((x.abs() > 1e6).any()):
                    raise ValueError("inputs out of range")
                return self.mse(batch)

        return M()

    _, _, (_, trainer, warned) = _three_way(build)
    assert trainer.compile_report.mode == "full" and not warned, str(trainer.compile_report)
