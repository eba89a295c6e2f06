"""Hooks for running distillation: switching it off, loss-weight schedules,
exporting the student beside each checkpoint, evaluating the teacher before
training, and random states that make a resumed run repeat an uninterrupted
one."""
import math
import os
import os.path as osp
import random
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.dist import all_reduce, master_only
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from ..registry import HOOKS
from .flow_steps import LossScheduleHook, unwrap


def _distiller(runner, hook: str):
    model = unwrap(runner.model)
    if not hasattr(model, 'distillation_enabled'):
        raise TypeError(f'{hook} needs a distiller (fmkt_mm.BaseDistiller), got '
                        f'{type(model).__name__}')
    return model


# -- (a) switching distillation off --------------------------------------------------------


@HOOKS.register_module()
class StopDistillationHook(Hook):
    """Distil for the first ``stop_iter`` iterations (or ``stop_epoch``
    epochs), then train the student on its task loss alone.

    From then on the distiller's ``loss`` returns
    :meth:`~fmkt_mm.distill.BaseDistiller.task_losses`: the teacher is not
    run and no distillation term is computed. What "task loss alone" means:

    * ``deploy_mode='student'`` (``fmkt_theta``, ``ofmkt``, the baselines, the
      detection distiller with ``deploy_mode='student'``): the plain
      student's own loss, as if it were trained without a teacher; the
      distillation modules (flows, adapters) get zero gradients.
    * ``deploy_mode='flow'`` (classification ``fmkt``, detection
      ``deploy_mode='flow'``): the flow feeds the student's head and is part
      of the deployed model, so the deployed model keeps training on the task
      loss. For ``fmkt`` that is ``loss_cls``, the cross-entropy of every
      flow step's logits (averaged over steps, as during distillation), and
      only the teacher term ``loss_flow`` is dropped; for detection the
      flows' ensemble still replaces the distilled levels and mmdet's losses
      train student and flows.

    The switch is re-evaluated before every iteration, so a run resumed past
    the stop point continues without distillation. Both limits may be given;
    distillation stops at whichever comes first.

    Example::

        custom_hooks = [dict(type='fmkt_mm.StopDistillationHook', stop_epoch=80)]
    """

    priority = 'NORMAL'

    def __init__(self, stop_iter: Optional[int] = None, stop_epoch: Optional[int] = None):
        if stop_iter is None and stop_epoch is None:
            raise ValueError('StopDistillationHook needs stop_iter or stop_epoch')
        for name, value in (('stop_iter', stop_iter), ('stop_epoch', stop_epoch)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}')
        self.stop_iter, self.stop_epoch = stop_iter, stop_epoch

    def _distilling(self, runner) -> bool:
        if self.stop_iter is not None and runner.iter >= self.stop_iter:
            return False
        if self.stop_epoch is not None and runner.epoch >= self.stop_epoch:
            return False
        return True

    def before_train(self, runner) -> None:
        _distiller(runner, type(self).__name__)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = unwrap(runner.model)
        distilling = self._distilling(runner)
        if model.distillation_enabled and not distilling:
            runner.logger.info(
                f'distillation stopped at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'the student trains on its task loss alone from now on')
        model.distillation_enabled = distilling


# -- (b) progressive loss weights ------------------------------------------------------------


def schedule_factor(spec: dict, iteration: int) -> float:
    """The multiplier a schedule gives at ``iteration`` (0-based).

    * ``dict(type='linear', begin=0, end=1000, start_factor=0.0, end_factor=1.0)``
    * ``dict(type='cosine', begin=..., end=..., start_factor=..., end_factor=...)``:
      half a cosine from ``start_factor`` to ``end_factor``;
    * ``dict(type='step', milestones=[m1, m2], factors=[f0, f1, f2])``:
      ``f0`` before ``m1``, ``f1`` from ``m1``, ``f2`` from ``m2``;
    * ``dict(type='constant', factor=...)``.

    Before ``begin`` a ramp holds ``start_factor``, after ``end`` ``end_factor``.
    """
    kind = spec.get('type', 'linear')
    if kind in ('linear', 'cosine'):
        begin, end = int(spec.get('begin', 0)), int(spec['end'])
        start, stop = float(spec.get('start_factor', 0.0)), float(spec.get('end_factor', 1.0))
        if iteration <= begin:
            return start
        if iteration >= end:
            return stop
        progress = (iteration - begin) / (end - begin)
        if kind == 'cosine':
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return start + (stop - start) * progress
    if kind == 'step':
        passed = sum(iteration >= int(m) for m in spec['milestones'])
        return float(spec['factors'][passed])
    if kind == 'constant':
        return float(spec['factor'])
    raise ValueError(f"unknown schedule type {kind!r}; use 'linear', 'cosine', 'step' or 'constant'")


def _check_schedule(name: str, spec: dict) -> None:
    kind = spec.get('type', 'linear')
    if kind in ('linear', 'cosine'):
        if 'end' not in spec or int(spec['end']) <= int(spec.get('begin', 0)):
            raise ValueError(f'schedule of {name!r}: a {kind} ramp needs end > begin, got {spec}')
    elif kind == 'step':
        if len(spec.get('factors', ())) != len(spec.get('milestones', ())) + 1:
            raise ValueError(f'schedule of {name!r}: a step schedule needs one more factor than '
                             f'milestones, got {spec}')
        if list(spec['milestones']) != sorted(spec['milestones']):
            raise ValueError(f'schedule of {name!r}: milestones must be increasing, got {spec}')
    elif kind == 'constant':
        if 'factor' not in spec:
            raise ValueError(f'schedule of {name!r}: a constant schedule needs factor, got {spec}')
    schedule_factor(spec, 0)  # unknown types fail here


def _resolve(model, path: str):
    """``(owner, attribute)`` of a dotted attribute path on ``model``."""
    owner = model
    parts = path.split('.')
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            break
    if owner is None or not hasattr(owner, parts[-1]):
        raise AttributeError(f'LossWeightScheduleHook: the model has no attribute {path!r}; '
                             f'weights of this model: {sorted(weight_attributes(model))}')
    value = getattr(owner, parts[-1])
    numbers = value if isinstance(value, (list, tuple)) else [value]
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise TypeError(f'LossWeightScheduleHook: {path!r} is {value!r}, not a number or a list '
                        f'of numbers')
    return owner, parts[-1]


def weight_attributes(model) -> List[str]:
    """Dotted paths of the loss weights a schedule can drive: float
    attributes (or lists of them) whose name ends in ``weight`` or
    ``weights``, on the distiller and its loss modules."""
    found = []
    for prefix, module in model.named_modules():
        if prefix.split('.')[0] in ('student', 'teacher'):
            continue
        for name, value in vars(module).items():
            if not name.endswith(('weight', 'weights')) or name.startswith('_'):
                continue
            numbers = value if isinstance(value, (list, tuple)) else [value]
            if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                found.append(f'{prefix}.{name}' if prefix else name)
    return found


@HOOKS.register_module()
class LossWeightScheduleHook(LossScheduleHook):
    """Progressive loss weights driven by the iteration.

    ``schedules`` maps a dotted attribute path on the distiller to a schedule
    (see :func:`schedule_factor`); before every iteration the attribute is
    set to its configured value times the schedule's factor (a list, such as
    the detection distiller's ``level_weights``, is scaled element-wise).
    Paths are e.g. ``flow_loss_weight`` and ``theta_loss_weight``
    (classification), ``level_weights`` (detection), or a loss module's
    ``loss_weight`` (``flow.loss_fn.loss_weight``, ``kd_loss.loss_weight``).
    The factors are logged as ``weight_factor/<path>``. Being a
    :class:`LossScheduleHook`, it also tells the metric losses the iteration
    (DKD's warm-up).

    Example: ramp the flow loss in over the first 2000 iterations and halve
    the FM-KT^Theta term at iteration 10000::

        custom_hooks = [dict(type='fmkt_mm.LossWeightScheduleHook', schedules={
            'flow_loss_weight': dict(type='linear', begin=0, end=2000),
            'theta_loss_weight': dict(type='step', milestones=[10000], factors=[1.0, 0.5])})]
    """

    priority = 'NORMAL'

    def __init__(self, schedules: Dict[str, dict]):
        if not schedules:
            raise ValueError('LossWeightScheduleHook needs schedules={attribute path: schedule}')
        for name, spec in schedules.items():
            _check_schedule(name, dict(spec))
        self.schedules = {name: dict(spec) for name, spec in schedules.items()}
        self._base: Dict[str, Union[float, List[float]]] = {}

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        for name in self.schedules:
            owner, attr = _resolve(model, name)
            value = getattr(owner, attr)
            self._base[name] = list(value) if isinstance(value, (list, tuple)) else float(value)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        super().before_train_iter(runner, batch_idx, data_batch)
        model = unwrap(runner.model)
        for name, spec in self.schedules.items():
            factor = schedule_factor(spec, runner.iter)
            owner, attr = _resolve(model, name)
            base = self._base[name]
            value = [factor * b for b in base] if isinstance(base, list) else factor * base
            setattr(owner, attr, value)
            runner.message_hub.update_scalar(f'train/weight_factor/{name}', factor)


# -- (c) the student beside each checkpoint ----------------------------------------------------


@HOOKS.register_module()
class ExportStudentHook(Hook):
    """Write the plain student next to every checkpoint the
    ``CheckpointHook`` saves (``iter_2.pth`` -> ``iter_2_student.pth``, and
    best checkpoints alike), as ``tools/export_student.py`` does: the
    student's weights, checked by loading them strictly into the plain
    student, written atomically. Exports of checkpoints that the checkpoint
    hook has since removed (``max_keep_ckpts``) are removed too.

    With ``deploy_mode='flow'`` the export warns once that the flow is not
    part of the plain student (see :func:`fmkt_mm.export.export_student`).

    Example::

        custom_hooks = [dict(type='fmkt_mm.ExportStudentHook')]
    """

    priority = 'LOWEST'  # after the CheckpointHook (VERY_LOW) has saved

    def __init__(self, suffix: str = '_student'):
        if not suffix:
            raise ValueError('suffix must be non-empty: the export must not overwrite the checkpoint')
        self.suffix = suffix
        self._done: Dict[str, str] = {}  # checkpoint -> its export
        self._warned = False

    def student_path(self, checkpoint: str) -> str:
        root, ext = osp.splitext(checkpoint)
        return root + self.suffix + (ext or '.pth')

    def before_train(self, runner) -> None:
        _distiller(runner, type(self).__name__)
        # checkpoints that exist already (a resumed run) are not re-exported
        for key in ('last_ckpt', 'best_ckpt'):
            path = runner.message_hub.get_info(key)
            if path:
                self._done[path] = self.student_path(path)

    @master_only
    def _export_new(self, runner) -> None:
        from ..export import export_student_from_cfg
        for key in ('last_ckpt', 'best_ckpt'):
            path = runner.message_hub.get_info(key)
            if not path or path in self._done or not osp.isfile(path):
                continue
            out = self.student_path(path)
            summary = export_student_from_cfg(runner.cfg, path, out)
            self._done[path] = out
            runner.logger.info(f'exported the student of {osp.basename(path)} to {out} '
                               f'({summary["num_tensors"]} tensors)')
            if summary['not_exported'] and not self._warned:
                runner.logger.warning(summary['not_exported'])
                self._warned = True
        for path, out in list(self._done.items()):
            if not osp.exists(path):
                if osp.isfile(out):
                    os.remove(out)
                del self._done[path]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._export_new(runner)

    def after_train_epoch(self, runner) -> None:
        self._export_new(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._export_new(runner)


# -- (d) the teacher, evaluated once ------------------------------------------------------------


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
                 on_resume: bool = False):
        if max_batches is not None and max_batches < 1:
            raise ValueError(f'max_batches must be >= 1 or None, got {max_batches}')
        self.max_batches, self.on_resume = max_batches, on_resume
        self.min_metrics = dict(min_metrics or {})
        self.metrics: Optional[Dict[str, float]] = None

    def before_train(self, runner) -> None:
        if runner.iter > 0 and not self.on_resume:
            return
        model = unwrap(runner.model)
        teacher = getattr(model, 'teacher', None)
        if teacher is None:
            runner.logger.warning('TeacherEvalHook: this model has no teacher; nothing to evaluate')
            return
        loop = getattr(runner, '_val_loop', None)
        if loop is None or isinstance(loop, dict):
            runner.logger.warning('TeacherEvalHook: the config has no val_dataloader / '
                                  'val_evaluator; the teacher is not evaluated')
            return
        self.metrics = self.evaluate(teacher, loop.dataloader, loop.evaluator)
        shown = ', '.join(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}'
                          for k, v in self.metrics.items())
        runner.logger.info(f'teacher on the validation set before training: {shown}')
        scalars = {f'teacher/{k}': v for k, v in self.metrics.items() if isinstance(v, (int, float))}
        if scalars:
            runner.visualizer.add_scalars(scalars, step=runner.iter)
        for key, value in scalars.items():
            runner.message_hub.update_info(key, value)
        low = {k: (self.metrics.get(k), bound) for k, bound in self.min_metrics.items()
               if k not in self.metrics or self.metrics[k] < bound}
        if low:
            raise RuntimeError(
                'the teacher is below the configured minimum on the validation set: ' +
                ', '.join(f'{k} = {v} < {b}' if v is not None else f'{k} missing (metrics: '
                          f'{sorted(self.metrics)})' for k, (v, b) in low.items()) +
                '; check teacher.checkpoint, the teacher config and the data pipeline')

    @torch.no_grad()
    def evaluate(self, teacher, dataloader, evaluator) -> Dict[str, float]:
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


