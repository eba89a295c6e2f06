"""The stack fmkt_mm runs on: the version ranges it declares (read by
``setup.py``, checked by :mod:`fmkt_mm.check_env`), the pip extra of each
task, and the versions it is tested with.

Plain data, no imports: ``setup.py`` executes this file before anything is
installed. A cap sits in the extra of the task that needs it, so installing
one task changes nothing that only another task needs.
"""

#: every install: the framework and the safe-loading API
CORE = [
    'torch>=2.5',  # torch.serialization.safe_globals: loading checkpoints without running code
    'mmengine>=0.10.4,<1.0',
    'mmcv>=2.0.0,<2.2.0',  # mmdet 3.3 refuses mmcv >= 2.2 at import
    # mmengine 0.10 resolves `mmdet::` / `mmpretrain::` config paths with pkg_resources,
    # which setuptools 81 removed
    'setuptools<81',
    'numpy>=1.26',
]
EXTRAS = dict(
    det=['mmdet>=3.3.0,<3.4', 'pycocotools>=2.0.6'],
    # mmpretrain imports torchvision without declaring it; numpy 2.4 removed np.in1d,
    # which mmpretrain's retrieval metrics still call (mmdet and mmseg do not)
    cls=['mmpretrain>=1.2.0,<1.3', 'torchvision', 'numpy<2.4'],
    # mmseg imports the last three at import time without declaring them
    seg=['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex', 'prettytable'],
    tests=['pytest>=8,<10', 'matplotlib>=3.8,<3.12', 'ruff'],
)
EXTRAS['all'] = EXTRAS['det'] + EXTRAS['cls'] + EXTRAS['seg'] + EXTRAS['tests']

#: the OpenMMLab task packages: import name -> (distribution, pip extra, default_scope)
TASKS = dict(
    mmdet=('mmdet', 'det', 'mmdet'),
    mmpretrain=('mmpretrain', 'cls', 'mmpretrain'),
    mmseg=('mmsegmentation', 'seg', 'mmseg'),
)

#: what the project is tested with (requirements/constraints.txt pins the same)
TESTED = dict(torch='2.13.0', mmengine='0.10.7', mmcv='2.1.0', mmdet='3.3.0', mmpretrain='1.2.0',
              mmsegmentation='1.2.2')


def install_hint(task_package: str) -> str:
    """The pip line that installs a task package with its extra."""
    extra = TASKS[task_package][1]
    return f'pip install -e ".[{extra}]" (from the fmkt_mm checkout) or pip install "fmkt_mm[{extra}]"'
