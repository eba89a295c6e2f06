"""No plain student trained in a distiller's place, under any launcher.

mmdet's, mmpretrain's and mmseg's own ``tools/train.py`` / ``tools/test.py``
(and ``mim train``, which runs them) build ``RUNNERS.build(cfg)`` when the
config names a ``runner_type`` and MMEngine's plain ``Runner.from_cfg(cfg)``
otherwise. A plain ``Runner`` knows nothing of a ``distiller`` block: it
would train (or score) the stock student and exit 0.

:func:`guard_runners` closes that route in every process that imports
fmkt_mm (``custom_imports=['fmkt_mm']`` imports it when the config is read,
before the runner is built): MMEngine's ``Runner.__init__`` first checks its
config and refuses, before it creates anything, a config that still carries
a ``distiller`` block (:class:`~fmkt_mm.runner.DistillRunner` turns the block
into the model before it gets there), and one whose task package
(``default_scope``: mmdet, mmpretrain, mmseg) is not installed, naming the
line to add or the extra to install.
"""
import functools
import importlib.util
import inspect
import sys
from typing import Any, Mapping, Optional

from .stack import TASKS, install_hint

#: the runner of fmkt_mm configs (:class:`fmkt_mm.runner.DistillRunner`)
RUNNER_TYPE = 'fmkt_mm.DistillRunner'


class MissingTaskPackageError(ImportError):
    """A config's task package (mmdet, mmpretrain, mmseg) is not installed."""


def unapplied_distiller_message(config_path: str, runner: str) -> str:
    """Why a config with a distiller block must not run under ``runner``, and the fix."""
    return (f"{config_path} has a distiller block, but it is run by {runner}, which ignores the block and "
            f"would train the plain student. Add runner_type = '{RUNNER_TYPE}' (and "
            f"custom_imports = dict(imports=['fmkt_mm'])) to the config: mmdet's, mmpretrain's and "
            f"mmseg's own tools/train.py and tools/test.py (and mim train) then distil it.")


def package_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # blocked in sys.modules, or a broken parent
        return False


def check_task_package(cfg: Mapping, config_path: str = 'the config') -> None:
    """Raise :class:`MissingTaskPackageError` naming the extra to install
    when the config's ``default_scope`` is a task package that is not
    installed (MMEngine would otherwise fail later with ``KeyError:
    'ImageClassifier is not in the mmengine::model registry'``)."""
    scope = cfg.get('default_scope') if hasattr(cfg, 'get') else None
    if scope in TASKS and not package_importable(scope):
        raise MissingTaskPackageError(
            f"{config_path} is a config of {scope} (default_scope='{scope}'), and {scope} is not "
            f'installed in this environment ({sys.executable}). Install it with its tested range: '
            f'{install_hint(scope)}')


def check_runner_config(cfg: Optional[Mapping], runner_cls: type) -> None:
    """What :func:`guard_runners` checks before a Runner starts."""
    if cfg is None or not hasattr(cfg, 'get'):
        return
    path = getattr(cfg, 'filename', None) or 'the config'
    check_task_package(cfg, path)
    if cfg.get('distiller') is not None:
        raise ValueError(unapplied_distiller_message(path, f'{runner_cls.__module__}.{runner_cls.__name__}'))


def guard_runners() -> None:
    """Make MMEngine's ``Runner.__init__`` (and so every subclass's) call
    :func:`check_runner_config` first. Idempotent."""
    from mmengine.runner import Runner
    original = Runner.__init__
    if getattr(original, '_fmkt_mm_guarded', False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cfg = signature.bind_partial(self, *args, **kwargs).arguments.get('cfg')
        check_runner_config(cfg, type(self))
        original(self, *args, **kwargs)

    __init__._fmkt_mm_guarded = True
    Runner.__init__ = __init__


__all__ = ['RUNNER_TYPE', 'MissingTaskPackageError', 'check_runner_config', 'check_task_package',
           'guard_runners', 'unapplied_distiller_message']
