"""The method's math in plain PyTorch: paths, meta-encoders, conditions, the
serial solver and its reverse, the FM-KT objective, and the flow that puts
them together (:class:`FlowTransfer`).

This package imports torch only (``import fmkt_mm.flow`` works without
MMEngine). Parts are named through the plain catalogs of
:mod:`fmkt_mm.flow.catalog`; fmkt_mm registers them with MMEngine in one
place, :mod:`fmkt_mm.registry`.
"""
from .catalog import CONDITIONS, FLOW_PATHS, LOSSES, META_ENCODERS, Catalog
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
from .field import FieldEncoder
from .objective import FMKTObjective
from .output import FlowOutput
from .paths import FlowPath, RectifiedPath, VEPath, VPPath
from .plan import StepPlan, plan_steps
from .reduction import ChannelReduction
from .reverse import RoundTrip
from .solver import SerialSolver
from .transfer import FlowTransfer

__all__ = [
    'FlowPath', 'RectifiedPath', 'VPPath', 'VEPath', 'MetaEncoder', 'MLPMetaEncoder', 'ConvMetaEncoder',
    'TransformerMetaEncoder', 'FieldEncoder', 'sinusoidal_embedding', 'FlowTransfer', 'SerialSolver',
    'FMKTObjective', 'FlowOutput', 'RoundTrip', 'StepPlan', 'plan_steps', 'FlowCondition',
    'PooledCondition', 'LevelCondition', 'ClassCondition', 'TeacherCondition', 'CompositeCondition',
    'build_condition', 'ChannelReduction', 'Catalog', 'FLOW_PATHS', 'META_ENCODERS', 'CONDITIONS', 'LOSSES'
]
