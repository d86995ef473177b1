"""EmotionVision: train and study facial-emotion image classifiers."""

from emotionvision.data import EmotionDataModule
from emotionvision.folds import register_fold_resolvers
from emotionvision.models import EmotionClassifier
from emotionvision.predict import Predictor
from emotionvision.runs import register_resolvers

# the run-directory and cross-validation resolvers of conf/hydra/default.yaml
register_resolvers()
register_fold_resolvers()

__all__ = ["EmotionClassifier", "EmotionDataModule", "Predictor"]
