"""The method's math in plain PyTorch: paths, meta-encoders, the transfer loop."""
from .encoders import (ConvMetaEncoder, MetaEncoder, MLPMetaEncoder, TransformerMetaEncoder,
                       sinusoidal_embedding)
from .paths import FlowPath, RectifiedPath, VEPath, VPPath
from .transfer import FlowOutput, FlowTransfer

__all__ = [
    'FlowPath', 'RectifiedPath', 'VPPath', 'VEPath', 'MetaEncoder', 'MLPMetaEncoder',
    'ConvMetaEncoder', 'TransformerMetaEncoder', 'sinusoidal_embedding', 'FlowTransfer',
    'FlowOutput'
]
