"""Config preparation: what a distillation config becomes before MMEngine
builds the run (the distiller block applied, the work dir's hooks and
durable checkpoints, the launcher, the teacher taken from a checkpoint).
:class:`~fmkt_mm.runner.DistillRunner` calls :func:`prepare_config`;
:mod:`fmkt_mm.apis`, the front door above the runner, re-exports these."""
import os.path as osp
from typing import Any, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import CheckpointHook, EMAHook
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import LogProcessor

from .checkpoint import extract_state_dict, safe_torch_load
from .config_types import is_type
from .hooks import DurableCheckpointHook, FiniteGradientHook, FlowEMAHook, RandomStateHook, SafeCheckpointHook
from .launch import setup_launcher
from .optim import enable_amp
from .registry import HOOKS, LOG_PROCESSORS, OPTIM_WRAPPERS
from .state_fit import TEACHER_PREFIX
from .train_loop import resumable_loop


def apply_distiller(cfg: Config) -> Config:
    """Wrap the config's stock ``model`` into its ``distiller`` block.

    A distillation config inherits a stock student config and adds::

        distiller = dict(type='fmkt_mm.ClassificationDistiller', teacher=..., flow=...)

    which becomes ``model = dict(type=..., student=<stock model>, teacher=..., ...)``.
    Configs without a ``distiller`` block are returned unchanged.
    """
    distiller = cfg.get('distiller')
    if distiller is None:
        return cfg
    if 'student' in distiller:
        raise ValueError('the distiller block takes its student from the config\'s `model`; '
                         'remove `student` from `distiller`')
    model = _unbuilt(distiller)
    model['student'] = _unbuilt(cfg.model)
    cfg.model = model
    cfg.pop('distiller')
    custom = cfg.get('custom_imports', dict(imports=[]))
    if 'fmkt_mm' not in custom.get('imports', []):
        cfg.custom_imports = dict(imports=list(custom.get('imports', [])) + ['fmkt_mm'],
                                  allow_failed_imports=False)
    use_distill_log_processor(cfg)
    return cfg


def _unbuilt(value: Any) -> Any:
    """A config dict as a plain dict, the lazy imports of a new-style config
    left unbuilt (copying a ``ConfigDict`` by ``dict()`` builds them into
    classes, which MMEngine cannot print into the run's log)."""
    return value._to_lazy_dict() if isinstance(value, ConfigDict) else dict(value)


def use_distill_log_processor(cfg: Config) -> Config:
    """Swap MMEngine's stock ``LogProcessor`` for
    :class:`~fmkt_mm.log_processor.DistillLogProcessor` (same arguments):
    per-step terms averaged like the losses, per-level terms summed on the
    console line. A custom processor chosen by the config is kept."""
    processor = dict(cfg.get('log_processor') or {})
    if processor.get('type') is None or is_type(processor['type'], LOG_PROCESSORS, LogProcessor):
        processor['type'] = 'fmkt_mm.DistillLogProcessor'
        cfg.log_processor = processor
    return cfg


def prepare_config(cfg: Config) -> Config:
    """Everything :class:`~fmkt_mm.runner.DistillRunner` does to a config
    before MMEngine builds the run (each step leaves a prepared config as it
    is): the distiller applied, the launcher set up (gloo on a CPU), the
    work dir's hooks and durable checkpoints, AMP on a CPU, dataloaders
    without workers made valid."""
    apply_distiller(cfg)
    setup_launcher(cfg, cfg.get('launcher') or 'none')
    prepare_work_dir(cfg, getattr(cfg, 'filename', None) or 'run.py')
    wrapper = cfg.get('optim_wrapper') or {}
    if is_type(wrapper.get('type'), OPTIM_WRAPPERS, AmpOptimWrapper) and not torch.cuda.is_available():
        enable_amp(cfg)  # the stock tools' --amp, on a CPU: bf16 autocast
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        # mmpretrain's train.py asks for persistent workers, which torch refuses without workers
        if cfg.get(loader) and not cfg[loader].get('num_workers') and cfg[loader].get('persistent_workers'):
            cfg[loader].persistent_workers = False
    return cfg


