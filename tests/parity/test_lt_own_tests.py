"""Parity for behaviours found by running Lightning 2.6's own tests on trainer (/work/notes/lt_report.md)."""

import pytest

from tests.helpers import import_framework


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
@pytest.mark.parametrize("overfit_batches", [1, 0.25])
def test_validation_step_set_to_none_skips_validation(tmp_path, framework, overfit_batches):
    """`model.validation_step = None` means no validation (Lightning's is_overridden): no sanity check, no
    val batches, fit completes (trainer ran the sanity check and crashed on inspect.signature(None))."""
    L = import_framework(framework)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            raise AssertionError("validation must not run")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)

    model = Model()
    model.validation_step = None
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, overfit_batches=overfit_batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    assert trainer.num_val_batches == []
    assert trainer.num_training_batches == 1
    assert trainer.state.finished
