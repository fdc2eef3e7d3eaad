"""``is_overridden`` at Lightning's public path (``lightning.pytorch.utilities.model_helpers``), with Lightning's
semantics; see :func:`trainer.hooks.lightning_is_overridden`."""

from trainer.hooks import lightning_is_overridden as is_overridden

__all__ = ["is_overridden"]
