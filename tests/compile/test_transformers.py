"""The compiled engine on model code nobody here wrote: Hugging Face ``transformers`` models built from
small configs (random weights, no download), trained through the Lightning API under pytorch-lightning
and under trainer's default engine. The losses of every step must agree (fp32: inductor's kernels round
differently from eager, so within 1e-5 relative) and the step must be compiled, never silently eager.

BERT is the case of issue 13: its padding mask is checked with ``padding_mask.all()`` unless the code
is being compiled (``torch.compiler.is_compiling()``); both of trainer's tracers now see it compiling.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import transformers  # noqa: F401  (test extra: pip install -e .[test])
from helpers.frameworks import import_framework
from torch.utils.data import DataLoader

from trainer.compile.engine import CompileWarning

pytestmark = pytest.mark.slow

STEPS = 6
DROPOUT = 0.1


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                     vocab_size=128, max_position_embeddings=32, num_labels=3, hidden_dropout_prob=DROPOUT,
                     attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=32, vocab_size=128, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def _batches(kind: str, n: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 128, (4, 32), generator=g)
        if kind == "bert":
            lengths = torch.tensor([32, 20, 9, 27])  # padding in every batch but one row
            mask = (torch.arange(32)[None, :] < lengths[:, None]).long()
            out.append({"input_ids": ids * mask, "attention_mask": mask, "labels": torch.randint(0, 3, (4,), generator=g)})
        else:
            out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def _fit(framework: str, kind: str, **trainer_kw):
    L = import_framework(framework)

    class HF(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = _bert() if kind == "bert" else _gpt2()
            self.losses = []

        def training_step(self, batch, batch_idx):
            loss = self.model(**batch).loss
            self.log("train_loss", loss)
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    model = HF()
    k = trainer_kw.get("accumulate_grad_batches", 1)
    if framework == "trainer":
        trainer_kw = dict(trainer_kw, compile=True)  # the default engine (the suite's default is eager)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kw)
    torch.manual_seed(1)  # the dropout masks: the same generator state in both frameworks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, DataLoader(_batches(kind, STEPS * k), batch_size=None))
    return model, trainer, [w for w in caught if issubclass(w.category, CompileWarning)]


@pytest.mark.parametrize("kind, trainer_kw", [
    ("bert", {}),
    ("gpt2", dict(accumulate_grad_batches=2, gradient_clip_val=0.5)),
], ids=["bert_padding_dropout", "gpt2_accumulate_clip"])
def test_transformers_model_trains_compiled_like_lightning(kind, trainer_kw):
    pl_model, _, _ = _fit("lightning", kind, **trainer_kw)
    model, trainer, warned = _fit("trainer", kind, **trainer_kw)
    report = trainer.compile_report
    assert not warned, [str(w.message) for w in warned]
    assert report.mode == "full", str(report)  # one graph: forward, backward, clipping, accumulation, update
    # at most the first step eager: transformers sets config.problem_type at the first call (BERT) and the
    # engine captures again after one eager step; its warning_once calls need no eager step
    assert report.steps_run >= len(pl_model.losses) - trainer_kw.get("accumulate_grad_batches", 1)
    torch.testing.assert_close(torch.tensor(model.losses), torch.tensor(pl_model.losses), rtol=1e-5, atol=1e-6)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, pl_model.state_dict()[key], rtol=1e-4, atol=1e-5)
