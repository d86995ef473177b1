"""Data: sources (folder trees, manifest CSVs, the demo), grouping, splitting, the decode cache and the
LightningDataModule that chains them."""

from emotionvision.data.datamodule import EmotionDataModule

__all__ = ["EmotionDataModule"]
