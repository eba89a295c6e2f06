"""What the hooks share: the distiller behind a runner's (wrapped) model."""
from typing import TYPE_CHECKING

from mmengine.model import is_model_wrapper

if TYPE_CHECKING:
    from mmengine.runner import Runner
    from torch import nn

    from ..distill.base import BaseDistiller


def unwrap(model: 'nn.Module') -> 'nn.Module':
    """The model inside a DDP / FSDP wrapper (the model itself otherwise)."""
    return model.module if is_model_wrapper(model) else model


def require_distiller(runner: 'Runner', hook: str) -> 'BaseDistiller':
    """The runner's distiller; a TypeError naming ``hook`` for any other model."""
    model = unwrap(runner.model)
    if not hasattr(model, 'set_distillation'):
        raise TypeError(f'{hook} needs a distiller (fmkt_mm.BaseDistiller), got '
                        f'{type(model).__name__}')
    return model