# -- resuming exactly ----------------------------------------------------------------------------


def _rng_state() -> dict:
    state = dict(torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state['numpy'] = dict(kind=str(kind), keys=torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                          pos=int(pos), has_gauss=int(has_gauss), gauss=float(gauss))
    version, internal, gauss_next = random.getstate()
    state['python'] = dict(version=int(version), internal=list(internal), gauss_next=gauss_next)
    return state


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the random generators' states in every checkpoint and restore
    them when the run resumes, so that a run killed and resumed repeats the
    uninterrupted run (same seed, deterministic settings) exactly.

    MMEngine resumes weights, optimizer, schedulers and message hub, but not
    the generators: anything random in the forward pass (the flow's step
    count draw, pair decoupling, RPN/RoI samplers, mixup) would take another
    course after a resume. What is restored, and when:

    * iteration-based loops replay the data pipeline (MMEngine fetches and
      discards the batches already trained on), so NumPy's and Python's
      generators come back by themselves; torch's is restored right before
      the first resumed iteration, after the replay;
    * epoch-based loops start a fresh epoch: all three are restored before it.

    The training dataloader gets a private ``torch.Generator`` so that
    starting an epoch does not draw from torch's global generator. With
    ``randomness.diff_rank_seed=True`` each rank has its own generators and
    only rank 0's are in the checkpoint, so nothing is restored then.
    ``fmkt_mm.apis.prepare_work_dir`` (``tools/train.py``) adds this hook.
    Checkpoints stay loadable with ``torch.load(weights_only=True)``.
    """

    priority = 'HIGHEST'

    def __init__(self):
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = _rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False) and 'random_state' in checkpoint:
            self._pending = checkpoint['random_state']

    def before_train(self, runner) -> None:
        loader = getattr(runner.train_loop, 'dataloader', None)
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
            seed = runner.seed if runner.seed is not None else 0
            loader.generator = torch.Generator().manual_seed(int(seed))
        if self._pending is None:
            return
        if runner.cfg.get('randomness', {}).get('diff_rank_seed', False) and runner.world_size > 1:
            runner.logger.warning('randomness.diff_rank_seed=True: the random states of the other '
                                  'ranks are not in the checkpoint, so they are not restored')
            self._pending = None
            return
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore(self._pending, everything=True)
            self._pending = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            self._restore(self._pending, everything=False)
            self._pending = None

    @staticmethod
    def _restore(state: dict, everything: bool) -> None:
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            states = state['cuda']
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        if not everything:
            return
        if 'numpy' in state:
            s = state['numpy']
            keys = np.asarray(s['keys'].numpy(), dtype=np.uint32)
            np.random.set_state((s['kind'], keys, s['pos'], s['has_gauss'], s['gauss']))
        if 'python' in state:
            s = state['python']
            random.setstate((s['version'], tuple(s['internal']), s['gauss_next']))


__all__ = ['ExportStudentHook', 'LossWeightScheduleHook', 'RandomStateHook', 'StopDistillationHook',
           'TeacherEvalHook', 'schedule_factor', 'weight_attributes']
