"""Telling every metric loss the current iteration (DKD's warm-up)."""
from mmengine.hooks import Hook

from ..registry import HOOKS
from .utils import unwrap


@HOOKS.register_module()
class LossScheduleHook(Hook):
    """Tells every metric loss the current iteration (DKD's warm-up)."""

    priority = 'NORMAL'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for module in unwrap(runner.model).modules():
            if hasattr(module, 'set_iter') and callable(module.set_iter):
                module.set_iter(runner.iter)