def set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str] = None) -> None:
    """``cfg.work_dir``: ``work_dir`` when given, else the config's own, else
    ``work_dirs/<config name>`` (as mmdet's tools choose it)."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def prepare_work_dir(cfg: Config, config_path: str, work_dir: Optional[str] = None) -> str:
    """Set ``cfg.work_dir`` and what every run gets:

    * :class:`~fmkt_mm.hooks.SafeCheckpointHook`: checkpoints hold only
      tensors and plain data (they load with ``weights_only=True``);
    * :class:`~fmkt_mm.hooks.RandomStateHook`: a resumed run repeats the
      uninterrupted one;
    * :class:`~fmkt_mm.hooks.FiniteGradientHook`: a step whose gradients
      are not finite stops the run before the update;
    * durable checkpoints (:func:`use_durable_checkpoints`);
    * an epoch loop that resumes exactly inside an epoch
      (:class:`~fmkt_mm.train_loop.ResumableEpochBasedTrainLoop`);
    * :class:`~fmkt_mm.hooks.FlowEMAHook` where the distiller keeps an EMA
      of its flows;
    * for a distiller, :class:`~fmkt_mm.hooks.DistillEMAHook` in place of
      MMEngine's ``EMAHook`` (RTMDet's, YOLOX's): the EMA of the student
      (and deployed flows), without a copy of the teacher.
    """
    set_work_dir(cfg, config_path, work_dir)
    is_distiller = isinstance(cfg.get('model'), dict) and 'student' in cfg.model
    hooks = [distill_ema(h) if is_distiller else h for h in cfg.get('custom_hooks', [])]
    needed = [SafeCheckpointHook, RandomStateHook, FiniteGradientHook] + \
        ([FlowEMAHook] if keeps_flow_ema(cfg) else [])
    for hook in needed:
        if not any(is_type(h.get('type'), HOOKS, hook, subclasses=True) for h in hooks):
            hooks.append(dict(type='fmkt_mm.' + hook.__name__))
    cfg.custom_hooks = hooks
    use_durable_checkpoints(cfg)
    if cfg.get('train_cfg'):
        cfg.train_cfg = resumable_loop(cfg.train_cfg)
    return cfg.work_dir


def distill_ema(hook: dict) -> dict:
    """A config's hook entry, MMEngine's ``EMAHook`` made a
    :class:`~fmkt_mm.hooks.DistillEMAHook` (same arguments)."""
    if not is_type(hook.get('type'), HOOKS, EMAHook):
        return hook
    return dict(_unbuilt(hook), type='fmkt_mm.DistillEMAHook')


def keeps_flow_ema(cfg: Config) -> bool:
    """Whether the config's distiller keeps an EMA of its flows (grouped
    ``deploy.ema_momentum`` or flat ``ema_momentum``)."""
    model = cfg.get('model') if isinstance(cfg.get('model'), dict) else {}
    distiller = cfg.get('distiller') if isinstance(cfg.get('distiller'), dict) else model
    deploy = distiller.get('deploy') if isinstance(distiller.get('deploy'), dict) else {}
    return deploy.get('ema_momentum', distiller.get('ema_momentum')) is not None


#: the durable checkpoint hook, as the prepared config names it
DURABLE_CHECKPOINT_HOOK = 'fmkt_mm.DurableCheckpointHook'


def use_durable_checkpoints(cfg: Config) -> Config:
    """Checkpoints written atomically with a sha256 sidecar (the
    ``atomic_local`` file backend) and rotated only after the new one is
    verified (:class:`~fmkt_mm.hooks.DurableCheckpointHook` in place of the
    stock hook), unless the config disables the hook, saves elsewhere than a
    local path, chose a backend itself, or uses a checkpoint hook of its own."""
    default_hooks = cfg.get('default_hooks')
    if default_hooks is None:
        cfg.default_hooks = default_hooks = dict()
    checkpoint = default_hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
    if checkpoint is None or not is_type(checkpoint.get('type'), HOOKS, CheckpointHook, DurableCheckpointHook):
        return cfg
    if checkpoint.get('backend_args') is not None or checkpoint.get('file_client_args') is not None:
        return cfg
    out_dir = checkpoint.get('out_dir')
    if out_dir is not None and '://' in str(out_dir):
        return cfg
    checkpoint = dict(checkpoint)
    checkpoint['type'] = DURABLE_CHECKPOINT_HOOK
    checkpoint['backend_args'] = dict(backend='atomic_local')
    default_hooks['checkpoint'] = checkpoint
    return cfg


def teacher_from_checkpoint(cfg: Config, checkpoint: str) -> Optional[dict]:
    """Let a distiller be tested (or resumed) without its teacher's file.

    A distillation checkpoint holds the frozen teacher's tensors
    (``teacher.*``) beside the student's; inference never runs the teacher
    (the flow reads the student's features; deploy mode 'student' and
    FM-KT^Theta predict with the plain student). When ``checkpoint`` holds
    them, the teacher is built from its config alone, and
    :meth:`DistillRunner.load_checkpoint <fmkt_mm.runner.DistillRunner.load_checkpoint>`
    loads them strictly with the rest of the model: a teacher that does not
    fit its config fails with the missing/unexpected/wrong-shape keys.
    Returns the checkpoint as read when the teacher is taken from it (so
    that the runner does not read, or unpickle, the file a second time),
    else None.
    """
    model = cfg.get('model') or {}
    teacher, teachers = model.get('teacher'), model.get('teachers')
    if not isinstance(teacher, dict) and not isinstance(teachers, (list, tuple)):
        return None
    loaded = safe_torch_load(checkpoint, what='checkpoint', allow_unsafe_pickle=bool(cfg.get('allow_unsafe_pickle')),
                             role='train' if cfg.get('resume') else None)
    if not any(key.startswith(TEACHER_PREFIX) for key in extract_state_dict(loaded)):
        return None
    if isinstance(teacher, dict):
        cfg.model.teacher = dict(teacher, checkpoint=None, allow_random_init=True)
    else:
        cfg.model.teachers = [dict(entry, checkpoint=None, allow_random_init=True) for entry in teachers]
    return loaded
