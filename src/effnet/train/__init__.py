"""Training: progressive learning, EMA, AMP, crash-safe checkpoints, torchrun DDP (``effnet train``)."""

from effnet.train.config import TrainConfig, TrainError
from effnet.train.run import RunResult, train

__all__ = ["RunResult", "TrainConfig", "TrainError", "train"]
