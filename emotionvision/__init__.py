"""EmotionVision: train and study facial-emotion image classifiers."""

from emotionvision.data import EmotionDataModule
from emotionvision.models import EmotionClassifier
from emotionvision.predict import Predictor
from emotionvision.runs import register_resolvers

register_resolvers()  # the run-directory resolvers of conf/hydra/default.yaml

__all__ = ["EmotionClassifier", "EmotionDataModule", "Predictor"]
