"""fmkt_mm: knowledge transfer with flow matching for OpenMMLab 2.x.

Importing the package registers its components in MMEngine's registries
under the scope ``fmkt_mm`` (``dict(type='fmkt_mm.FlowTransfer')``, ...).
"""
from . import (checkpoint, datasets, distill, export, flow, hooks, log_processor,  # noqa: F401
               losses, optim)  # (registration)
from .registry import FLOW_PATHS, HOOKS, META_ENCODERS, MODELS

__version__ = '0.1.0'
__all__ = ['MODELS', 'HOOKS', 'FLOW_PATHS', 'META_ENCODERS', '__version__']
