"""Smoke runs of the benchmark scripts (tools/benchmarks/) at tiny sizes: they
must not rot. (The numbers they print at these sizes mean nothing; see
docs/benchmarks.md.)"""
import dataclasses
import importlib
import json
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCHMARKS = osp.join(ROOT, 'tools', 'benchmarks')


def load_tool(name):
    """A script of tools/benchmarks/ as a module, imported with its folder on
    the module path as when it runs (the scripts share ``import common`` and its siblings; a
    spawned worker process imports them by name)."""
    if BENCHMARKS not in sys.path:
        sys.path.append(BENCHMARKS)
    module = importlib.import_module(name)
    assert osp.dirname(module.__file__) == BENCHMARKS, module.__file__
    return module


#: tiny models: one torch thread (conftest.one_thread)
ONE_THREAD = True


@pytest.fixture(scope='module')
def efficacy_dir(tmp_path_factory):
    """One work dir for the efficacy, recipe and several-teacher scripts, as
    they share ``work_dirs/benchmark_efficacy``: each teacher is trained once
    and reused by the scripts after it."""
    return str(tmp_path_factory.mktemp('benchmark_efficacy'))


def test_cost_benchmark_measures_every_configuration(tmp_path):
    cost = load_tool('cost')
    out = str(tmp_path / 'cost' / 'results.md')
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
    text = open(out).read()
    assert '| FM-KT (mlp, N=1) |' in text and 'x KD floor' in text
    assert json.load(open(osp.join(tmp_path, 'cost', 'results.json')))['results'] == results


def test_cost_benchmark_lists_the_reduced_width_rows():
    """``--det-methods`` keeps the references (student, PKD) and the rows
    asked for; the reduced rows carry their width into the label."""
    cost = load_tool('cost')
    args = cost.parse_args(['--task', 'det', '--det-steps', '4', '--det-encoders', 'mlp', '--det-methods',
                            'fmkt_reduced', 'fmkt_reduced_batched', '--det-flow-width', '48'])
    assert [s[1] for s in cost.specs(args)] == ['student', 'pkd', 'fmkt_reduced', 'fmkt_reduced_batched']
    assert [cost.flow_width(s[1], args) for s in cost.specs(args)] == [None, None, 48, 48]
    row = dict(method='fmkt_reduced_batched', steps=4, encoder='mlp', width=48)
    assert cost.label(row) == 'FM-KT, flows of width 48, levels batched (mlp, N=4)'
    args = cost.parse_args(['--task', 'det', '--det-steps', '4', '--det-encoders', 'mlp', '--det-methods',
                            'fmkt', 'fmkt_levels', '--det-flow-levels', '1', '2', '3', '4'])
    assert [cost.describe(s, args)['levels'] for s in cost.specs(args)] == [None, None, None, [1, 2, 3, 4]]
    row = dict(method='fmkt_levels', steps=4, encoder='mlp', levels=[1, 2, 3, 4])
    assert cost.label(row) == 'FM-KT, flows on the neck levels 1, 2, 3, 4 (mlp, N=4)'
    # Faster R-CNN's cheaper recipes: PKD alone on P2, the lean flows' losses on their factors
    args = cost.parse_args(['--task', 'det', '--det-steps', '4', '--det-encoders', 'mlp', '--det-methods',
                            'fmkt_p2_pkd', 'fmkt_reduced_batched_factored'])
    assert {s[1]: cost.flow_width(s[1], args) for s in cost.specs(args)} == \
        dict(student=None, pkd=None, fmkt_p2_pkd=None, fmkt_reduced_batched_factored=64)
    assert cost.label(dict(method='fmkt_reduced_batched_factored', steps=4, encoder='mlp', width=64)) == \
        'FM-KT, flows of width 64, levels batched, the loss on their factors (mlp, N=4)'
    rows = {m.name: m for m in load_tool('cost_rows').METHODS['det']}
    assert rows['fmkt_p2_pkd'].distiller == dict(levels=(1, 2, 3), raw_levels=(0, ))
    assert rows['fmkt_reduced_batched_factored'].flow['factored'] is True


