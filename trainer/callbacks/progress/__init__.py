"""Progress-bar callbacks."""
from trainer.callbacks.progress.progress_bar import ProgressBar
from trainer.callbacks.progress.tqdm_progress import TQDMProgressBar
from trainer.callbacks.rich_progress import RichProgressBar, RichProgressBarTheme

__all__ = ["ProgressBar", "RichProgressBar", "RichProgressBarTheme", "TQDMProgressBar"]
