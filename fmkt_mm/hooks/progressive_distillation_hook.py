"""Flow-guided progressive distillation: the transfer grows from simple to complex.

:class:`ProgressiveDistillationHook` changes, at configured milestones (by
iteration or by epoch), up to three settings of the distiller:

* ``num_steps``: the flow's training steps ``N`` (few -> many); a flow that
  draws ``N`` from ``num_steps_choices`` draws from the choices up to the
  current value. With ``follow_eval_steps`` the distiller's ``eval_steps``
  follows, so validation during training runs the depth being trained
  (a :class:`~fmkt_mm.hooks.FlowStepsHook` with ``val_steps`` still decides
  at validation).
* ``level_weights`` (detection): per-level multipliers of the distiller's
  ``level_weights``, e.g. coarse to fine over FPN levels ``(P3, P4, P5, P6)``::

      level_weights=dict(milestones=[200, 400],
                         values=[[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])

* ``curriculum`` (classification): the fraction of each batch, easiest
  first by the teacher's confidence, that receives the distillation loss
  (easy -> hard targets), e.g. ``values=[0.5, 0.75, 1.0]``.

Each schedule is ``dict(milestones=[m_1, ..., m_k], values=[v_0, ..., v_k])``:
``v_0`` holds before ``m_1``, ``v_j`` from ``m_j`` on. The settings are a
function of the current iteration (or epoch) only, so resuming a run
restores them. Every change is logged, and the current values are logged as
``train/progressive/*`` scalars with the training losses.
"""
from typing import TYPE_CHECKING, Dict, Optional

from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..distill.base import BaseDistiller
from ..registry import HOOKS
from .schedules import Schedule
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class ProgressiveDistillationHook(Hook):
    """Grows the transfer over training (module docstring).

    Args:
        num_steps: schedule of the flows' training steps (values: ints >= 1).
        level_weights: schedule of per-level multipliers (values: one list of
            floats >= 0 per stage, one float per distilled level); detection.
        curriculum: schedule of the kept fraction of each batch (values in
            ``(0, 1]``); classification.
        by_epoch: milestones count epochs (``runner.epoch``, 0-based) instead
            of iterations (``runner.iter``).
        follow_eval_steps: also set the distiller's ``eval_steps`` to the
            current ``num_steps``.
    """

    priority = 'NORMAL'

    def __init__(self, num_steps: Optional[dict] = None, level_weights: Optional[dict] = None,
                 curriculum: Optional[dict] = None, by_epoch: bool = False,
                 follow_eval_steps: bool = True) -> None:
        self.schedules: Dict[str, Schedule] = {}
        for name, cfg in (('num_steps', num_steps), ('level_weights', level_weights),
                          ('curriculum', curriculum)):
            schedule = Schedule.build(name, cfg)
            if schedule is not None:
                self.schedules[name] = schedule
        if not self.schedules:
            raise ValueError('ProgressiveDistillationHook needs at least one of num_steps, '
                             'level_weights, curriculum')
        self._check_values()
        self.by_epoch, self.follow_eval_steps = by_epoch, follow_eval_steps
        self._current: Dict[str, object] = {}

    def _check_values(self):
        for name, schedule in self.schedules.items():
            for v in schedule.values:
                if name == 'num_steps' and not (isinstance(v, int) and v >= 1):
                    raise ValueError(f'progressive num_steps values must be integers >= 1, got {v!r}')
                if name == 'curriculum' and not (isinstance(v, (int, float)) and 0 < v <= 1):
                    raise ValueError(f'progressive curriculum values are kept fractions in (0, 1], got {v!r}')
                if name == 'level_weights' and (not isinstance(v, (list, tuple))
                                                or any(float(w) < 0 for w in v)):
                    raise ValueError(f'progressive level_weights values are lists of multipliers >= 0 '
                                     f'(one per distilled level), got {v!r}')

    # -- applying -------------------------------------------------------------------
    def _check_model(self, model):
        """Fail before training, naming the setting, where the distiller
        lacks a scheduled setting or a scheduled value does not fit it."""
        if not isinstance(model, BaseDistiller):
            raise ValueError(f'progressive distillation needs an fmkt_mm distiller, got '
                             f'{type(model).__name__}')
        checks = dict(num_steps=model.check_train_steps, level_weights=model.check_level_scales,
                      curriculum=model.check_curriculum)
        for name, schedule in self.schedules.items():
            for value in schedule.values:
                try:
                    checks[name](value)
                except (TypeError, ValueError) as error:
                    raise ValueError(f'progressive {name}: {error}') from error

    def _apply(self, model, name, value):
        if name == 'num_steps':
            model.set_train_steps(value)
            if self.follow_eval_steps:
                model.set_eval_steps(value, model.extra_eval_steps)
        elif name == 'level_weights':
            model.set_level_scales(value)
        elif name == 'curriculum':
            model.set_curriculum(value)

    def settings(self, point: int) -> Dict[str, object]:
        """The scheduled values at iteration (or epoch) ``point``."""
        return {name: schedule(point) for name, schedule in self.schedules.items()}

    def _update(self, runner):
        model = unwrap(runner.model)
        point = runner.epoch if self.by_epoch else runner.iter
        unit = 'epoch' if self.by_epoch else 'iter'
        changes = []
        for name, value in self.settings(point).items():
            if self._current.get(name) != value:
                changes.append(f'{name} {self._current.get(name, "-")} -> {value}')
                self._apply(model, name, value)
                self._current[name] = value
        if changes:
            runner.logger.info(f'progressive distillation at {unit} {point}: ' + ', '.join(changes))
        for name, value in self._current.items():
            if name == 'level_weights':
                for k, w in enumerate(value):
                    runner.message_hub.update_scalar(f'train/progressive/level_scale{k}', float(w))
            else:
                runner.message_hub.update_scalar(f'train/progressive/{name}', float(value))

    def before_train(self, runner: 'Runner') -> None:
        self._check_model(unwrap(runner.model))
        self._current = {}
        self._update(runner)

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        self._update(runner)