def test_a_single_step_count_scores_the_evaluators_own_number():
    task_runs = load_tool('task_runs')
    assert task_runs.step_curve({}, (4, ), 0.29) == {4: 0.29}  # one count: the hook logs none
    assert task_runs.step_curve({1: 0.2, 4: 0.3}, (1, 4), 0.3) == {1: 0.2, 4: 0.3}
    assert task_runs.step_curve({4: 0.3}, (1, 4), 0.3) == {1: 0.0, 4: 0.3}  # nothing predicted at N=1


def test_operators_above_the_floor_are_listed_by_name():
    cost = load_tool('cost')
    floor = dict(train_ops=10, train_ops_by_name=dict(add=4, mm=6))
    row = dict(train_ops=15, train_ops_by_name=dict(add=8, mm=5, gelu=2))
    assert cost.above_floor(row, floor) == '+5 in all (add +4, gelu +2, mm -1)'
    assert cost.above_floor(floor, floor) == '+0 in all'


@pytest.mark.slow
def test_cost_benchmark_counts_operators_and_arithmetic(tmp_path):
    cost = load_tool('cost')
    results = cost.main(['--count', '--quick', '--task', 'cls', '--cls-steps', '1', '2',
                         '--out', str(tmp_path / 'counts.md')])
    gflop = {(r['method'], r['steps']): r['train_gflop'] for r in results}
    ops = {(r['method'], r['steps']): r['train_ops'] for r in results}
    # the teacher's forward adds to the student's step, and every flow step adds more
    assert gflop[('student', None)] < gflop[('kd', None)] < gflop[('fmkt', 1)] < gflop[('fmkt', 2)]
    assert ops[('student', None)] < ops[('kd', None)] < ops[('fmkt', 1)] < ops[('fmkt', 2)]
    # counting is deterministic
    assert cost.count(('cls', 'fmkt', 2, 'mlp'), cost.parse_args(['--quick']))['train_ops'] == \
        ops[('fmkt', 2)]
    text = open(osp.join(tmp_path, 'counts.md')).read()
    assert '| FM-KT (mlp, N=2) |' in text and '| operators / step |' in text
    by_name = {(r['method'], r['steps']): r['train_ops_by_name'] for r in results}
    assert all(sum(by_name[k].values()) == ops[k] for k in ops)  # the histogram is the count, by name
    assert by_name[('fmkt', 2)]['convolution'] > by_name[('kd', None)]['convolution']  # the encoder's 1x1 layers
    assert f'- FM-KT (mlp, N=2): +{ops[("fmkt", 2)] - ops[("kd", None)]} in all (' in text


@pytest.mark.slow
def test_efficacy_benchmark_trains_teacher_baselines_and_fmkt(efficacy_dir):
    efficacy = load_tool('efficacy_cls')
    out = efficacy_dir
    result = efficacy.main(['--quick', '--rows', 'student alone', 'KD (tau 4)',
                            'FM-KT rectified / mlp / N=8', '--work-dir', out])
    rows = [r['row'] for r in result['cls']['runs']]
    assert rows == ['student alone', 'KD (tau 4)', 'FM-KT rectified / mlp / N=8']
    fmkt = result['cls']['runs'][-1]
    assert sorted(fmkt['steps']) == [1, 2, 4, 8] and sorted(fmkt['step_loss']) == list(range(1, 9))
    assert all(0.0 <= r['top1'] <= 100.0 for r in result['cls']['runs'])
    saved = json.load(open(osp.join(out, 'quick', 'efficacy_cls.json')))
    assert saved['cls']['summary']['student alone']['seeds'] == [0]
    assert osp.isfile(osp.join(out, 'quick', 'fmkt_steps.png'))


