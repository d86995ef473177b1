"""Data: folder scanning, decode cache, duplicate-aware splits and the LightningDataModule."""

from emotionvision.data.datamodule import EmotionDataModule

__all__ = ["EmotionDataModule"]
