"""What this environment can run, before a run starts.

    python -m fmkt_mm.check_env

Prints the versions of the stack against the ranges fmkt_mm declares
(:mod:`fmkt_mm.stack`), whether mmcv's compiled ops (and their CUDA kernels)
are there, the GPUs, and then tries what a run does first, for each
installed task package (mmdet, mmpretrain, mmseg): resolve one of the
package's own configs through ``pkg::`` (MMEngine 0.10 needs
``pkg_resources`` for it), and build the model of one of fmkt_mm's shipped
configs of that task (its teacher randomly initialised: nothing is
downloaded). "ready" only when each of these worked; otherwise each failure
is listed with its fix, and the exit status is 1.
"""
import importlib
import importlib.metadata
import os.path as osp
import platform
import sys
import tempfile
import warnings
from typing import Callable, List, Optional, Tuple

from .stack import CORE, EXTRAS, TASKS, TESTED, install_hint

#: what each installed task package must be able to do: (one of its own
#: configs, resolved through ``pkg::``; one of fmkt_mm's shipped configs, built)
PROBES = dict(
    mmdet=('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
           'fashion_det/fmkt_retinanet_r18_to_r18w16_deploy-student.py'),
    mmpretrain=('mmpretrain::resnet/resnet18_8xb32_in1k.py',
                'fashion_mnist/fmkt_resnet18_w16_to_resnet18_w4.py'),
    mmseg=('mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
           'fashion_seg/fmkt_pspnet_r18w32_to_r18w8_deploy-student.py'),
)
#: import name -> distribution name, where they differ
_DISTRIBUTIONS = dict(mmseg='mmsegmentation')


def _version(module: str) -> Tuple[Optional[str], Optional[str]]:
    """``(version, None)`` or ``(None, why it does not import)``; the version
    from the installed distribution's metadata (pycocotools has no
    ``__version__``)."""
    try:
        imported = importlib.import_module(module)
    except Exception as err:  # not installed, or broken at import
        return None, _why(err)
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(module, module)), None
    except importlib.metadata.PackageNotFoundError:
        return getattr(imported, '__version__', 'unknown version'), None


def _why(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ''
    return f'{type(err).__name__}: {text}'


def _mmcv_ops() -> Tuple[bool, str]:
    """Whether mmcv's compiled ops import, and the CUDA version they were built with."""
    try:
        importlib.import_module('mmcv._ext')
    except Exception:
        return False, 'none'
    from mmcv.ops import get_compiling_cuda_version
    return True, get_compiling_cuda_version()


def range_problems(requirements: List[str]) -> List[str]:
    """The requirements (setup.py's lines) that the installed distributions
    do not meet: missing, or a version outside the declared range."""
    from packaging.requirements import Requirement
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f'{requirement.name} is not installed (fmkt_mm declares {line})')
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            tested = TESTED.get(requirement.name)
            problems.append(f'{requirement.name} {installed} is outside the declared range {line}'
                            + (f' (tested: {tested})' if tested else '')
                            + f': pip install "{line}"')
    return problems


def _config_root() -> str:
    return osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')


def resolve_package_config(package: str, path: str) -> None:
    """Read one of ``package``'s own configs through ``package::``, as a
    user's config does (``_base_ = ['mmdet::...']``)."""
    from mmengine.config import Config
    try:
        with tempfile.TemporaryDirectory() as folder:
            user_config = osp.join(folder, 'user_config.py')
            with open(user_config, 'w') as f:
                f.write(f'_base_ = [{path!r}]\n')
            Config.fromfile(user_config)
    except ModuleNotFoundError as err:
        if err.name != 'pkg_resources':
            raise
        import setuptools
        raise RuntimeError(
            f'{path!r} does not resolve: MMEngine resolves {package}:: config paths with pkg_resources, '
            f'which does not import here (setuptools {setuptools.__version__}; setuptools 81 removed '
            f'it). Fix: pip install "setuptools<81"') from None


