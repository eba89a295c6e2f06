"""The GPU machine's one prepared command (tools/gpu/device_check.sh), run
here as its dry run: every step at tiny sizes on the CPU, each passing."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tiny_runs import ROOT


@pytest.mark.slow
def test_the_device_check_dry_run_passes_every_step(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, PYTHON=sys.executable, WORK=str(tmp_path / 'work'), OMP_NUM_THREADS='2')
    result = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu', 'device_check.sh'), str(out),
                             '--device', 'cpu', '--tiny'], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (out / 'summary.md').read_text()
    steps = {line.split('|')[1].strip(): line.split('|')[2].strip()
             for line in summary.splitlines() if line.startswith('| ') and line.count('|') == 5}
    expected = ['make_set', 'det_teacher', 'det_fmkt_retinanet_r18_to_r18w16_deploy-student', 'cost_det_coco']
    failed = {name: steps.get(name) for name in expected if steps.get(name) != '0'}
    assert not failed, (failed, summary, {n: (out / f'{n}.log').read_text()[-1500:]
                                           for n in failed if (out / f'{n}.log').exists()})
    # left to the suite (tests/tools/test_benchmarks.py, tests/distill/test_ops.py) in the dry run
    skipped = ('check_env', 'det_pkd_retinanet_r18_to_r18w16', 'cost_cls_b32', 'det_amp', 'det_ddp', 'compile')
    assert [steps[name] for name in skipped] == ['skipped'] * len(skipped)
    assert 'FM-KT' in summary and 'PKD' in summary  # the cost table
    for run in ('fmkt_retinanet_r18_to_r18w16_deploy-student', ):
        line = next(x for x in summary.splitlines() if x.startswith(f'| {run} |'))
        assert '(no log)' not in line and line.rstrip().endswith('yes |'), line
