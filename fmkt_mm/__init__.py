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


def _check_torch() -> None:
    """Safe checkpoint loading needs torch's weights_only allow-list API."""
    import torch
    if not hasattr(torch.serialization, 'safe_globals') or \
            not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):
        raise ImportError(f'fmkt_mm needs torch >= 2.5 (torch.serialization.safe_globals, '
                          f'get_unsafe_globals_in_checkpoint: loading checkpoints without running '
                          f'their pickled code); found torch {torch.__version__}. Upgrade torch.')


if _has_mmengine():
    _check_torch()
    from . import (  # noqa: F401  (imported to register their components)
        checkpoint,
        datasets,
        distill,
        export,
        flow,
        hooks,
        log_processor,
        losses,
        optim,
        runner,
        train_loop,
    )
    from .registry import FLOW_PATHS, HOOKS, META_ENCODERS, MODELS  # noqa: F401
    from .runner import DistillRunner  # noqa: F401
    __all__ = ['DistillRunner', 'MODELS', 'HOOKS', 'FLOW_PATHS', 'META_ENCODERS', '__version__']
else:
    __all__ = ['__version__']
