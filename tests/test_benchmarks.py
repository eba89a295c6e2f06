"""Smoke runs of the benchmark scripts at tiny sizes: they must not rot.
(The numbers they print at these sizes mean nothing; see docs/benchmarks.md.)"""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cost_benchmark_measures_every_configuration(tmp_path):
    cost = load_tool('benchmark_cost')
    out = str(tmp_path / 'cost')
    results = cost.main(['--quick', '--in-process', '--task', 'cls', '--cls-steps', '1',
                         '--out', out])
    methods = [(r['method'], r['steps']) for r in results]
    assert methods == [('student', None), ('kd', None), ('dist', None), ('fmkt', 1), ('fmkt_theta', 1)]
    for r in results:
        assert r['train_ms'] > 0 and r['trainable_params'] > 0
        assert r['train_ops'] > 0 and r['train_gflop'] > 0 and set(r['inference_ops']) == set(r['inference_ms'])
    by_method = {r['method']: r for r in results}
    assert set(by_method['fmkt']['inference_ms']) == {'ensemble'}
    assert set(by_method['fmkt_theta']['inference_ms']) == {'exported student'}
    # FM-KT trains the flow (and, with the teacher frozen, nothing of the teacher)
    assert by_method['fmkt']['trainable_params'] > by_method['kd']['trainable_params'] \
        == by_method['student']['trainable_params']
    text = open(osp.join(out, 'quick', 'results.md')).read()
    assert '| FM-KT (mlp, N=1) |' in text and 'x KD floor' in text


@pytest.mark.slow
def test_cost_benchmark_counts_operators_and_arithmetic(tmp_path):
    cost = load_tool('benchmark_cost')
    results = cost.main(['--count', '--quick', '--task', 'cls', '--cls-steps', '1', '2',
                         '--out', str(tmp_path)])
    gflop = {(r['method'], r['steps']): r['train_gflop'] for r in results}
    ops = {(r['method'], r['steps']): r['train_ops'] for r in results}
    # the teacher's forward adds to the student's step, and every flow step adds more
    assert gflop[('student', None)] < gflop[('kd', None)] < gflop[('fmkt', 1)] < gflop[('fmkt', 2)]
    assert ops[('student', None)] < ops[('kd', None)] < ops[('fmkt', 1)] < ops[('fmkt', 2)]
    # counting is deterministic
    assert cost.count(('cls', 'fmkt', 2, 'mlp'), cost.parse_args(['--quick']))['train_ops'] == \
        ops[('fmkt', 2)]
    text = open(osp.join(tmp_path, 'quick', 'counts.md')).read()
    assert '| FM-KT (mlp, N=2) |' in text and '| operators / step |' in text


@pytest.mark.slow
def test_efficacy_benchmark_trains_teacher_baselines_and_fmkt(tmp_path):
    efficacy = load_tool('benchmark_efficacy')
    out = str(tmp_path / 'eff')
    result = efficacy.main(['--quick', '--task', 'cls', '--rows', 'student alone', 'KD (tau 4)',
                            'FM-KT rectified / mlp / N=8', '--out-dir', out])
    rows = [r['row'] for r in result['cls']['runs']]
    assert rows == ['student alone', 'KD (tau 4)', 'FM-KT rectified / mlp / N=8']
    fmkt = result['cls']['runs'][-1]
    assert sorted(fmkt['steps']) == [1, 2, 4, 8] and sorted(fmkt['step_loss']) == list(range(1, 9))
    assert all(0.0 <= r['top1'] <= 100.0 for r in result['cls']['runs'])
    saved = json.load(open(osp.join(out, 'quick', 'results.json')))
    assert saved['cls']['summary']['student alone']['seeds'] == [0]
    assert osp.isfile(osp.join(out, 'quick', 'fmkt_steps.png'))


