"""A VGG-style network for 48 px face crops, as in the FER2013 literature."""

from __future__ import annotations

import torch
from torch import nn


class VggFer(nn.Module):
    """Stages of two 3x3 convolutions (batch norm, ReLU) that each end in a 2x2 max-pool, then global
    average pooling, dropout and a linear head `fc`. At 48 px the first stage works at full
    resolution (ResNet's standard stem divides it by 4), for about the cost of ResNet-18 at 48 px."""

    def __init__(
        self, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3, num_classes: int = 1000
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(images)).flatten(1)))
