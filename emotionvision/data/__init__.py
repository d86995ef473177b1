"""Data: folder scanning, decode cache, duplicate-aware splits and the LightningDataModule."""

from emotionvision.data.datamodule import EmotionDataModule, demo_datamodule

__all__ = ["EmotionDataModule", "demo_datamodule"]
