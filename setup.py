"""fmkt_mm: pip install -e . into an existing OpenMMLab environment.

    pip install -e ".[det]"      # with mmdet (detection)
    pip install -e ".[cls]"      # with mmpretrain (classification)
    pip install -e ".[seg]"      # with mmseg (semantic segmentation)
    pip install -e ".[all]"      # both, and the test tools

The ranges are what the project is tested with (requirements/constraints.txt
pins the exact versions of the CPU quick start). mmcv with its compiled ops
must be installed first (it builds against the installed torch; see
docs/get_started.md): pip would otherwise build it without CUDA.
"""
from setuptools import find_packages, setup

CORE = [
    'torch>=2.5',  # torch.serialization.safe_globals: loading checkpoints without running code
    'mmengine>=0.10.4,<1.0',
    'mmcv>=2.0.0,<2.2.0',  # mmdet 3.3 refuses mmcv >= 2.2 at import
    'numpy>=1.26,<2.4',  # numpy 2.4 removed np.in1d, which mmpretrain still calls
]
DET = ['mmdet>=3.3.0,<3.4', 'pycocotools>=2.0.6']
CLS = ['mmpretrain>=1.2.0,<1.3', 'torchvision']  # mmpretrain imports torchvision without declaring it
SEG = ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex', 'prettytable']  # mmseg imports the last three undeclared
TESTS = ['pytest>=8,<10', 'matplotlib>=3.8,<3.12', 'ruff']

with open('README.md') as f:
    long_description = f.read()

setup(
    name='fmkt_mm',
    version='0.1.0',
    description='Knowledge transfer with flow matching (FM-KT) for OpenMMLab 2.x: '
                'mmdet 3.x and mmpretrain 1.x distillation through MMEngine.',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['fmkt_mm', 'fmkt_mm.*']),
    python_requires='>=3.9',
    install_requires=CORE,
    extras_require=dict(det=DET, cls=CLS, seg=SEG, tests=TESTS, all=DET + CLS + SEG + TESTS),
    license='Apache-2.0',
)
