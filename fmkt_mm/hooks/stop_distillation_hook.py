"""Switching distillation off after a number of iterations or epochs."""
from typing import TYPE_CHECKING, Optional, Union

from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..registry import HOOKS
from .utils import require_distiller, unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


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

    ``stop_epoch='pipeline_switch'`` stops where the run's data pipeline
    switches off its strong augmentation (mosaic, mixup), as the published
    RTMDet and YOLOX distillation recipes do: the epoch of mmdet's
    ``PipelineSwitchHook`` (``switch_epoch``, RTMDet) or
    ``YOLOXModeSwitchHook`` (``max_epochs - num_last_epochs - 1``, YOLOX),
    read from the run's hooks before training; a run with neither is
    refused.

    Example::

        custom_hooks = [dict(type='fmkt_mm.StopDistillationHook', stop_epoch=80)]
        custom_hooks = [*_base_.custom_hooks,    # RTMDet's EMAHook and PipelineSwitchHook
                        dict(type='fmkt_mm.StopDistillationHook', stop_epoch='pipeline_switch')]
    """

    priority = 'NORMAL'
    #: ``stop_epoch`` that follows the pipeline switch
    PIPELINE_SWITCH = 'pipeline_switch'

    def __init__(self, stop_iter: Optional[int] = None, stop_epoch: Optional[Union[int, str]] = None) -> None:
        if stop_iter is None and stop_epoch is None:
            raise ValueError('StopDistillationHook needs stop_iter or stop_epoch')
        for name, value in (('stop_iter', stop_iter), ('stop_epoch', stop_epoch)):
            if value is None or (name == 'stop_epoch' and value == self.PIPELINE_SWITCH):
                continue
            if not isinstance(value, int) or value < 0:
                also = f' or {self.PIPELINE_SWITCH!r}' if name == 'stop_epoch' else ''
                raise ValueError(f'{name} must be an integer >= 0{also}, got {value!r}')
        self.stop_iter, self.stop_epoch = stop_iter, stop_epoch

    def _distilling(self, runner) -> bool:
        if self.stop_iter is not None and runner.iter >= self.stop_iter:
            return False
        if self.stop_epoch is not None and runner.epoch >= self.stop_epoch:
            return False
        return True

    def before_train(self, runner: 'Runner') -> None:
        require_distiller(runner, type(self).__name__)
        if self.stop_epoch == self.PIPELINE_SWITCH:
            self.stop_epoch = pipeline_switch_epoch(runner)
            runner.logger.info(f'distillation stops at the pipeline switch: epoch {self.stop_epoch + 1}')

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        model = unwrap(runner.model)
        distilling = self._distilling(runner)
        if model.distillation_enabled and not distilling:
            runner.logger.info(
                f'distillation stopped at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'the student trains on its task loss alone from now on')
        model.set_distillation(distilling)


def pipeline_switch_epoch(runner: 'Runner') -> int:
    """The 0-based epoch from which the run trains without its strong
    augmentation: mmdet's ``PipelineSwitchHook`` (RTMDet) or
    ``YOLOXModeSwitchHook`` (YOLOX) among the runner's hooks."""
    for hook in runner.hooks:
        kind = type(hook).__name__
        if kind == 'PipelineSwitchHook':
            return int(hook.switch_epoch)
        if kind == 'YOLOXModeSwitchHook':
            return max(0, int(runner.max_epochs) - int(hook.num_last_epochs) - 1)
    raise ValueError("StopDistillationHook(stop_epoch='pipeline_switch') needs mmdet's PipelineSwitchHook "
                     "(RTMDet) or YOLOXModeSwitchHook (YOLOX) in custom_hooks, and this run has neither: "
                     "give stop_epoch as a number, or keep the stock config's hooks "
                     "(custom_hooks = [*_base_.custom_hooks, dict(type='fmkt_mm.StopDistillationHook', ...)])")
