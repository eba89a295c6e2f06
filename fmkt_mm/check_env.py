"""What this environment can run, before a run starts.

    python -m fmkt_mm.check_env

Prints the versions of the stack, whether mmcv's compiled ops (and their
CUDA kernels) are there, the GPUs, and what will fail and why: detection
without mmcv's compiled ops, a GPU run of RetinaNet's focal loss or RoIAlign
with an mmcv built without CUDA, an mmcv that mmdet refuses, a torch without
the safe-loading API. Exits with 1 when something a run needs is missing.
"""
import importlib
import platform
import sys
from typing import List, Optional, Tuple

#: what fmkt_mm is tested with (setup.py's ranges say what it accepts)
TESTED = dict(torch='2.13.0', mmengine='0.10.7', mmcv='2.1.0', mmdet='3.3.0', mmpretrain='1.2.0')


def _version(module: str) -> Tuple[Optional[str], Optional[str]]:
    """``(version, None)`` or ``(None, why it does not import)``."""
    try:
        return getattr(importlib.import_module(module), '__version__', '?'), None
    except Exception as err:  # not installed, or broken at import
        return None, f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'


def _mmcv_ops() -> Tuple[bool, str]:
    """Whether mmcv's compiled ops import, and the CUDA version they were built with."""
    try:
        importlib.import_module('mmcv._ext')
    except Exception:
        return False, 'none'
    from mmcv.ops import get_compiling_cuda_version
    return True, get_compiling_cuda_version()


def report() -> Tuple[List[str], List[str]]:
    """``(lines, problems)`` of this environment."""
    lines = [f'python      {platform.python_version()} ({sys.executable})']
    problems = []
    versions, whys = {}, {}
    for module in ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmdet', 'mmpretrain', 'mmseg',
                   'pycocotools', 'numpy'):
        version, why = _version(module)
        versions[module], whys[module] = version, why
        tested = f'   (tested: {TESTED[module]})' if module in TESTED else ''
        lines.append(f'{module:<11} {version or "not importable: " + why}{tested}')
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
    if versions['mmdet'] is None and versions['mmpretrain'] is None:
        problems.append('neither mmdet nor mmpretrain imports: install one (pip install -e ".[det]" '
                        'or ".[cls]")')
    if versions['mmcv'] and versions['mmdet'] is not None and not ops:
        problems.append('mmdet is installed but mmcv has no compiled ops (mmcv-lite?): detection '
                        'models, datasets and COCO metrics need mmcv._ext. Build mmcv with '
                        'MMCV_WITH_OPS=1 (docs/get_started.md)')
    if versions['mmcv'] and versions['mmdet'] is None and 'MMCV' in (whys['mmdet'] or ''):
        problems.append(f'mmdet refuses this mmcv ({versions["mmcv"]}): mmdet 3.3 needs '
                        f'mmcv >= 2.0.0rc4, < 2.2.0')
    if cuda and ops and ops_cuda in ('not available', 'none'):
        problems.append('a GPU is visible but mmcv was built without CUDA: on the GPU, RetinaNet\'s '
                        'sigmoid focal loss, RoIAlign (Faster/Mask R-CNN) and NMS fail. Rebuild '
                        'mmcv with FORCE_CUDA=1 against this torch (docs/get_started.md)')
    if versions['torchvision'] is None and versions['mmpretrain'] is not None:
        problems.append('torchvision does not import: mmpretrain imports it at module level; '
                        'install the torchvision that matches this torch')
    return lines, problems


def main() -> int:
    lines, problems = report()
    print('\n'.join(lines))
    if problems:
        print('\nWILL FAIL:\n  - ' + '\n  - '.join(problems))
        return 1
    print('\nready: nothing a run needs is missing')
    return 0


if __name__ == '__main__':
    sys.exit(main())
