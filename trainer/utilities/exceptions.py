"""Lightning's exception classes at Lightning's path (``lightning.pytorch.utilities.exceptions``)."""
from trainer.exceptions import MisconfigurationException, SIGTERMException

__all__ = ["MisconfigurationException", "SIGTERMException"]
