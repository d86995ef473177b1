"""Lightning callbacks that turn a run's outputs into files in its run directory, show its progress
and keep its disk small."""

from emotionvision.callbacks.checkpoints import DropTrainingState
from emotionvision.callbacks.finetune import FrozenBackbone
from emotionvision.callbacks.history import HistoryCallback
from emotionvision.callbacks.progress import EpochLog
from emotionvision.callbacks.random_state import RandomState
from emotionvision.callbacks.report import ReportCallback
from emotionvision.callbacks.sanity import OverfitBatchCheck, ShuffledLabelsCheck

__all__ = [
    "DropTrainingState",
    "EpochLog",
    "FrozenBackbone",
    "HistoryCallback",
    "OverfitBatchCheck",
    "RandomState",
    "ReportCallback",
    "ShuffledLabelsCheck",
]
