"""Lightning's ``utilities.model_helpers``: ``is_overridden(method_name, instance, parent=None)``."""
from trainer.hooks import is_overridden

__all__ = ["is_overridden"]
