"""Advancing the EMA of a distiller's flows."""
from typing import TYPE_CHECKING

from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class FlowEMAHook(Hook):
    """Advance the exponential moving average of the flows before every
    training iteration, i.e. after the previous optimizer update (as mmdet's
    ``MeanTeacherHook`` advances its teacher): the distiller's
    :meth:`~fmkt_mm.distill.LevelFlowDistiller.update_ema`, with the
    momentum and warm-up of its ``deploy.ema_momentum`` /
    ``deploy.ema_warmup``. The EMA and its update count live in the
    distiller's state, so a resumed run continues it.

    :class:`~fmkt_mm.runner.DistillRunner` adds this hook to every config
    whose distiller keeps an EMA; a distiller that keeps one refuses to train
    without it.
    """

    priority = 'ABOVE_NORMAL'

    def before_train(self, runner: 'Runner') -> None:
        model = unwrap(runner.model)
        if not hasattr(model, 'update_ema'):
            raise TypeError(f'FlowEMAHook needs a distiller that keeps an EMA of its flows '
                            f'(e.g. fmkt_mm.DetectionDistiller with ema_momentum); got {type(model).__name__}')

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        unwrap(runner.model).update_ema()