@pytest.mark.slow
def test_recipe_study_pairs_rows_with_dist_for_two_teachers_and_resumes(tmp_path, capsys):
    efficacy = load_tool('benchmark_efficacy')
    out = str(tmp_path / 'study')
    args = ['--quick', '--study', '--task', 'cls', '--out-dir', out]
    result = efficacy.main(args)
    runs = result['study']['runs']
    assert sorted((r['teacher'], r['row']) for r in runs) == sorted(
        (t, row) for t in ('full', 'half') for row in ('DIST', 'FM-KT VE (default)'))
    summary = result['study']['summary']['rows']['FM-KT VE (default)']
    for teacher in ('full', 'half'):
        fmkt = next(r for r in runs if r['teacher'] == teacher and r['row'] != 'DIST')
        dist = next(r for r in runs if r['teacher'] == teacher and r['row'] == 'DIST')
        assert summary[teacher]['diff'][0] == fmkt['top1'] - dist['top1']  # paired on the seed
        assert sorted(summary[teacher]['curve']) == [1, 2, 4, 8]
    assert "minus DIST (paired)" in result['study']['table']
    records = open(osp.join(out, 'quick', 'study.jsonl')).read().splitlines()
    assert len(records) == 4
    capsys.readouterr()
    again = efficacy.main(args)  # resumes: every run is recorded, none reruns
    assert '[study] 4 runs recorded, 0 to run' in capsys.readouterr().out
    assert again['study']['table'] == result['study']['table']


@pytest.mark.slow
def test_detection_study_pairs_rows_with_pkd_for_two_teachers_and_resumes(tmp_path, capsys):
    efficacy = load_tool('benchmark_efficacy')
    args = ['--quick', '--study', '--task', 'det', '--det-rows', 'FM-KT deploy flow',
            '--det-steps', '1', '2', '--out-dir', str(tmp_path)]
    result = efficacy.main(args)['study_det']
    runs = result['runs']
    assert sorted((r['teacher'], r['row']) for r in runs) == sorted(
        (t, row) for t in ('full', 'half') for row in ('PKD', 'FM-KT deploy flow'))
    summary = result['summary']['rows']['FM-KT deploy flow']
    for teacher in ('full', 'half'):
        fmkt = next(r for r in runs if r['teacher'] == teacher and r['row'] != 'PKD')
        pkd = next(r for r in runs if r['teacher'] == teacher and r['row'] == 'PKD')
        assert summary[teacher]['diff'][0] == fmkt['bbox_map'] - pkd['bbox_map']  # paired on the seed
        assert sorted(summary[teacher]['curve']) == [1, 2]  # the flows predict: scored per step count
    assert result['summary']['rows']['PKD']['full']['curve'] == {}  # the plain student predicts
    assert set(result['teachers']) == {'full', 'half'}
    assert 'minus PKD (paired)' in result['table'] and 'bbox mAP at N=1/2' in result['table']
    capsys.readouterr()
    again = efficacy.main(args)['study_det']  # resumes: every run is recorded, none reruns
    assert '[study det] 4 runs recorded, 0 to run' in capsys.readouterr().out
    assert again['table'] == result['table']
    with pytest.raises(SystemExit):
        efficacy.parse_args(['--study', '--task', 'det', '--det-rows', 'student alone RetinaNet R18 w16'])
    assert 'the rows of the study are' in capsys.readouterr().err


@pytest.mark.slow
def test_two_teacher_benchmark_pairs_both_teachers_with_the_best_single_one(tmp_path, capsys):
    efficacy = load_tool('benchmark_efficacy')
    args = ['--quick', '--teachers', '--task', 'cls', '--out-dir', str(tmp_path)]
    result = efficacy.main(args)['teachers_cls']
    runs = {r['row']: r for r in result['runs']}
    assert sorted(runs) == sorted(r[0] for r in efficacy.TEACHER_CLS_ROWS)
    singles = ['FM-KT VE, teacher w16', 'FM-KT VE, teacher w8']
    best = max(singles, key=lambda r: runs[r]['top1'])
    for row in ('FM-KT VE, both teachers, separate flows', 'FM-KT VE, both teachers, shared flow'):
        assert result['summary'][row]['diff'][0] == runs[row]['top1'] - runs[best]['top1']
    # the shared flow adds only its condition; separate flows add a flow per teacher
    params = {row: runs[row]['params'] for row in runs}
    assert params[singles[0]] == params[singles[1]]
    assert params[singles[0]] < params['FM-KT VE, both teachers, shared flow'] \
        < params['FM-KT VE, both teachers, separate flows']
    assert f'minus {best} (paired)' in result['table']
    capsys.readouterr()
    efficacy.main(args)  # resumes
    assert '[teachers cls] 4 runs recorded, 0 to run' in capsys.readouterr().out


