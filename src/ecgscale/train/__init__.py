"""Pre-training: `pretrain(TrainConfig) -> TrainResult` (trainer.py), checkpoints, DDP."""

from ecgscale.train.config import TrainConfig
from ecgscale.train.trainer import TrainResult, load_encoder, pretrain

__all__ = ["TrainConfig", "TrainResult", "load_encoder", "pretrain"]
