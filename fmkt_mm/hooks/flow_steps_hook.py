"""Choosing and comparing the number of flow steps at validation and test."""
import copy
from numbers import Real
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..flow.plan import check_step_counts
from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner

Steps = Union[int, Sequence[int]]


@HOOKS.register_module()
class FlowStepsHook(Hook):
    """Sets the flow steps used for prediction and scores several.

    ``val_steps`` / ``test_steps`` is an int or a sequence: the evaluator (e.g.
    ``Accuracy``, ``CocoMetric``) scores the **last** value, and with several
    values the flow ensemble at each one is scored in the same pass:

    - classification: top-1 of each count (the backbone runs once), logged as
      ``flow/top1_steps{N}``;
    - models that fill a prediction field per count (detection:
      ``pred_instances_steps{N}``, see ``steps_prediction_field``): a copy of
      the loop's evaluator scores each count, logged as ``flow/{metric}_steps{N}``
      (e.g. ``val/flow/coco/bbox_mAP_steps2``); the last count's numbers are
      the evaluator's own.
    """

    priority = 'NORMAL'

    def __init__(self, val_steps: Optional[Steps] = None, test_steps: Optional[Steps] = None) -> None:
        self.val_steps = self._as_tuple(val_steps)
        self.test_steps = self._as_tuple(test_steps)
        self._counts: Dict[int, torch.Tensor] = {}
        self._evaluators: Dict[int, object] = {}
        self._field: Optional[str] = None

    @staticmethod
    def _as_tuple(steps):
        if steps is None:
            return None
        steps = (steps, ) if isinstance(steps, int) else tuple(steps)
        if not steps:
            raise ValueError('give at least one number of flow steps, got none')
        return check_step_counts(*steps)

    def _set_steps(self, runner, steps, loop):
        model = unwrap(runner.model)
        self._counts, self._evaluators = {}, {}
        if steps is None or not hasattr(model, 'flow_modules') or not model.flow_modules():
            return  # nothing to count: not an FM-KT distiller
        model.set_eval_steps(steps[-1], list(steps) if len(steps) > 1 else [])
        self._field = getattr(model, 'steps_prediction_field', None)
        if self._field is not None:
            # copied before any sample is processed: every rank holds the same
            # counts, so the copies' evaluate() gathers over ranks in step
            self._evaluators = {n: copy.deepcopy(loop.evaluator)
                                for n in dict.fromkeys(steps[:-1]) if n != steps[-1]}

    def _count(self, outputs):
        for sample in outputs or []:
            gt = int(sample.gt_label[0]) if 'gt_label' in sample else None
            for key in sample.metainfo_keys():
                if gt is not None and key.startswith('flow_pred_label_steps'):
                    n = int(key[len('flow_pred_label_steps'):])
                    count = self._counts.setdefault(n, torch.zeros(2, dtype=torch.float64))
                    count += torch.tensor([float(sample.metainfo[key] == gt), 1.0], dtype=torch.float64)

    def _process(self, data_batch, outputs):
        """Give each count's evaluator the samples with that count's predictions."""
        if not self._evaluators or not outputs:
            return
        fields = {n: f'{self._field}_steps{n}' for n in self._evaluators}
        plain = []
        for sample in outputs:
            sample = sample.to_dict()
            for name in fields.values():
                sample.pop(name, None)
            plain.append(sample)
        for n, evaluator in self._evaluators.items():
            samples = []
            for sample, output in zip(plain, outputs):
                if fields[n] not in output:
                    raise RuntimeError(f'the model did not predict {fields[n]!r}, which the '
                                       f'FlowStepsHook asked for with steps {n}')
                samples.append({**sample, self._field: output.get(fields[n]).to_dict()})
            evaluator.process(samples, data_batch)

    def _report(self, runner, mode, loop, metrics):
        if self._counts:
            parts = []
            for n in sorted(self._counts):
                count = self._counts[n]
                all_reduce(count)  # sums over ranks; a no-op in a single process
                top1 = 100.0 * float(count[0] / count[1].clamp(min=1))
                runner.message_hub.update_scalar(f'{mode}/flow/top1_steps{n}', top1)
                parts.append(f'N={n}: {top1:.2f}')
            runner.logger.info(f'{mode} flow ensemble top-1 by number of steps: ' + ', '.join(parts))
        if self._evaluators:
            size = len(loop.dataloader.dataset)
            scored = {}
            for n, evaluator in self._evaluators.items():
                runner.logger.info(f'{mode}: the evaluation below scores the flow ensemble of '
                                   f'N={n} steps')
                scored[n] = evaluator.evaluate(size)
            scored[unwrap(runner.model).eval_steps] = dict(metrics or {})
            parts = []
            for n in sorted(scored):
                # (numpy scalars too: mmseg's IoUMetric reports np.float32)
                numbers = {k: float(v) for k, v in scored[n].items()
                           if isinstance(v, Real) and not isinstance(v, bool)}
                for key, value in numbers.items():
                    runner.message_hub.update_scalar(f'{mode}/flow/{key}_steps{n}', value)
                parts.append(f'N={n}: ' + ', '.join(f'{k} {v:.4g}' for k, v in numbers.items()))
            runner.logger.info(f'{mode} flow ensemble by number of steps: ' + '; '.join(parts))
        self._counts, self._evaluators = {}, {}
        model = unwrap(runner.model)
        if hasattr(model, 'flow_modules') and model.flow_modules():
            model.set_eval_steps(model.eval_steps)

    def before_val_epoch(self, runner: 'Runner') -> None:
        self._set_steps(runner, self.val_steps, runner.val_loop)

    def before_test_epoch(self, runner: 'Runner') -> None:
        self._set_steps(runner, self.test_steps, runner.test_loop)

    def _label_evaluation(self, runner, mode, loop, batch_idx):
        """Before the loop's evaluator prints its summary (right after the
        last batch), say which step count it scores."""
        if self._evaluators and batch_idx == len(loop.dataloader) - 1:
            runner.logger.info(f'{mode}: the evaluation below scores the flow ensemble of '
                               f'N={unwrap(runner.model).eval_steps} steps')

    def after_val_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                       outputs: Optional[Sequence] = None) -> None:
        self._count(outputs)
        self._process(data_batch, outputs)
        self._label_evaluation(runner, 'val', runner.val_loop, batch_idx)

    def after_test_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                        outputs: Optional[Sequence] = None) -> None:
        self._count(outputs)
        self._process(data_batch, outputs)
        self._label_evaluation(runner, 'test', runner.test_loop, batch_idx)

    def after_val_epoch(self, runner: 'Runner', metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'val', runner.val_loop, metrics)

    def after_test_epoch(self, runner: 'Runner', metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'test', runner.test_loop, metrics)
