"""Glue between configs with a ``distiller`` block and MMEngine's Runner."""
import os
import os.path as osp
import shutil
from contextlib import contextmanager
from typing import Dict, Optional

import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from torch import Tensor

from .checkpoint import extract_state_dict, load_state, safe_torch_load, trust_directory

TEACHER_PREFIX = 'teacher.'


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
    model = dict(distiller)
    model['student'] = cfg.model
    cfg.model = model
    cfg.pop('distiller')
    custom = cfg.get('custom_imports', dict(imports=[]))
    if 'fmkt_mm' not in custom.get('imports', []):
        cfg.custom_imports = dict(imports=list(custom.get('imports', [])) + ['fmkt_mm'],
                                  allow_failed_imports=False)
    use_distill_log_processor(cfg)
    return cfg


def make_reproducible(cfg: Config, seed: Optional[int] = None, deterministic: bool = True) -> Config:
    """Seed the run (``seed``, or the config's) and, with ``deterministic``,
    ask for deterministic algorithms: MMEngine's ``randomness.deterministic``
    (deterministic cuDNN kernels without autotuning,
    ``torch.use_deterministic_algorithms``) and the cuBLAS workspace setting
    torch needs for deterministic matrix products on a GPU
    (``CUBLAS_WORKSPACE_CONFIG``, unless already set; it must be set before
    CUDA starts). Build the runner with :func:`build_runner`. The same seed
    in the same environment (versions, device, thread count, process count)
    then trains to the same weights."""
    randomness = dict(cfg.get('randomness') or {})
    if seed is not None:
        randomness['seed'] = seed
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        randomness['deterministic'] = True
    cfg.randomness = randomness
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The config's runner (its ``runner_type`` if it names one).

    With ``randomness.deterministic``, MMEngine makes torch raise on every
    operator that has no deterministic implementation (on a GPU, some
    interpolation, pooling and indexing backward passes), which can stop a
    GPU training. Here such an operator warns instead, naming itself, and
    the run goes on: deterministic wherever torch can be, and it says where
    it cannot. (mmcv's CUDA ops, e.g. RoIAlign, accumulate with atomic adds
    without consulting the flag.)"""
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if (cfg.get('randomness') or {}).get('deterministic'):
        torch.use_deterministic_algorithms(True, warn_only=True)
    return runner


def use_distill_log_processor(cfg: Config) -> Config:
    """Swap MMEngine's stock ``LogProcessor`` for
    :class:`~fmkt_mm.log_processor.DistillLogProcessor` (same arguments):
    per-step terms averaged like the losses, per-level terms summed on the
    console line. A custom processor chosen by the config is kept."""
    processor = dict(cfg.get('log_processor') or {})
    if processor.get('type', 'LogProcessor') in ('LogProcessor', 'mmengine.LogProcessor'):
        processor['type'] = 'fmkt_mm.DistillLogProcessor'
        cfg.log_processor = processor
    return cfg


@contextmanager
def clean_up_on_failure(work_dir: str):
    """Remove what a run that failed during set-up wrote into ``work_dir``:
    the whole directory if the run created it, otherwise the files and
    folders that appeared in it."""
    existed = osp.isdir(work_dir)
    before = set(os.listdir(work_dir)) if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(work_dir, ignore_errors=True)
        elif osp.isdir(work_dir):
            for name in set(os.listdir(work_dir)) - before:
                path = osp.join(work_dir, name)
                shutil.rmtree(path, ignore_errors=True) if osp.isdir(path) else os.remove(path)
        raise


def prepare_work_dir(cfg: Config, config_path: str, work_dir=None) -> str:
    """Set ``cfg.work_dir`` and what every run of the tools gets:

    * the work directory is trusted: this run's own checkpoints may be
      resumed (they load with ``weights_only=True`` anyway);
    * :class:`~fmkt_mm.hooks.SafeCheckpointHook`: checkpoints hold only
      tensors and plain data;
    * :class:`~fmkt_mm.hooks.RandomStateHook`: a resumed run repeats the
      uninterrupted one;
    * checkpoints are written atomically (the ``atomic_local`` file backend)
      when they go to a local directory and no other backend is configured.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    trust_directory(cfg.work_dir)  # this run's own checkpoints may be resumed
    hooks = list(cfg.get('custom_hooks', []))
    for name in ('SafeCheckpointHook', 'RandomStateHook'):
        if not any(h.get('type') in (name, 'fmkt_mm.' + name) for h in hooks):
            hooks.append(dict(type='fmkt_mm.' + name))
    cfg.custom_hooks = hooks
    use_atomic_checkpoints(cfg)
    return cfg.work_dir


def use_atomic_checkpoints(cfg: Config) -> Config:
    """Route the CheckpointHook's writes through the ``atomic_local`` file
    backend (temporary file + rename), unless the config disables the hook,
    saves elsewhere than a local path, or chose a backend itself."""
    default_hooks = cfg.get('default_hooks')
    if default_hooks is None:
        cfg.default_hooks = default_hooks = dict()
    checkpoint = default_hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
    if checkpoint is None or checkpoint.get('type') not in ('CheckpointHook', 'mmengine.CheckpointHook'):
        return cfg
    if checkpoint.get('backend_args') is not None or checkpoint.get('file_client_args') is not None:
        return cfg
    out_dir = checkpoint.get('out_dir')
    if out_dir is not None and '://' in str(out_dir):
        return cfg
    checkpoint = dict(checkpoint)
    checkpoint['backend_args'] = dict(backend='atomic_local')
    default_hooks['checkpoint'] = checkpoint
    return cfg


def teacher_from_checkpoint(cfg: Config, checkpoint: str) -> Optional[Dict[str, Tensor]]:
    """Let a distiller be tested without its teacher's file.

    A distillation checkpoint holds the frozen teacher's tensors
    (``teacher.*``) beside the student's; inference never runs the teacher
    (the flow reads the student's features; deploy mode 'student' and
    FM-KT^Theta predict with the plain student). When ``checkpoint`` holds
    them, the teacher is built from its config alone, and the checkpoint's
    weights are returned for :func:`load_teacher_state`, which loads them
    strictly once the model exists. Returns None otherwise.
    """
    model = cfg.get('model') or {}
    teacher, teachers = model.get('teacher'), model.get('teachers')
    if not isinstance(teacher, dict) and not isinstance(teachers, (list, tuple)):
        return None
    state = extract_state_dict(safe_torch_load(checkpoint, what='checkpoint'))
    if not any(key.startswith(TEACHER_PREFIX) for key in state):
        return None
    if isinstance(teacher, dict):
        cfg.model.teacher = dict(teacher, checkpoint=None, allow_random_init=True)
    else:
        cfg.model.teachers = [dict(entry, checkpoint=None, allow_random_init=True) for entry in teachers]
    return state


def load_teacher_state(model, state: Dict[str, Tensor], checkpoint: str) -> None:
    """Load the ``teacher.*`` tensors of a checkpoint's ``state`` into
    ``model.teacher`` (one teacher, or every teacher of several as
    ``teacher.0.*``, ``teacher.1.*``) strictly: a teacher that does not fit
    the config's fails with the missing/unexpected/wrong-shape keys."""
    model = model.module if is_model_wrapper(model) else model
    load_state(model.teacher, state, strict=True, prefix=TEACHER_PREFIX,
               what=f'the teacher in checkpoint {checkpoint!r}')
