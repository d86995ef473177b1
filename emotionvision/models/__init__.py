"""Models: the backbone registry, the LightningModule and LR schedules."""

from emotionvision.models.backbones import BACKBONES, build_backbone, register_backbone
from emotionvision.models.classifier import EmotionClassifier
from emotionvision.models.schedulers import warmup_cosine

__all__ = ["BACKBONES", "EmotionClassifier", "build_backbone", "register_backbone", "warmup_cosine"]
