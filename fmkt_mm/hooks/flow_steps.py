"""Choosing and comparing the number of flow steps at validation and test."""
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS

Steps = Union[int, Sequence[int]]


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class FlowStepsHook(Hook):
    """Sets the flow steps used for prediction and logs top-1 for several.

    ``val_steps`` / ``test_steps`` is an int or a sequence: the evaluator (e.g.
    ``Accuracy``) scores the **last** value, and with several values the flow
    ensemble at each one is scored in the same pass (the backbone runs once)
    and logged as ``flow/top1_steps{N}``.
    """

    priority = 'NORMAL'

    def __init__(self, val_steps: Optional[Steps] = None, test_steps: Optional[Steps] = None):
        self.val_steps = self._as_tuple(val_steps)
        self.test_steps = self._as_tuple(test_steps)
        self._counts: Dict[int, torch.Tensor] = {}

    @staticmethod
    def _as_tuple(steps):
        if steps is None:
            return None
        steps = (steps, ) if isinstance(steps, int) else tuple(steps)
        if not steps or any(not isinstance(n, int) or n < 1 for n in steps):
            raise ValueError(f'flow steps must be integers >= 1, got {steps}')
        return steps

    def _set_steps(self, runner, steps):
        model = unwrap(runner.model)
        self._counts = {}
        if steps is None or not hasattr(model, 'extra_eval_steps'):
            return
        model.eval_steps = steps[-1]
        model.extra_eval_steps = list(steps) if len(steps) > 1 else []

    def _count(self, outputs):
        for sample in outputs or []:
            gt = int(sample.gt_label[0]) if 'gt_label' in sample else None
            for key in sample.metainfo_keys():
                if gt is not None and key.startswith('flow_pred_label_steps'):
                    n = int(key[len('flow_pred_label_steps'):])
                    count = self._counts.setdefault(n, torch.zeros(2, dtype=torch.float64))
                    count += torch.tensor([float(sample.metainfo[key] == gt), 1.0], dtype=torch.float64)

    def _report(self, runner, mode):
        if not self._counts:
            return
        parts = []
        for n in sorted(self._counts):
            count = self._counts[n]
            all_reduce(count)  # sums over ranks; a no-op in a single process
            top1 = 100.0 * float(count[0] / count[1].clamp(min=1))
            runner.message_hub.update_scalar(f'{mode}/flow/top1_steps{n}', top1)
            parts.append(f'N={n}: {top1:.2f}')
        runner.logger.info(f'{mode} flow ensemble top-1 by number of steps: ' + ', '.join(parts))
        self._counts = {}
        model = unwrap(runner.model)
        model.extra_eval_steps = []

    def before_val_epoch(self, runner):
        self._set_steps(runner, self.val_steps)

    def before_test_epoch(self, runner):
        self._set_steps(runner, self.test_steps)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._count(outputs)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._count(outputs)

    def after_val_epoch(self, runner, metrics=None):
        self._report(runner, 'val')

    def after_test_epoch(self, runner, metrics=None):
        self._report(runner, 'test')


@HOOKS.register_module()
class LossScheduleHook(Hook):
    """Tells every metric loss the current iteration (DKD's warm-up)."""

    priority = 'NORMAL'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for module in unwrap(runner.model).modules():
            if hasattr(module, 'set_iter') and callable(module.set_iter):
                module.set_iter(runner.iter)
