"""Installing into an existing environment: the package's declared ranges,
imports with one OpenMMLab framework only, the environment check, and
multi-node launches as mmdet's."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tiny_runs import ROOT, free_port, rank_state_config

PYTHON = sys.executable
TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1',
           PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get('PYTHONPATH', '')]))


def python(code: str, **env):
    return subprocess.run([PYTHON, '-c', code], capture_output=True, text=True, timeout=300,
                          env=dict(ENV, **env), cwd=ROOT)


@pytest.mark.parametrize('blocked, kept', [('mmpretrain', 'mmdet'), ('mmdet', 'mmpretrain')])
def test_fmkt_mm_imports_with_one_framework_only(blocked, kept):
    """A detection-only (or classification-only) environment imports fmkt_mm
    and builds a distiller of its framework's configs."""
    config = ('fashion_det/fmkt_retinanet_r18_to_r18w16_deploy-student.py' if kept == 'mmdet' else
              'fashion_mnist/fmkt_resnet18_w16_to_resnet18_w4.py')
    result = python(f'''
import sys
sys.modules[{blocked!r}] = None  # any import of it fails
import fmkt_mm
from fmkt_mm import experiment
from fmkt_mm.runner import DistillRunner
cfg = experiment.load({config!r})
assert cfg.runner_type == 'fmkt_mm.DistillRunner'
import {kept}
print('imported without', {blocked!r})
''')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'imported without {blocked}' in result.stdout


def test_the_declared_ranges_hold_the_tested_environment():
    """``pip install -e ".[all]"`` resolves against this environment's
    packages without downloading or changing any of them."""
    result = subprocess.run([PYTHON, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-deps',
                             '--no-build-isolation', '-e', f'{ROOT}[all]'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Would install fmkt_mm' in result.stdout
    from importlib.metadata import version

    from packaging.requirements import Requirement
    for line in ('torch>=2.5', 'mmengine>=0.10.4,<1.0', 'mmcv>=2.0.0,<2.2.0', 'mmdet>=3.3.0,<3.4',
                 'mmpretrain>=1.2.0,<1.3'):
        requirement = Requirement(line)
        assert requirement.specifier.contains(version(requirement.name).split('+')[0]), line
        assert line in open(osp.join(ROOT, 'fmkt_mm', 'stack.py')).read(), line


def test_check_env_reports_the_stack_and_what_would_fail():
    result = subprocess.run([PYTHON, '-m', 'fmkt_mm.check_env'], capture_output=True, text=True,
                            timeout=120, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmpretrain', 'mmcv ops    compiled'):
        assert name in result.stdout
    assert 'ready: each installed task' in result.stdout
    for package in ('mmdet', 'mmpretrain', 'mmseg'):
        assert f'{package:<11} configs by {package}:: resolve' in result.stdout
    assert 'builds' in result.stdout
    pycocotools = [line for line in result.stdout.splitlines() if line.startswith('pycocotools')]
    assert pycocotools and pycocotools[0].split()[1][0].isdigit(), pycocotools  # a version, not '?'


def test_check_env_is_not_ready_where_mmdet_configs_cannot_resolve():
    """setuptools >= 81 has no pkg_resources, which MMEngine 0.10 needs for
    ``mmdet::`` paths: every stock config fails, and check_env says so."""
    result = python('''
import sys
sys.modules['pkg_resources'] = None  # setuptools >= 81
from fmkt_mm import check_env
sys.exit(check_env.main())
''')
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'WILL FAIL' in result.stdout and 'ready' not in result.stdout
    assert 'pip install "setuptools<81"' in result.stdout
    assert 'configs by mmdet:: FAIL' in result.stdout


def test_check_env_names_versions_outside_the_declared_ranges():
    from fmkt_mm.check_env import range_problems
    assert range_problems(['numpy>=1.26']) == []
    problems = range_problems(['numpy<1.0', 'no-such-distribution-xyz>=1'])
    assert len(problems) == 2
    assert 'outside the declared range numpy<1.0' in problems[0] and 'pip install "numpy<1.0"' in problems[0]
    assert 'no-such-distribution-xyz is not installed' in problems[1]


def test_the_package_metadata_puts_each_cap_where_it_belongs(tmp_path):
    """The metadata pip installs from: setuptools below 81 for every install
    (MMEngine resolves ``mmdet::`` paths with pkg_resources), numpy's cap
    only in the classification extra (mmdet and mmseg do not need it), so
    ``pip install -e ".[det]"`` changes no numpy."""
    result = subprocess.run([PYTHON, 'setup.py', '-q', 'egg_info', '--egg-base', str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    sections, current = {}, ''
    for line in (tmp_path / 'fmkt_mm.egg-info' / 'requires.txt').read_text().splitlines():
        if line.startswith('['):
            current = line.strip('[]')
        elif line.strip():
            sections.setdefault(current, []).append(line.replace(' ', ''))
    assert 'setuptools<81' in sections['']
    numpy = {section: [r for r in lines if r.startswith('numpy')] for section, lines in sections.items()}
    assert numpy[''] == ['numpy>=1.26'], numpy
    assert numpy['cls'] == ['numpy<2.4']
    assert numpy.get('det', []) == [] and numpy.get('seg', []) == []
    assert 'mmdet<3.4,>=3.3.0' in sections['det'] or 'mmdet>=3.3.0,<3.4' in sections['det']



@pytest.mark.slow
def test_two_nodes_of_one_process_train_to_equal_weights(teacher_checkpoint, tmp_path):
    """tools/dist_train.sh as mmdet's: NNODES, NODE_RANK, MASTER_ADDR and PORT;
    two "nodes" on 127.0.0.1, one process each (gloo)."""
    work_dir = str(tmp_path / 'run')
    config = rank_state_config(teacher_checkpoint, work_dir, str(tmp_path / 'config.py'))
    port = str(free_port())
    nodes = [subprocess.Popen(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '1',
                               '--work-dir', work_dir],
                              env=dict(ENV, PYTHON=PYTHON, NNODES='2', NODE_RANK=str(rank),
                                       MASTER_ADDR='127.0.0.1', PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, out[-2000:] + err[-4000:]
    states = [torch.load(osp.join(work_dir, f'rank{r}.pth'), weights_only=True) for r in (0, 1)]
    assert [s['world_size'] for s in states] == [2, 2]
    for name, value in states[0]['params'].items():
        assert torch.equal(value, states[1]['params'][name]), name
