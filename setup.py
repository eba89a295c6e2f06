from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip()]


setup(
    name='fmkt_mm',
    version='0.1.0',
    description='Knowledge transfer with flow matching (FM-KT) for OpenMMLab 2.x: '
                'mmdet 3.x and mmpretrain 1.x distillation through MMEngine.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['fmkt_mm', 'fmkt_mm.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require=dict(tests=read_requirements('requirements/tests.txt')),
    license='Apache-2.0',
)
