"""Adapters that align a student representation with a teacher's shape."""
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS


@MODELS.register_module()
class FeatureAdapter(nn.Module):
    """Maps ``(B, C_in, H, W)`` (or ``(B, C_in)``) to ``C_out`` channels with a
    1x1 convolution (linear layer for vectors), then resizes maps to the
    target's spatial size (bilinear). Both steps are linear, so the adapter
    commutes with the flow's ensemble mean.

    With ``in_channels == out_channels`` and ``project=False`` only resizing
    happens.
    """

    def __init__(self, in_channels: int, out_channels: int, project: Optional[bool] = None,
                 resize_mode: str = 'bilinear') -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resize_mode = in_channels, out_channels, resize_mode
        project = in_channels != out_channels if project is None else project
        self.proj = nn.Conv2d(in_channels, out_channels, 1) if project else None

    def forward(self, x: Tensor, size: Optional[Sequence[int]] = None) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f'FeatureAdapter(in_channels={self.in_channels}) got {tuple(x.shape)}; '
                             f'set in_channels={x.shape[1]}')
        is_vector = x.dim() == 2
        if is_vector:
            x = x[:, :, None, None]
        if self.proj is not None:
            x = self.proj(x)
        if size is not None and not is_vector and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode=self.resize_mode, align_corners=False)
        return x[:, :, 0, 0] if is_vector else x
