"""The small CNN of the MNIST objective (imports torch: reached only when a trial runs)."""

from __future__ import annotations

import torch
from torch import nn

# Two conv blocks, each halving the image: 28x28 -> 7x7 (MNIST) and 8x8 -> 2x2 (sklearn digits).
# The flattened size is computed from the image size, so one architecture serves both inputs
# without upsampling the digits (which would cost 12x the compute for no information).
_CHANNELS = (16, 32)


class SmallCNN(nn.Module):
    """conv(3x3)-ReLU-maxpool x2, then a hidden fully connected layer with dropout, then 10 logits.

    Args:
        image_size: the side of the square input images (divisible by 4: 28 or 8).
        hidden: width of the hidden fully connected layer.
        dropout: dropout probability before the output layer.
    """

    def __init__(self, image_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(
                f"SmallCNN: image_size must be divisible by 4 (two 2x2 poolings), but got {image_size}"
            )
        c1, c2 = _CHANNELS
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, 10)`` for images of shape ``(batch, 1, size, size)``."""
        out: torch.Tensor = self.classifier(self.features(x))
        return out
