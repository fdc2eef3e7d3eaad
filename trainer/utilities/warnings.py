"""Warning classes at Lightning's path (``lightning.pytorch.utilities.warnings``).

``from trainer.utilities.warnings import PossibleUserWarning`` works as Lightning's import does.
"""
from __future__ import annotations


class PossibleUserWarning(UserWarning):
    """A warning about something that is probably, but not surely, a mistake in the user's setup
    (Lightning's class of the same name: filter it with ``warnings.filterwarnings("ignore",
    category=PossibleUserWarning)``)."""


__all__ = ["PossibleUserWarning"]