@pytest.mark.slow
def test_efficacy_benchmark_scores_the_detection_flow_at_each_step_count(tmp_path, capsys):
    efficacy = load_tool('benchmark_efficacy')
    result = efficacy.main(['--quick', '--task', 'det', '--det-rows', 'FM-KT deploy flow (paper)',
                            '--det-seeds', '0', '1', '--out-dir', str(tmp_path)])
    runs = result['det']['runs']
    assert [(r['row'], r['seed']) for r in runs] == [('FM-KT deploy flow (paper)', 0),
                                                    ('FM-KT deploy flow (paper)', 1)]
    for run in runs:
        assert sorted(run['map_by_steps']) == [1, 2, 4, 8]
        assert all(0.0 <= v <= 1.0 for v in run['map_by_steps'].values())
    summary = result['det']['summary']['FM-KT deploy flow (paper)']
    assert summary['seeds'] == [0, 1] and 0.0 <= summary['mAP']['mean'] <= 100.0
    assert '| mAP at N=1/2/4/8 | seeds |' in result['det']['table']
    assert '| FM-KT deploy flow (paper) |' in result['det']['table']
    with pytest.raises(SystemExit):
        efficacy.parse_args(['--task', 'det', '--det-rows', 'FM-KT'])
    assert "unknown detection rows ['FM-KT']; the rows are ['student alone" in capsys.readouterr().err


def test_amp_benchmark_trains_each_precision(teacher_checkpoint, tmp_path):
    amp = load_tool('benchmark_amp')
    rows = amp.main(['--teacher', teacher_checkpoint, '--variants', 'fmkt_theta', '--epochs', '1',
                     '--train-samples', '32', '--test-samples', '32', '--work-dir', str(tmp_path)])
    assert [(r['variant'], r['precision']) for r in rows] == [('fmkt_theta', 'fp32'), ('fmkt_theta', 'amp')]
    fp32, amp_row = rows
    assert fp32['dtypes'] == ['float32'] and fp32['wrapper'] == 'OptimWrapper'
    assert amp_row['dtypes'] == ['bfloat16'] and amp_row['wrapper'] == 'CPUAmpOptimWrapper'
    assert all(0.0 <= r['top1'] <= 100.0 for r in rows)


def test_efficacy_rows_configure_the_same_run_for_every_seed(tmp_path):
    """The rows' overrides are reused for every seed: building a config must
    not consume them (e.g. the `_delete_` that replaces the mlp encoder)."""
    efficacy = load_tool('benchmark_efficacy')
    args = efficacy.parse_args(['--quick', '--out-dir', str(tmp_path)])
    for name, config, overrides in efficacy.CLS_ROWS:
        if not overrides:
            continue
        encoders = [efficacy.cls_config(config, overrides, args, seed, str(tmp_path / f'{seed}'),
                                        'teacher.pth').model.flow.encoder for seed in (0, 1)]
        assert encoders[0] == encoders[1], name
        if 'conv' in name:
            assert encoders[1] == dict(type='conv')


@pytest.mark.slow
def test_segmentation_study_pairs_rows_with_cwd_and_resumes(tmp_path):
    """tools/benchmark_seg.py at tiny sizes: two teachers, every row paired
    with CWD per teacher and seed, intervals and operator counts in the table;
    a rerun trains nothing new."""
    seg = load_tool('benchmark_seg')
    argv = ['--quick', '--rows', 'FM-KT deploy student', '--out-dir', str(tmp_path)]
    runs = seg.main(argv)
    assert {(r['teacher'], r['row']) for r in runs} == {
        (t, row) for t in ('full', 'half') for row in ('CWD', 'FM-KT deploy student')}
    text = (tmp_path / 'quick' / 'study_seg.md').read_text()
    assert 'minus CWD (paired)' in text and 'operators / step x CWD' in text and '95 % t intervals' in text
    records = (tmp_path / 'quick' / 'study_seg.jsonl').read_text().splitlines()
    again = seg.main(argv)
    assert len((tmp_path / 'quick' / 'study_seg.jsonl').read_text().splitlines()) == len(records)
    assert len(again) == len(runs)
