"""Lightning callbacks that turn a run's outputs into files in its run directory."""

from emotionvision.callbacks.finetune import FrozenBackbone
from emotionvision.callbacks.history import HistoryCallback
from emotionvision.callbacks.random_state import RandomState
from emotionvision.callbacks.report import ReportCallback
from emotionvision.callbacks.sanity import OverfitBatchCheck, ShuffledLabelsCheck

__all__ = [
    "FrozenBackbone",
    "HistoryCallback",
    "OverfitBatchCheck",
    "RandomState",
    "ReportCallback",
    "ShuffledLabelsCheck",
]
