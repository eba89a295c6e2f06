"""Glue between configs with a ``distiller`` block and MMEngine's Runner."""
import os
import os.path as osp
import shutil
from contextlib import contextmanager

from mmengine.config import Config

from .checkpoint import trust_directory


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
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    trust_directory(cfg.work_dir)  # this run's own checkpoints may be resumed
    hooks = list(cfg.get('custom_hooks', []))
    if not any(h.get('type') in ('SafeCheckpointHook', 'fmkt_mm.SafeCheckpointHook') for h in hooks):
        hooks.append(dict(type='fmkt_mm.SafeCheckpointHook'))
    cfg.custom_hooks = hooks
    return cfg.work_dir
