"""EmotionVision: train and study facial-emotion image classifiers."""

from emotionvision.data import EmotionDataModule
from emotionvision.models import EmotionClassifier

__all__ = ["EmotionClassifier", "EmotionDataModule"]
