"""Telling every metric loss the current iteration (DKD's warm-up)."""
from typing import TYPE_CHECKING

from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class LossScheduleHook(Hook):
    """Tells every metric loss the current iteration (DKD's warm-up)."""

    priority = 'NORMAL'

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        for module in unwrap(runner.model).modules():
            if hasattr(module, 'set_iter') and callable(module.set_iter):
                module.set_iter(runner.iter)
