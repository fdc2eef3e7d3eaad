"""Progress-bar callbacks."""
from trainer.callbacks.progress.progress_bar import ProgressBar
from trainer.callbacks.progress.tqdm_progress import TQDMProgressBar

__all__ = ["ProgressBar", "TQDMProgressBar"]