def build_shipped_config(package: str, config: str) -> None:
    """Build the distiller of a shipped fmkt_mm config of ``package``'s task,
    its teacher(s) randomly initialised (no file is read or downloaded)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from .config_prep import apply_distiller
    cfg = apply_distiller(Config.fromfile(osp.join(_config_root(), config)))
    model = cfg.model
    if model.get('teacher') is not None:
        model.teacher = dict(model.teacher, checkpoint=None, allow_random_init=True)
    with DefaultScope.overwrite_default_scope(TASKS[package][2]), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # deprecation notes of the task packages
        MODELS.build(model)


def _try(what: str, step: Callable[[], None]) -> Optional[str]:
    try:
        step()
    except Exception as err:
        return f'{what}: {_why(err)}'
    return None


def task_problems(package: str, shipped_configs: bool) -> Tuple[List[str], List[str]]:
    """``(lines, problems)`` of what a run of ``package``'s task does first."""
    own, shipped = PROBES[package]
    lines, problems = [], []
    failure = _try(f'{package}: resolving {own}', lambda: resolve_package_config(package, own))
    lines.append(f'{package:<11} configs by {package}:: ' + ('FAIL' if failure else 'resolve'))
    if failure:  # a run of this task fails there already; fix that first
        return lines, [failure]
    if not shipped_configs:
        lines.append(f'{package:<11} (fmkt_mm\'s configs/ folder is not beside the package: no shipped '
                     f'config built)')
        return lines, problems
    failure = _try(f'{package}: building the model of configs/{shipped}',
                   lambda: build_shipped_config(package, shipped))
    lines.append(f'{package:<11} configs/{shipped}: ' + ('FAIL' if failure else 'builds'))
    problems += [failure] if failure else []
    return lines, problems


def report() -> Tuple[List[str], List[str]]:
    """``(lines, problems)`` of this environment."""
    lines = [f'python      {platform.python_version()} ({sys.executable})']
    problems = []
    versions, whys = {}, {}
    for module in ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmdet', 'mmpretrain', 'mmseg',
                   'pycocotools', 'numpy', 'setuptools'):
        version, why = _version(module)
        versions[module], whys[module] = version, why
        tested = TESTED.get(_DISTRIBUTIONS.get(module, module))
        lines.append(f'{module:<11} {version or "not importable: " + why}'
                     + (f'   (tested: {tested})' if tested else ''))
    import torch
    cuda = torch.cuda.is_available()
    lines.append(f'torch CUDA  {torch.version.cuda or "none (a CPU build)"}; GPUs: '
                 f'{torch.cuda.device_count() if cuda else 0}')
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        lines.append(f'  cuda:{i}    {props.name}, {props.total_memory / 2**30:.0f} GiB, '
                     f'sm_{props.major}{props.minor}')
    if not hasattr(torch.serialization, 'safe_globals'):
        problems.append('torch < 2.5: fmkt_mm needs torch.serialization.safe_globals to load '
                        'checkpoints without running their code; upgrade torch')
    ops, ops_cuda = _mmcv_ops() if versions['mmcv'] else (False, 'none')
    lines.append(f'mmcv ops    {"compiled" if ops else "MISSING"}; CUDA kernels: '
                 f'{ops_cuda if ops and ops_cuda != "not available" else "none"}')
    installed = [package for package in TASKS if versions[package] is not None]
    if not installed:
        problems.append('no task package imports (mmdet, mmpretrain, mmseg): install one, e.g. ' +
                        install_hint('mmdet'))
    requirements = list(CORE)
    for package in installed:
        requirements += EXTRAS[TASKS[package][1]]
    problems += range_problems(requirements)
    if versions['mmcv'] and versions['mmdet'] is not None and not ops:
        problems.append('mmdet is installed but mmcv has no compiled ops (mmcv-lite?): detection '
                        'models, datasets and COCO metrics need mmcv._ext. Build mmcv with '
                        'MMCV_WITH_OPS=1 (docs/get_started.md)')
    for package in TASKS:
        if versions[package] is None and 'mmcv' in (whys[package] or '').lower():
            problems.append(f'{package} does not import with this mmcv ({versions["mmcv"]}): '
                            f'{whys[package]}')
    if cuda and ops and ops_cuda in ('not available', 'none'):
        problems.append('a GPU is visible but mmcv was built without CUDA: on the GPU, RetinaNet\'s '
                        'sigmoid focal loss, RoIAlign (Faster/Mask R-CNN) and NMS fail. Rebuild '
                        'mmcv with FORCE_CUDA=1 against this torch (docs/get_started.md)')
    if versions['torchvision'] is None and versions['mmpretrain'] is not None:
        problems.append('torchvision does not import: mmpretrain imports it at module level; '
                        'install the torchvision that matches this torch')
    if not problems:  # what a run does first, once the stack itself is sound
        shipped = osp.isdir(_config_root())
        for package in installed:
            task_lines, task_failures = task_problems(package, shipped)
            lines += task_lines
            problems += task_failures
    return lines, problems


def main() -> int:
    lines, problems = report()
    print('\n'.join(lines))
    if problems:
        print('\nWILL FAIL:\n  - ' + '\n  - '.join(problems))
        return 1
    print('\nready: each installed task resolves its package\'s configs and builds a shipped '
          'distillation config')
    return 0


if __name__ == '__main__':
    sys.exit(main())