@pytest.mark.slow
def test_recipe_study_pairs_rows_with_dist_for_two_teachers_and_resumes(efficacy_dir, capsys):
    recipes = load_tool('recipes_cls')
    out = efficacy_dir
    args = ['--quick', '--work-dir', out]
    result = recipes.main(args)
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
    again = recipes.main(args)  # resumes: every run is recorded, none reruns
    assert '[study] 4 runs recorded, 0 to run' in capsys.readouterr().out
    assert again['study']['table'] == result['study']['table']


@pytest.mark.slow
def test_detection_study_pairs_rows_with_pkd_for_two_teachers_and_resumes(efficacy_dir, capsys):
    recipes = load_tool('recipes_det')
    args = ['--quick', '--det-rows', 'FM-KT deploy flow', '--det-steps', '1', '--work-dir', efficacy_dir]
    result = recipes.main(args)['study_det']
    runs = result['runs']
    assert sorted((r['teacher'], r['row']) for r in runs) == sorted(
        (t, row) for t in ('full', 'half') for row in ('PKD', 'FM-KT deploy flow'))
    summary = result['summary']['rows']['FM-KT deploy flow']
    for teacher in ('full', 'half'):
        fmkt = next(r for r in runs if r['teacher'] == teacher and r['row'] != 'PKD')
        pkd = next(r for r in runs if r['teacher'] == teacher and r['row'] == 'PKD')
        assert summary[teacher]['diff'][0] == fmkt['bbox_map'] - pkd['bbox_map']  # paired on the seed
        assert sorted(summary[teacher]['curve']) == [1]  # the flows predict: scored per step count
        # one count: the evaluator's own number (the hook logs counts only when there are several)
        assert list(fmkt['map_by_steps'].values()) == [fmkt['metrics'].get('coco/bbox_mAP', 0.0)]
    assert result['summary']['rows']['PKD']['full']['curve'] == {}  # the plain student predicts
    assert set(result['teachers']) == {'full', 'half'}
    assert 'minus PKD (paired)' in result['table'] and 'bbox mAP at N=1 |' in result['table']
    capsys.readouterr()
    again = recipes.main(args)['study_det']  # resumes: every run is recorded, none reruns
    assert '[study det] 4 runs recorded, 0 to run' in capsys.readouterr().out
    assert again['table'] == result['table']
    with pytest.raises(SystemExit):
        recipes.parse_args(['--det-rows', 'student alone RetinaNet R18 w16'])
    assert "the rows are ['PKD'" in capsys.readouterr().err


def test_a_detection_study_pairs_with_the_row_named_instead_of_pkd(capsys):
    recipes = load_tool('recipes_det')
    lean = 'FM-KT deploy flow, flows of width 32, level-batched'
    args = recipes.parse_args(['--paired-with', 'FM-KT deploy flow', '--det-rows', lean])
    assert [r.name for r in args.det_rows] == ['FM-KT deploy flow', lean]  # the baseline first, no PKD
    assert [r.name for r in recipes.parse_args([]).det_rows][0] == 'PKD'
    with pytest.raises(SystemExit):
        recipes.parse_args(['--paired-with', 'FM-KT deploy flow, N = 3'])
    assert 'unknown rows' in capsys.readouterr().err
    faster = load_tool('recipes_faster')  # every FM-KT row of the level study names its levels
    assert [dict(r.distiller or {}).get('levels') for r in faster.FASTER_ROWS] == \
        [(0, 1, 2, 3), (1, 2, 3, 4), (0, 1, 2, 3), None, (1, 2, 3)]


@pytest.mark.slow
def test_two_teacher_benchmark_pairs_both_teachers_with_the_best_single_one(efficacy_dir, capsys):
    multi_teacher = load_tool('multi_teacher')
    args = ['--quick', '--task', 'cls', '--work-dir', efficacy_dir]
    result = multi_teacher.main(args)['teachers_cls']
    runs = {r['row']: r for r in result['runs']}
    assert sorted(runs) == sorted(r.name for r in multi_teacher.TEACHER_CLS_ROWS)
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
    multi_teacher.main(args)  # resumes
    assert '[teachers cls] 4 runs recorded, 0 to run' in capsys.readouterr().out


