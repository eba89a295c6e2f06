"""fmkt_mm: knowledge transfer with flow matching for OpenMMLab 2.x.

Importing the package registers its components in MMEngine's registries
under the scope ``fmkt_mm`` (``dict(type='fmkt_mm.FlowTransfer')``, ...).
Without MMEngine installed only the plain-PyTorch :mod:`fmkt_mm.flow` is
usable, and importing it registers nothing.
"""
import importlib.util

__version__ = '0.1.0'


def _has_mmengine() -> bool:
    try:
        return importlib.util.find_spec('mmengine') is not None
    except (ImportError, ValueError):  # e.g. blocked in sys.modules
        return False


if _has_mmengine():
    from . import (checkpoint, datasets, distill, export, flow, hooks, log_processor,  # noqa: F401
                   losses, optim)  # (registration)
    from .registry import FLOW_PATHS, HOOKS, META_ENCODERS, MODELS  # noqa: F401
    __all__ = ['MODELS', 'HOOKS', 'FLOW_PATHS', 'META_ENCODERS', '__version__']
else:
    __all__ = ['__version__']
