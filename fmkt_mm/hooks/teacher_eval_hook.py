"""The teacher, evaluated once before training."""
from numbers import Real
from typing import TYPE_CHECKING, Dict, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook

from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.evaluator import Evaluator
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import DataLoader


@HOOKS.register_module()
class TeacherEvalHook(Hook):
    """Evaluate the teacher on the validation set with the validation
    evaluator before training starts, and log its metrics (as
    ``teacher/<metric>`` to the visualizer too), so that a teacher that was
    loaded wrongly is seen at once, not after a wasted run.

    Args:
        max_batches: evaluate on the first batches only (per process); None
            for the whole validation set.
        min_metrics: e.g. ``{'accuracy/top1': 50.0}``: stop with an error
            when a teacher metric is below its bound.
        on_resume: also evaluate when the run resumes (off by default: the
            teacher was evaluated when the run started).

    Example::

        custom_hooks = [dict(type='fmkt_mm.TeacherEvalHook', min_metrics={'coco/bbox_mAP': 0.3})]
    """

    priority = 'LOW'

    def __init__(self, max_batches: Optional[int] = None, min_metrics: Optional[Dict[str, float]] = None,
                 on_resume: bool = False) -> None:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f'max_batches must be >= 1 or None, got {max_batches}')
        self.max_batches, self.on_resume = max_batches, on_resume
        self.min_metrics = dict(min_metrics or {})
        self.metrics: Optional[Dict[str, float]] = None

    def before_train(self, runner: 'Runner') -> None:
        if runner.iter > 0 and not self.on_resume:
            return
        model = unwrap(runner.model)
        teachers = model.teacher_models() if hasattr(model, 'teacher_models') else \
            [t for t in [getattr(model, 'teacher', None)] if t is not None]
        if not teachers:
            runner.logger.warning('TeacherEvalHook: this model has no teacher; nothing to evaluate')
            return
        loop = getattr(runner, '_val_loop', None)
        if loop is None or isinstance(loop, dict):
            runner.logger.warning('TeacherEvalHook: the config has no val_dataloader / '
                                  'val_evaluator; the teacher is not evaluated')
            return
        several = len(teachers) > 1
        self.metrics = {}
        for j, teacher in enumerate(teachers):
            # several teachers: ``teacher{j}/<metric>``, each held to ``min_metrics``
            who = model.teacher_label(j) if several else 'teacher'
            prefix = f'teacher{j}' if several else 'teacher'
            metrics = self.evaluate(teacher, loop.dataloader, loop.evaluator)
            self.metrics.update({f'{prefix}/{k}': v for k, v in metrics.items()} if several else metrics)
            self.report(runner, who, prefix, metrics)

    def report(self, runner: 'Runner', who: str, prefix: str, metrics: Dict[str, float]) -> None:
        shown = ', '.join(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}'
                          for k, v in metrics.items())
        runner.logger.info(f'{who} on the validation set before training: {shown}')
        # numbers, numpy scalars included (mmseg's IoUMetric reports np.float32)
        scalars = {f'{prefix}/{k}': float(v) for k, v in metrics.items()
                   if isinstance(v, Real) and not isinstance(v, bool)}
        if scalars:
            runner.visualizer.add_scalars(scalars, step=runner.iter)
        for key, value in scalars.items():
            runner.message_hub.update_info(key, value)
        low = {k: (metrics.get(k), bound) for k, bound in self.min_metrics.items()
               if k not in metrics or metrics[k] < bound}
        if low:
            raise RuntimeError(
                f'the {who} is below the configured minimum on the validation set: ' +
                ', '.join(f'{k} = {v} < {b}' if v is not None else f'{k} missing (metrics: '
                          f'{sorted(metrics)})' for k, (v, b) in low.items()) +
                '; check its checkpoint, its config and the data pipeline')

    @torch.no_grad()
    def evaluate(self, teacher: 'BaseModel', dataloader: 'DataLoader', evaluator: 'Evaluator') -> Dict[str, float]:
        was_training = teacher.training
        teacher.eval()
        seen = 0
        try:
            for index, data_batch in enumerate(dataloader):
                if self.max_batches is not None and index >= self.max_batches:
                    break
                outputs = teacher.val_step(data_batch)
                evaluator.process(data_samples=outputs, data_batch=data_batch)
                seen += len(outputs)
        finally:
            teacher.train(was_training)
        if self.max_batches is None:
            size = len(dataloader.dataset)
        else:
            count = torch.tensor(float(seen))
            all_reduce(count)  # a no-op in a single process
            size = int(count.item())
        return evaluator.evaluate(size)
