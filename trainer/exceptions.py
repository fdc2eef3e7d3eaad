"""Exceptions raised by the Trainer."""


class MisconfigurationException(ValueError):
    """A Trainer, module or callback was given a value it cannot use.

    A ``ValueError`` subclass (as in Lightning), so ``except ValueError`` catches it too.
    """
