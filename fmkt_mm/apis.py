"""The front door of fmkt_mm's tools: a config read and checked as the
project's tools start from it, made reproducible, and built into its runner
(:class:`~fmkt_mm.runner.DistillRunner` for every fmkt_mm config). Config
preparation lives below the runner, in :mod:`fmkt_mm.config_prep`; its
functions are re-exported here."""
import os
from typing import ContextManager, Optional

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .config_prep import (  # noqa: F401  (re-exported: the functions tools and tests call)
    DURABLE_CHECKPOINT_HOOK,
    apply_distiller,
    distill_ema,
    keeps_flow_ema,
    prepare_config,
    prepare_work_dir,
    set_work_dir,
    teacher_from_checkpoint,
    use_distill_log_processor,
    use_durable_checkpoints,
)
from .runner import DistillRunner
from .runner_guard import RUNNER_TYPE, check_task_package, unapplied_distiller_message
from .work_dir import WorkDirSnapshot


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
    """The config's runner: its ``runner_type`` if it names one (fmkt_mm's
    configs name :data:`RUNNER_TYPE`), else MMEngine's ``Runner``."""
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def clean_up_on_failure(work_dir: str) -> ContextManager[WorkDirSnapshot]:
    """Remove what a run that failed during set-up wrote into ``work_dir``:
    the whole directory if the run created it, otherwise the files and
    folders that appeared in it (a context manager)."""
    return WorkDirSnapshot(work_dir).restore_on_failure()


def check_config_form(cfg: Config, config_path: str = 'the config') -> Config:
    """Make sure the config distils under every launcher, or fail naming the fix.

    mmdet's and mmpretrain's own ``tools/train.py`` build ``runner_type``
    when the config names one and a plain ``Runner`` otherwise, which knows
    nothing of a ``distiller`` block and would train the plain student. So a
    config with a distiller block must name :data:`RUNNER_TYPE` (or a
    subclass); a config without one gets it here, so that the project's tools
    give every run the same guarantees."""
    check_task_package(cfg, config_path)
    runner_type = cfg.get('runner_type')
    if 'distiller' in cfg and runner_type is None:
        raise ValueError(unapplied_distiller_message(
            config_path, "mmdet's and mmpretrain's own tools/train.py (and mim train) as no runner_type"))
    if runner_type is None:
        cfg.runner_type = RUNNER_TYPE
    elif 'distiller' in cfg and not _is_distill_runner(runner_type):
        raise ValueError(f'{config_path} has a distiller block and runner_type={runner_type!r}, '
                         f'which does not apply it; use {RUNNER_TYPE!r} or a subclass of it')
    return cfg


def tool_config(config_path: str, cfg_options: Optional[dict] = None, launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """The config as the project's tools start from it: read, overridden by
    ``--cfg-options``, checked (:func:`check_config_form`), with the launcher
    and the work dir (``--work-dir``, else the config's, else
    ``work_dirs/<config name>``, as mmdet's tools choose it)."""
    cfg = Config.fromfile(config_path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    check_config_form(cfg, config_path)
    cfg.launcher = launcher
    set_work_dir(cfg, config_path, work_dir)
    return cfg


def _is_distill_runner(runner_type) -> bool:
    if isinstance(runner_type, type):
        return issubclass(runner_type, DistillRunner)
    cls = RUNNERS.get(runner_type)
    return isinstance(cls, type) and issubclass(cls, DistillRunner)
