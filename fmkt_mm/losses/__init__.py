"""Distillation losses between a student and a teacher output.

Every loss is registered in :data:`fmkt_mm.registry.MODELS`, so it builds
from ``dict(type='KDLoss', ...)`` inside the ``fmkt_mm`` scope and from
``dict(type='fmkt_mm.KDLoss', ...)`` in any other OpenMMLab scope.
"""
from .base import MetricLoss
from .cwd import CWDLoss
from .dist import DISTLoss
from .dkd import DKDLoss
from .kd import KDLoss, PixelKDLoss
from .mgd import MGDLoss
from .mse import MSELoss
from .pkd import PKDLoss

__all__ = ['MetricLoss', 'KDLoss', 'PixelKDLoss', 'DKDLoss', 'DISTLoss', 'PKDLoss', 'MSELoss', 'CWDLoss',
           'MGDLoss']