@pytest.mark.slow
def test_efficacy_benchmark_scores_the_detection_flow_at_each_step_count(efficacy_dir, capsys):
    efficacy = load_tool('efficacy_det')
    result = efficacy.main(['--quick', '--det-rows', 'FM-KT deploy flow (paper)',
                            '--det-seeds', '0', '--work-dir', efficacy_dir])
    runs = result['det']['runs']
    assert [(r['row'], r['seed']) for r in runs] == [('FM-KT deploy flow (paper)', 0)]
    for run in runs:
        assert sorted(run['map_by_steps']) == [1, 2, 4, 8]
        assert all(0.0 <= v <= 1.0 for v in run['map_by_steps'].values())
    summary = result['det']['summary']['FM-KT deploy flow (paper)']
    assert summary['seeds'] == [0] and 0.0 <= summary['mAP']['mean'] <= 100.0
    assert '| mAP at N=1/2/4/8 | seeds |' in result['det']['table']
    assert '| FM-KT deploy flow (paper) |' in result['det']['table']
    with pytest.raises(SystemExit):
        efficacy.parse_args(['--det-rows', 'FM-KT'])
    assert "unknown rows ['FM-KT']; the rows are ['student alone" in capsys.readouterr().err


def test_amp_benchmark_trains_each_precision(teacher_checkpoint, tmp_path):
    amp = load_tool('amp')
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
    efficacy = load_tool('efficacy_cls')
    args = efficacy.parse_args(['--seeds', '0', '1', '--work-dir', str(tmp_path)])
    encoders = {}
    for job in efficacy.jobs(args, 'teacher.pth'):
        if job.flow:
            encoders.setdefault(job.row, []).append(efficacy.task_runs.cls_config(job).model.flow.encoder)
    assert len(encoders) == sum(bool(r.flow) for r in efficacy.CLS_ROWS)
    for name, (first, second) in encoders.items():
        assert first == second, name
        if 'conv' in name:
            assert second == dict(type='conv')


@pytest.mark.slow
def test_segmentation_study_pairs_rows_with_cwd_and_resumes(tmp_path):
    """tools/benchmarks/seg.py at tiny sizes: two teachers, every row paired
    with CWD per teacher and seed, intervals and operator counts in the table;
    a rerun trains nothing new."""
    seg = load_tool('seg')
    argv = ['--quick', '--rows', 'FM-KT logits, deploy flow', '--work-dir', str(tmp_path)]
    result = seg.main(argv)['seg']
    runs = result['runs']
    assert {(r['teacher'], r['row']) for r in runs} == {
        (t, row) for t in ('full', 'half') for row in ('CWD', 'FM-KT logits, deploy flow')}
    text = (tmp_path / 'quick' / 'study_seg.md').read_text()
    assert 'minus CWD (paired)' in text and 'operators / step (x CWD)' in text and '95 % t intervals' in text
    assert f'The background everywhere scores {result["background_miou"]:.2f} mIoU' in text
    flow = next(r for r in runs if r['row'] != 'CWD')
    assert sorted(map(int, flow['steps'])) == [1, 2, 4, 8]  # the flow predicts: mIoU per step count
    records = (tmp_path / 'quick' / 'study_seg.jsonl').read_text().splitlines()
    again = seg.main(argv)['seg']['runs']
    assert len((tmp_path / 'quick' / 'study_seg.jsonl').read_text().splitlines()) == len(records)
    assert len(again) == len(runs)


