"""``lightning.pytorch.core.mixins``'s name at its Lightning path."""
from trainer.module import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
