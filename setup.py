"""fmkt_mm: pip install -e . into an existing OpenMMLab environment.

    pip install -e ".[det]"      # with mmdet (detection)
    pip install -e ".[cls]"      # with mmpretrain (classification)
    pip install -e ".[seg]"      # with mmseg (semantic segmentation)
    pip install -e ".[all]"      # both, and the test tools

The ranges (fmkt_mm/stack.py) are what the project is tested with
(requirements/constraints.txt pins the exact versions of the CPU quick
start); a cap that only one task needs sits in that task's extra. mmcv
with its compiled ops must be installed first (it builds against the
installed torch; see docs/get_started.md): pip would otherwise build it
without CUDA.
"""
import os

from setuptools import find_packages, setup

# the declared ranges live in one place, read here before anything is installed
STACK = {}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fmkt_mm', 'stack.py')) as f:
    exec(f.read(), STACK)

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
    install_requires=STACK['CORE'],
    extras_require=STACK['EXTRAS'],
    license='Apache-2.0',
)