def test_jobs_run_in_their_order_in_fresh_processes_and_records_resume(tmp_path, capsys):
    """The one pool loop returns the results in the jobs' order (each job
    pickled to a spawned process that imports the scripts' shared module);
    the recorded runner appends each run and, rerun, runs only the missing."""
    common, pool = load_tool('common'), load_tool('pool')
    jobs = [common.Job(f'row {i}', 'config.py', seed, str(tmp_path / f'{i}_{seed}'), threads=None)
            for seed in (0, 1) for i in range(2)]
    assert pool.run_jobs(jobs, dataclasses.asdict, workers=2) == [dataclasses.asdict(j) for j in jobs]
    record = str(tmp_path / 'runs.jsonl')
    first = pool.run_recorded(jobs[:3], dataclasses.asdict, record, label='t', key='seed')
    assert [(r['row'], r['seed']) for r in first] == [(j.row, j.seed) for j in jobs[:3]]
    capsys.readouterr()
    again = pool.run_recorded(jobs, dataclasses.asdict, record, label='t', key='seed')
    assert '[t] 3 runs recorded, 1 to run' in capsys.readouterr().out
    assert again == [json.loads(json.dumps(dataclasses.asdict(j))) for j in jobs[:3]] + [dataclasses.asdict(jobs[3])]
    assert len(open(record).read().splitlines()) == 4

    # jobs that differ only in their teacher's label (and work dir) run once, recorded under each label
    calls = []
    twins = [common.Job('row', 'c.py', 0, str(tmp_path / t), teacher=t, teacher_checkpoint=ckpt, threads=None)
             for t, ckpt in (('full', 't.pth'), ('half', 't.pth'), ('other', 'o.pth'))]
    runs = pool.run_recorded(twins, lambda job: calls.append(job.teacher) or dataclasses.asdict(job),
                             str(tmp_path / 'twins.jsonl'), label='t', key='seed')
    assert calls == ['full', 'other'] and [r['teacher'] for r in runs] == ['full', 'half', 'other']
    assert runs[1] == dict(runs[0], teacher='half') and len(open(tmp_path / 'twins.jsonl').read().splitlines()) == 3


def test_benchmark_tables_rows_and_outputs(tmp_path):
    common, options, reporting = load_tool('common'), load_tool('options'), load_tool('reporting')
    assert load_tool('study_tables').markdown_table(['a', 'b'], [[1, 'x'], ['-', 2.5]]) == \
        '| a | b |\n|---|---|\n| 1 | x |\n| - | 2.5 |'
    rows = [common.Row('base', 'b.py'), common.Row('one', 'o.py', dict(path='ve')), common.Row('two', 't.py')]
    parser = options.parser('doc')
    assert options.pick_rows(parser, rows, ['two'], keep_first=True) == [rows[0], rows[2]]
    assert options.pick_rows(parser, rows, None) == rows
    with pytest.raises(SystemExit):
        options.pick_rows(parser, rows, ['three'])
    job = rows[1].job(3, 'w', epochs=2)
    assert (job.row, job.config, job.seed, job.flow, job.epochs, job.threads) == \
        ('one', 'o.py', 3, {'path': 've'}, 2, 1)
    out = tmp_path / 'sub' / 'report.md'
    reporting.write_report(str(out), 'text', dict(a=1))
    assert out.read_text() == 'text\n' and json.load(open(tmp_path / 'sub' / 'report.json')) == dict(a=1)
    assert reporting.command_line(osp.join(BENCHMARKS, 'seg.py'), ['--quick']) == \
        'python tools/benchmarks/seg.py --quick'


HELP_DRIVER = """
import contextlib, io, json, os.path as osp, runpy, sys
for path in sys.argv[1:]:
    sys.argv, out = [path, '--help'], io.StringIO()
    sys.path[0] = osp.dirname(path)  # as when the script runs itself
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name='__main__')
        code = 'ran'
    except SystemExit as done:
        code = done.code
    print(json.dumps(dict(path=path, code=code, help=out.getvalue())))
"""


