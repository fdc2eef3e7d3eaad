"""Training, evaluation and prediction loops."""
from trainer.loops.evaluation import EvaluationLoop, PredictionLoop
from trainer.loops.fit import FitLoop, TrainingEpochLoop

__all__ = ["EvaluationLoop", "FitLoop", "PredictionLoop", "TrainingEpochLoop"]
