"""The method's math in plain PyTorch: paths, meta-encoders, conditions, the
transfer loop and its reverse sampler.

This package imports torch only (``import fmkt_mm.flow`` works without
MMEngine). Parts are named through the plain catalogs of
:mod:`fmkt_mm.flow.catalog`; fmkt_mm registers them with MMEngine in one
place, :mod:`fmkt_mm.registry`.
"""
from .catalog import CONDITIONS, ENCODERS, LOSSES, PATHS, Catalog
from .conditions import (
                         ClassCondition,
                         CompositeCondition,
                         FlowCondition,
                         LevelCondition,
                         PooledCondition,
                         TeacherCondition,
                         build_condition,
)
from .encoders import (
                         ConvMetaEncoder,
                         MetaEncoder,
                         MLPMetaEncoder,
                         TransformerMetaEncoder,
                         sinusoidal_embedding,
)
from .objective import FMKTObjective
from .paths import FlowPath, RectifiedPath, VEPath, VPPath
from .transfer import FlowOutput, FlowTransfer, FlowTransport, RoundTrip

__all__ = [
    'FlowPath', 'RectifiedPath', 'VPPath', 'VEPath', 'MetaEncoder', 'MLPMetaEncoder',
    'ConvMetaEncoder', 'TransformerMetaEncoder', 'sinusoidal_embedding', 'FlowTransfer',
    'FlowTransport', 'FMKTObjective',
    'FlowOutput', 'RoundTrip', 'FlowCondition', 'PooledCondition', 'LevelCondition',
    'ClassCondition', 'TeacherCondition', 'CompositeCondition', 'build_condition', 'Catalog', 'PATHS', 'ENCODERS',
    'CONDITIONS', 'LOSSES'
]