def test_every_benchmark_answers_help():
    """Every script of tools/benchmarks parses ``--help`` as ``python SCRIPT
    --help`` does (run as ``__main__``, its folder first on the path), all in
    one interpreter."""
    import glob
    import subprocess
    scripts = sorted(glob.glob(osp.join(BENCHMARKS, '*.py')))
    mains = [p for p in scripts if "__name__ == '__main__'" in open(p).read()]
    assert {osp.basename(p) for p in mains} >= {'amp.py', 'cost.py', 'recipes_faster.py', 'seg.py'}
    done = subprocess.run([sys.executable, '-c', HELP_DRIVER] + mains, capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = {osp.basename(r['path']): r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(answers) == sorted(osp.basename(p) for p in mains)
    for name, answer in answers.items():
        assert answer['code'] in (0, None), (name, answer)
        assert '--work-dir' in answer['help'] or '--out' in answer['help'], name


def test_the_segmentation_floor_is_iou_metrics_score_of_background_everywhere(tmp_path):
    """The study's floor equals what mmseg's IoUMetric gives a segmentor that
    predicts class 0 on every pixel of the validation maps."""
    import cv2
    import numpy as np
    import torch
    from mmseg.evaluation import IoUMetric
    seg = load_tool('seg')
    folder = tmp_path / 'ann_dir' / 'val'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    maps = [rng.choice([0, 0, 0, 3, 7], (8, 8)).astype(np.uint8) for _ in range(3)]
    for i, labels in enumerate(maps):
        cv2.imwrite(str(folder / f'{i:06d}.png'), labels)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=tuple(str(c) for c in range(11)))
    metric.process([], [dict(pred_sem_seg=dict(data=torch.zeros(1, 8, 8, dtype=torch.long)),
                             gt_sem_seg=dict(data=torch.from_numpy(m)[None].long())) for m in maps])
    expected = metric.compute_metrics(metric.results)['mIoU']
    assert seg.background_floor(str(tmp_path)) == pytest.approx(expected, abs=0.01)  # IoUMetric rounds to 0.01


def test_the_step_profile_counts_what_each_component_saves_for_backward():
    """Each storage autograd keeps is counted once, for the component whose
    forward saved it; a part that stops by raising (a tapped teacher) hands
    the count back to its caller."""
    import torch
    from torch import nn
    profile_step = load_tool('profile_step')

    class Stop(Exception):
        pass

    class Tapped(nn.Module):
        def forward(self, x):
            raise Stop

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.ModuleDict(dict(backbone=nn.Linear(8, 8)))
            self.teacher = Tapped()
            self.flows = nn.ModuleList([nn.Linear(8, 8)])

        def forward(self, x):
            h = self.student['backbone'](x)
            try:
                self.teacher(x)
            except Stop:
                pass
            y = self.flows[0](h)
            return (y * y).sum()  # the distiller's own product: saves y (once, though twice used)

    model = Model()
    x = torch.randn(4, 8, requires_grad=True)
    saved = profile_step.saved_by_component(model, lambda: model(x).backward())
    bytes_of = 4 * 8 * 4  # one (4, 8) float32 tensor
    # the backbone saves its input x; the flow saves h; the distiller saves y
    assert saved == {'student.backbone': bytes_of, 'flows.0': bytes_of, 'distiller': bytes_of}


def test_loss_steps_table_counts_the_copies_each_loss_keeps(tmp_path):
    """tools/benchmarks/loss_steps.py at a tiny level: a row per loss with the
    bytes kept for backward in copies of the steps (PKD keeps the steps once
    and its target, MSE the steps once), operators and times beside the
    per-step calls."""
    loss_steps = load_tool('loss_steps')
    out = loss_steps.main(['--quick', '--out', str(tmp_path / 'loss_steps.md')])
    copies = {row['loss']: row['stacked']['saved'] / out['copy_bytes'] for row in out['rows']}
    assert set(copies) == {'PKD', 'MSE', 'CWD', 'pixel KD'}
    assert copies['MSE'] == 1.0 and 1.0 < copies['PKD'] < 1.5
    text = (tmp_path / 'loss_steps.md').read_text()
    assert '| loss | kept for backward, MiB | copies | operators | x per step |' in text
