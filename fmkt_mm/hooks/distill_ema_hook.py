"""mmdet's model EMA for a distiller: the trained, deployed part only."""
from typing import TYPE_CHECKING, List

from mmengine.hooks import EMAHook
from mmengine.registry import MODELS
from torch import nn

from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


class AveragedPart(nn.Module):
    """The children of a distiller that an EMA averages, under their own
    names (so the EMA's state-dict keys are the distiller's: ``student.*``,
    ``flows.*``). The modules are shared with the distiller, not copied."""

    def __init__(self, model: nn.Module, names: List[str]) -> None:
        super().__init__()
        for name in names:
            self.add_module(name, getattr(model, name))


def averaged_names(model: nn.Module) -> List[str]:
    """What an EMA of ``model`` averages: for a distiller, the student, and
    the other trained modules where prediction runs them (deploy mode
    ``'flow'``), never the frozen teacher; for any other model, all of it."""
    if not hasattr(model, 'set_distillation'):
        return [name for name, _ in model.named_children()]
    if getattr(model, 'deploy_mode', 'student') == 'student':
        return ['student']
    return [name for name, _ in model.named_children() if name != 'teacher']


@HOOKS.register_module()
class DistillEMAHook(EMAHook):
    """MMEngine's ``EMAHook`` (same arguments: ``ema_type='ExpMomentumEMA'``,
    ``momentum``, ``update_buffers``, ``begin_iter``, ...) for a distiller.

    The stock hook averages the whole model, so on a distiller it keeps a
    second copy of the frozen teacher (every teacher tensor in
    ``ema_state_dict``: memory that grows with the teacher). This one
    averages :func:`averaged_names` only: the student, plus the flows where
    they are deployed. Everything else is the stock hook's: the EMA weights
    are swapped in for validation and testing, checkpoints hold them in
    ``state_dict`` (so ``tools/test.py`` and ``tools/export_student.py``
    use them, as in mmdet) and the raw weights in ``ema_state_dict``.
    :func:`fmkt_mm.apis.prepare_work_dir` sets it in place of an ``EMAHook``
    of the config (RTMDet's and YOLOX's stock hook lists carry one) when the
    model is a distiller.
    """

    def before_run(self, runner: 'Runner') -> None:
        model = unwrap(runner.model)
        self.src_model = AveragedPart(model, averaged_names(model))
        self.ema_model = MODELS.build(self.ema_cfg, default_args=dict(model=self.src_model))
