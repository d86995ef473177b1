"""EmotionVision: train and study facial-emotion image classifiers."""

from emotionvision.data import EmotionDataModule
from emotionvision.models import EmotionClassifier
from emotionvision.predict import Predictor

__all__ = ["EmotionClassifier", "EmotionDataModule", "Predictor"]
