"""Exceptions raised by the Trainer."""


class MisconfigurationException(ValueError):
    """A Trainer, module or callback was given a value it cannot use.

    A ``ValueError`` subclass (as in Lightning), so ``except ValueError`` catches it too.
    """


class _TunerExitException(Exception):
    """Raised by the tuner's callbacks (``Tuner.lr_find``/``scale_batch_size``) to end the ``fit``/``validate``/...
    call that ran them once the search is done (Lightning's name; the Trainer finishes the call normally)."""


class SIGTERMException(SystemExit):
    """Raised by the loops at the next batch boundary after the process received SIGTERM (Lightning's class).

    A ``SystemExit``: the run ends through ``on_exception`` (where e.g. a checkpoint can be written) and the
    exception then leaves ``fit``; uncaught, the process exits."""
