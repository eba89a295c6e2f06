"""What FM-KT gains, measured against the baselines on the CPU demo data.

Classification (Fashion-MNIST, ResNet-18 w16 teacher -> ResNet-18 w4 student,
several seeds): student alone, KD, DKD, DIST, FM-KT with each path (rectified,
VP, VE), each meta-encoder (mlp, conv, transformer) and N_train 4 / 8,
FM-KT^Theta and OFM-KT. Detection (the composed Fashion-MNIST COCO set,
RetinaNet R18 -> R18 w16, `--det-seeds`): student alone, PKD, FM-KT in both
deploy modes. Prints markdown tables, writes ``results.json`` and two plots
(top-1 against the number of inference steps; training loss of each flow
step)::

    python tools/benchmark_efficacy.py                 # both tasks, about an hour on 2 cores
    python tools/benchmark_efficacy.py --task cls --jobs 2
    python tools/benchmark_efficacy.py --quick         # a smoke run (tiny sizes)
    python tools/benchmark_efficacy.py --teachers --jobs 2   # two teachers vs one; Mask R-CNN
    python tools/benchmark_efficacy.py --study --task det --det-seeds 0 1 2 3 4 --jobs 2
                                                       # recipe study: rows x 2 teachers, paired

Every run is seeded and asks for deterministic algorithms, so a rerun of a
row in the same environment repeats its numbers.

The teacher of each task is trained once (or reused from the output
directory) and shared by every row; every row trains from scratch with the
same data, schedule and seed as the student alone.
"""
import argparse
import copy
import json
import math
import os
import os.path as osp
import platform
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Tuple

FMKT = 'fmkt_resnet18_w16_to_resnet18_w4.py'
#: (row name, config, overrides of ``distiller.flow``)
CLS_ROWS = [
    ('student alone', 'student_resnet18_w4.py', None),
    ('KD (tau 4)', 'kd_resnet18_w16_to_resnet18_w4.py', None),
    ('DKD', 'dkd_resnet18_w16_to_resnet18_w4.py', None),
    ('DIST', 'dist_resnet18_w16_to_resnet18_w4.py', None),
    ('FM-KT rectified / mlp / N=8', FMKT, dict(path='rectified')),
    ('FM-KT rectified / mlp / N=4', FMKT, dict(path='rectified', num_steps=4)),
    ('FM-KT VP / mlp / N=8', FMKT, dict(path='vp')),
    ('FM-KT VE / mlp / N=8', FMKT, dict(path='ve')),
    ('FM-KT rectified / conv / N=8', FMKT, dict(path='rectified', encoder=dict(_delete_=True, type='conv'))),
    ('FM-KT rectified / transformer / N=8', FMKT,
     dict(path='rectified', encoder=dict(_delete_=True, type='transformer'))),
    ('FM-KT^Theta rectified / mlp / N=8', 'fmkt_theta_resnet18_w16_to_resnet18_w4.py', dict(path='rectified')),
    ('OFM-KT (no teacher)', 'ofmkt_resnet18_w4.py', {}),
]
INFERENCE_STEPS = (1, 2, 4, 8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=['cls', 'det', 'mask', 'all'], default='all',
                        help="'mask': the Mask R-CNN comparison (with --teachers, or in 'all')")
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--train-samples', type=int, default=5000)
    parser.add_argument('--test-samples', type=int, default=None, help='default: all 10,000')
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--teacher-epochs', type=int, default=6)
    parser.add_argument('--teacher-samples', type=int, default=10000)
    parser.add_argument('--rows', nargs='+', metavar='NAME',
                        help='classification rows to run, by exact name: '
                             + '; '.join(repr(r[0]) for r in CLS_ROWS))
    parser.add_argument('--det-train', type=int, default=600)
    parser.add_argument('--det-val', type=int, default=200)
    parser.add_argument('--det-teacher-epochs', type=int, default=10)
    parser.add_argument('--det-epochs', type=int, default=8)
    parser.add_argument('--det-seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--det-rows', nargs='+', metavar='NAME',
                        help='detection rows to run (the teacher always), by exact name: '
                             + '; '.join(repr(r[0]) for r in DET_ROWS) + '; with --study: '
                             + '; '.join(repr(r[0]) for r in DET_STUDY_ROWS))
    parser.add_argument('--det-steps', type=int, nargs='+', default=[1, 2, 4, 8],
                        help='inference step counts scored for the flow deploy mode (the last '
                             'is the table\'s mAP)')
    parser.add_argument('--jobs', type=int, default=1, help='runs in parallel (one thread each)')
    parser.add_argument('--out-dir', default=osp.join('work_dirs', 'benchmark_efficacy'))
    parser.add_argument('--quick', action='store_true', help='tiny sizes: checks the script runs')
    parser.add_argument('--study', action='store_true',
                        help='the recipe study: STUDY_ROWS x two teachers x --seeds, each row paired '
                             'with the first (DIST); with --task det, DET_STUDY_ROWS x two teachers x '
                             '--det-seeds, paired with PKD; resumable')
    parser.add_argument('--teachers', action='store_true',
                        help='several teachers: two teachers vs each alone (cls: ResNet-18 w16 and '
                             'w8; det: RetinaNet and FCOS), and Mask R-CNN (mask); resumable')
    args = parser.parse_args(argv)
    if args.task == 'mask' and not args.teachers:
        parser.error('--task mask belongs to the several-teacher benchmark: add --teachers')
    det_rows = [r[0] for r in (DET_STUDY_ROWS if args.study else DET_ROWS)]
    unknown = set(args.det_rows or ()) - set(det_rows)
    if unknown:
        parser.error(f'unknown detection rows {sorted(unknown)}; the rows{" of the study" * args.study} '
                     f'are {det_rows}')
    if args.quick:
        args.seeds = args.seeds[:1]
        args.train_samples = args.teacher_samples = 256
        args.test_samples = 200
        args.epochs = args.teacher_epochs = 1
        args.det_train, args.det_val = 16, 8
        args.det_teacher_epochs = args.det_epochs = 1
        args.rows = args.rows or ([STUDY_ROWS[1][0]] if args.study else [
            'student alone', 'KD (tau 4)', 'FM-KT rectified / mlp / N=8',
            'FM-KT^Theta rectified / mlp / N=8'])
        if args.study:
            args.det_rows = args.det_rows or [DET_STUDY_ROWS[1][0]]
        args.out_dir = osp.join(args.out_dir, 'quick')
    return args


# -- classification ----------------------------------------------------------------------


def cls_config(config: str, flow_overrides, args, seed: int, work_dir: str, teacher_ckpt=None,
               samples=None, epochs=None, distiller=None):
    """A Fashion-MNIST run's config; ``distiller``: overrides of its
    distiller (see :func:`override_distiller`)."""
    from fmkt_mm import experiment
    path = osp.join('fashion_mnist', config)
    cfg = experiment.shrink_classification(experiment.load(path), epochs or args.epochs,
                                           samples or args.train_samples, args.test_samples, seed)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=True)
    if distiller:
        override_distiller(cfg, distiller)
    experiment.set_teacher(cfg, teacher_ckpt)
    if 'distiller' in cfg:
        if flow_overrides:  # a copy: merging consumes the `_delete_` markers
            cfg.merge_from_dict(dict(distiller=dict(flow=copy.deepcopy(flow_overrides))))
        if cfg.distiller.get('flow') is not None:
            cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if 'FlowSteps' not in h['type']]
            cfg.custom_hooks.append(dict(type='fmkt_mm.FlowStepsHook',
                                         test_steps=INFERENCE_STEPS))
    return experiment.finalize(cfg, config, work_dir)


def run_cls(job):
    """One classification run in this process: ``dict(top1, steps, step_loss, seconds)``."""
    import torch

    from fmkt_mm import experiment
    torch.set_num_threads(1)
    name, config, overrides, seed, args, teacher_ckpt, work_dir = job[:7]
    distiller = job[7] if len(job) > 7 else None
    run = experiment.train_and_test(cls_config(config, overrides, args, seed, work_dir, teacher_ckpt,
                                               distiller=distiller))
    return dict(row=name, seed=seed, top1=float(run.metrics['accuracy/top1']),
                steps=run.by_steps('test/flow/top1_steps'),
                step_loss=run.tail_mean('train/flow_step'),  # the last quarter of training
                seconds=run.seconds, iters=run.iters, sec_per_iter=run.seconds / max(1, run.iters),
                **footprint(run))


def footprint(run) -> dict:
    """Trainable parameters (student, flows, adapters) and the process's peak
    resident memory in MiB (a fresh process per run: see :func:`run_recorded`)."""
    import resource
    params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    return dict(params=params, peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def train_cls_teacher(args, name='cls_teacher', epochs=None, config='teacher_resnet18_w16.py'):
    """``(checkpoint, top-1, seconds)`` of the classification teacher
    ``name`` (reused when its checkpoint exists), ``epochs`` long."""
    import torch
    from mmengine.runner import Runner

    from fmkt_mm import experiment
    path = osp.join(args.out_dir, f'{name}.pth')
    work_dir = osp.join(args.out_dir, 'cls', name)
    torch.set_num_threads(1)
    if osp.isfile(path):
        print(f'reusing the classification teacher {path}', flush=True)
        cfg = cls_config(config, None, args, 0, work_dir)
        cfg.load_from = path
        return path, float(Runner.from_cfg(cfg).test()['accuracy/top1']), None
    run = experiment.train_and_test(cls_config(config, None, args, 0, work_dir,
                                               samples=args.teacher_samples,
                                               epochs=epochs or args.teacher_epochs))
    experiment.save_weights(run, path)
    return path, float(run.metrics['accuracy/top1']), run.seconds


def mean_std(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else float('nan')
    return mean, std


def fmt(mean, std, digits=2):
    return f'{mean:.{digits}f}' if math.isnan(std) else f'{mean:.{digits}f} ± {std:.{digits}f}'


def cls_table(results, teacher_top1, args):
    rows = {}
    for r in results:
        rows.setdefault(r['row'], []).append(r)
    lines = ['| method | top-1 (%) | ensemble top-1 at N = ' + ' / '.join(map(str, INFERENCE_STEPS))
             + ' | s / iter | seeds |', '|---|---|---|---|---|',
             f'| teacher ResNet-18 w16 | {teacher_top1:.2f} | - | - | 1 |']
    summary = {}
    for name, _, _ in CLS_ROWS:
        if name not in rows:
            continue
        runs = rows[name]
        top1 = mean_std([r['top1'] for r in runs])
        curve = '-'
        if runs[0]['steps']:
            curve = ' / '.join(f'{statistics.fmean(r["steps"][n] for r in runs):.2f}'
                               for n in INFERENCE_STEPS)
        speed = statistics.median(r['sec_per_iter'] for r in runs)
        lines.append(f'| {name} | {fmt(*top1)} | {curve} | {speed:.3f} | {len(runs)} |')
        summary[name] = dict(top1_mean=top1[0], top1_std=top1[1], seeds=[r['seed'] for r in runs])
    return '\n'.join(lines), summary


def plot_cls(results, out_dir):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = {}
    for r in results:
        if r['steps']:
            rows.setdefault(r['row'], []).append(r)
    if not rows:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, runs in rows.items():
        ns = sorted(runs[0]['steps'])
        left.plot(ns, [statistics.fmean(r['steps'][n] for r in runs) for n in ns], marker='o', label=name)
        ks = sorted(runs[0]['step_loss'])
        if ks:
            right.plot(ks, [statistics.fmean(r['step_loss'][k] for r in runs) for k in ks],
                       marker='o', label=name)
    left.set_xscale('log', base=2)
    left.set_xlabel('inference steps N')
    left.set_ylabel('top-1 (%) of the implicit ensemble')
    left.set_title('Fashion-MNIST: accuracy against inference steps')
    right.set_xlabel('flow step k')
    right.set_ylabel('training loss of step k (last quarter of training)')
    right.set_title('metric loss per flow step')
    right.set_yscale('log')
    left.legend(fontsize=7)
    fig.tight_layout()
    path = osp.join(out_dir, 'fmkt_steps.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def benchmark_cls(args):
    teacher_ckpt, teacher_top1, _ = train_cls_teacher(args)
    unknown = set(args.rows or ()) - {r[0] for r in CLS_ROWS}
    if unknown:
        raise ValueError(f'unknown rows {sorted(unknown)}; choose from {[r[0] for r in CLS_ROWS]}')
    rows = [r for r in CLS_ROWS if not args.rows or r[0] in args.rows]
    jobs = []
    for seed in args.seeds:
        for name, config, overrides in rows:
            slug = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
            jobs.append((name, config, overrides, seed, args, teacher_ckpt,
                         osp.join(args.out_dir, 'cls', f'{slug}_seed{seed}')))
    results = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context('spawn')) as pool:
            for result in pool.map(run_cls, jobs):
                results.append(result)
                print(f'[cls] {result["row"]} seed {result["seed"]}: {result["top1"]:.2f}', flush=True)
    else:
        for job in jobs:
            results.append(run_cls(job))
            print(f'[cls] {job[0]} seed {job[3]}: {results[-1]["top1"]:.2f}', flush=True)
    table, summary = cls_table(results, teacher_top1, args)
    plots = plot_cls(results, args.out_dir)
    return dict(teacher_top1=teacher_top1, runs=results, summary=summary, table=table, plots=plots)


# -- the recipe study ---------------------------------------------------------------------

#: (row, config, overrides of ``distiller.flow``[, of the distiller]); the first
#: row is the baseline that every other row is paired with, seed by seed and
#: teacher by teacher
STUDY_ROWS = [
    ('DIST', 'dist_resnet18_w16_to_resnet18_w4.py', None),
    ('FM-KT VE (default)', FMKT, dict(path='ve')),
    ('FM-KT rectified', FMKT, dict(path='rectified')),
    ('FM-KT VP', FMKT, dict(path='vp')),
    ('FM-KT rectified, estimate from X_S (authors)', FMKT, dict(path='rectified', estimate='student')),
    ('FM-KT VE, N drawn from 1..16', FMKT, dict(path='ve', num_steps=16, num_steps_choices=(1, 2, 4, 8, 16))),
    ('FM-KT VE, encoder width x2', FMKT, dict(path='ve', encoder=dict(hidden_ratio=4.0))),
    ('FM-KT VE, flow loss weight 0.5', FMKT, dict(path='ve'), dict(flow_loss_weight=0.5)),
    ('FM-KT VE, flow loss weight 2', FMKT, dict(path='ve'), dict(flow_loss_weight=2.0)),
    ('FM-KT VE, sigma_max 2 (time scale)', FMKT, dict(path=dict(_delete_=True, type='ve', sigma_max=2.0))),
]


def study_teachers(args):
    """The study's two teachers, trained by this script: the full schedule
    and one of half the epochs (another training length)."""
    full = train_cls_teacher(args)
    half = train_cls_teacher(args, 'cls_teacher_half', max(1, args.teacher_epochs // 2))
    return {'full': full, 'half': half}


def paired(study, teacher: str, row: str, baseline: str, key: str = 'top1'):
    """Per seed (shared by both rows): ``(row score, baseline score)``."""
    by_seed = {r['seed']: r for r in study if r['teacher'] == teacher and r['row'] == baseline}
    return [(r[key], by_seed[r['seed']][key]) for r in study
            if r['teacher'] == teacher and r['row'] == row and r['seed'] in by_seed]


def study_table(study, teachers, rows, key='top1', label='top-1', curve_key='steps',
                steps=INFERENCE_STEPS) -> Tuple[str, dict]:
    """Per teacher (``{name: its own score}``) and row: the score ``key``
    (mean ± std over seeds), the paired difference to the baseline (the
    first row; mean ± std over seeds), the seeds won, whether the mean
    difference exceeds 2 standard deviations of the paired differences, the
    ensemble's score at each of ``steps`` inference steps (``curve_key``),
    and cost."""
    baseline = rows[0][0]
    lines, summary = [], {}
    for teacher, teacher_score in teachers.items():
        lines += [f'Teacher {teacher!r} ({teacher_score:.2f} {label}):', '',
                  f'| row | {label} | minus {baseline} (paired) | seeds won | > 2 sd | {label} at '
                  f'N={"/".join(map(str, steps))} | s / iter |', '|---|---|---|---|---|---|---|']
        for name, *_ in rows:
            runs = [r for r in study if r['teacher'] == teacher and r['row'] == name]
            if not runs:
                continue
            score = mean_std([r[key] for r in runs])
            pairs = paired(study, teacher, name, baseline, key) if name != baseline else []
            diffs = [a - b for a, b in pairs]
            diff = mean_std(diffs) if diffs else (float('nan'), float('nan'))
            beyond = len(diffs) > 1 and diff[0] > 2 * diff[1]
            curve = {n: statistics.fmean(r[curve_key][n] for r in runs) for n in steps
                     if all(r.get(curve_key) and n in r[curve_key] for r in runs)}
            summary.setdefault(name, {})[teacher] = dict(
                score=score, diff=diff, wins=sum(d > 0 for d in diffs), seeds=len(runs), beyond_2sd=beyond,
                curve=curve, sec_per_iter=statistics.fmean(r['sec_per_iter'] for r in runs))
            cells = [fmt(*score), '-' if not diffs else f'{diff[0]:+.2f} ± {diff[1]:.2f}',
                     '-' if not diffs else f'{sum(d > 0 for d in diffs)}/{len(diffs)}',
                     '-' if not diffs else ('yes' if beyond else 'no'),
                     ' / '.join(f'{v:.2f}' for v in curve.values()) or '-',
                     f'{summary[name][teacher]["sec_per_iter"]:.3f}']
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    from fmkt_mm import studies as stats
    lines += [f'Paired differences to {baseline} with their 95 % t intervals, per teacher and pooled '
              f'(fmkt_mm.studies):', '', stats.table(study, baseline, key), '']
    verdicts = stats.summary(study, baseline, key)
    winners = [name for name, verdict in verdicts.items() if verdict == 'beats']
    lines.append(f'Rows whose pooled 95 % interval lies above {baseline}: '
                 f'{", ".join(winners) if winners else "none"}.')
    return '\n'.join(lines), dict(rows=summary, winners=winners, verdicts=verdicts)


def study_rows(table, names):
    """The rows of ``table`` named in ``names`` (all when empty), its first
    (the baseline) always; an unknown name is an error listing the real ones."""
    unknown = set(names or ()) - {r[0] for r in table}
    if unknown:
        raise ValueError(f'unknown study rows {sorted(unknown)}; choose from {[r[0] for r in table]}')
    return [r for r in table if not names or r[0] in names or r is table[0]]


def study_jobs(rows, teachers, seeds, done, make_job):
    """One job per seed, teacher and row not in ``done``, seed by seed (an
    interrupted study holds whole seeds, paired on both teachers)."""
    return [make_job(name, config, overrides, seed, teacher, checkpoint)
            for seed in seeds for teacher, checkpoint in teachers.items()
            for name, config, overrides in rows if (teacher, name, seed) not in done]


def study_cls(args):
    """The recipe study (``--study``): every row x teacher x seed, resumable
    (each finished run is a line of ``study.jsonl``; a rerun skips those)."""
    rows = [(name, config, (overrides, *distiller))
            for name, config, overrides, *distiller in study_rows(STUDY_ROWS, args.rows)]
    teachers = study_teachers(args)
    done = {(r['teacher'], r['row'], r['seed']) for r in read_record(args.out_dir, 'study.jsonl')}

    def job(name, config, overrides, seed, teacher, checkpoint):
        flow, *distiller = overrides
        return (name, config, flow, seed, args, checkpoint,
                osp.join(args.out_dir, 'study', teacher, f'{slug(name)}_seed{seed}'),
                distiller[0] if distiller else None, teacher)

    jobs = study_jobs(rows, {k: v[0] for k, v in teachers.items()}, args.seeds, done, job)
    study = run_recorded(jobs, args, 'study.jsonl', run_study_job, 'study')
    table, summary = study_table(study, {k: v[1] for k, v in teachers.items()}, rows)
    return dict(teachers={k: dict(checkpoint=v[0], top1=v[1]) for k, v in teachers.items()},
                runs=study, summary=summary, table=table)


def run_study_job(job):
    result = run_cls(job[:-1])
    result['teacher'] = job[-1]
    return result


def slug(name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


def read_record(out_dir: str, record: str):
    """The runs recorded in ``out_dir/record`` (one JSON line per run)."""
    path = osp.join(out_dir, record)
    if not osp.isfile(path):
        return []
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    for r in runs:
        for key in ('steps', 'map_by_steps'):
            if r.get(key):
                r[key] = {int(n): v for n, v in r[key].items()}
    return runs


def run_recorded(jobs, args, record: str, run, label: str):
    """Run ``run(job)`` for every job, appending each result to
    ``out_dir/record`` as it finishes; returns every recorded result, older
    runs included (a rerun of the same command resumes). With ``--jobs`` > 1
    each run has a fresh process, so its peak memory is its own; in this
    process (``--jobs 1``) the peak is not the run's and is left out."""
    results = read_record(args.out_dir, record)
    print(f'[{label}] {len(results)} runs recorded, {len(jobs)} to run', flush=True)

    def keep(result):
        results.append(result)
        with open(osp.join(args.out_dir, record), 'a') as f:
            f.write(json.dumps(result) + '\n')
        score = result.get('top1', 100 * result.get('metrics', {}).get('coco/bbox_mAP', 0.0))
        print(f'[{label}] {result.get("teacher", "")} {result["row"]}, seed {result["seed"]}: '
              f'{score:.2f}', flush=True)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context('spawn'),
                                 max_tasks_per_child=1) as pool:
            for future in as_completed([pool.submit(run, job) for job in jobs]):
                keep(future.result())
    else:
        for job in jobs:
            keep(dict(run(job), peak_mib=None))
    return results


# -- detection ------------------------------------------------------------------------------


#: (name, config); rows with the flows in the inference path are scored at each ``--det-steps``
DET_ROWS = [('student alone RetinaNet R18 w16', 'retinanet_r18w16_student.py'),
            ('PKD', 'pkd_retinanet_r18_to_r18w16.py'),
            ('FM-KT deploy student (zero cost)', 'fmkt_retinanet_r18_to_r18w16_deploy-student.py'),
            ('FM-KT deploy flow (paper)', 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'),
            ('FM-KT deploy flow, conv encoder', 'fmkt_retinanet_r18_to_r18w16_deploy-flow_conv.py')]


def det_config(config: str, data_root: str, work_dir: str, epochs: int, teacher_ckpt=None,
               seed=None, flow_steps=None, distiller=None):
    """A composed-set detection config, ready to run; ``flow_steps``: the
    step counts at which a flow-deployed distiller is also tested;
    ``distiller``: see :func:`override_distiller`."""
    from fmkt_mm import experiment
    from fmkt_mm.apis import make_reproducible
    from fmkt_mm.export import deploy_mode_of
    path = osp.join('fashion_det', config)
    cfg = experiment.point_detection(experiment.load(path), data_root, epochs)
    if distiller:
        override_distiller(cfg, distiller)
    experiment.set_teacher(cfg, teacher_ckpt)
    if flow_steps and 'distiller' in cfg and deploy_mode_of(cfg.distiller) == 'flow':
        cfg.distiller.eval_steps = flow_steps[-1]
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='fmkt_mm.FlowStepsHook', val_steps=flow_steps[-1], test_steps=tuple(flow_steps))]
    if seed is not None:
        make_reproducible(cfg, seed)
    return experiment.finalize(cfg, path, work_dir)


def run_det(job):
    """One detection run in this process: ``dict(row, seed, metrics, seconds, map_by_steps)``;
    ``map_by_steps`` (mAP at each ``--det-steps``) for rows whose flows predict."""
    import torch

    from fmkt_mm import experiment
    torch.set_num_threads(1)
    name, config, seed, args, data_root, teacher_ckpt, work_dir = job[:7]
    distiller = job[7] if len(job) > 7 else None
    cfg = det_config(config, data_root, work_dir, args.det_epochs, teacher_ckpt, seed, args.det_steps,
                     distiller)
    flow_tested = any(str(h.get('type', '')).endswith('FlowStepsHook') for h in cfg.custom_hooks)
    run = experiment.train_and_test(cfg)
    curve = None
    if flow_tested:
        # CocoMetric reports nothing when no box was predicted: 0 mAP, as for the rows
        by_steps = run.by_steps('test/flow/coco/bbox_mAP_steps')
        curve = {n: by_steps.get(n, 0.0) for n in args.det_steps}
    return dict(row=name, seed=seed, metrics={k: float(v) for k, v in run.metrics.items()},
                seconds=run.seconds, map_by_steps=curve, sec_per_iter=run.seconds / max(1, run.iters),
                **footprint(run))


def det_table(teacher_metrics, results, args):
    """Mean (± std over seeds) of mAP, mAP@50, mAP@75 and the step curve, per row."""
    steps = '/'.join(str(n) for n in args.det_steps)
    lines = [f'| method | bbox mAP | mAP@50 | mAP@75 | mAP at N={steps} | seeds | train time (min) |',
             '|---|---|---|---|---|---|---|']
    teacher = ' | '.join(f'{100 * teacher_metrics.get(f"coco/bbox_{k}", 0.0):.1f}'
                         for k in ('mAP', 'mAP_50', 'mAP_75'))
    lines.append(f'| teacher RetinaNet R18 | {teacher} | - | - | - |')
    summary = {}
    for name, _ in DET_ROWS:
        runs = [r for r in results if r['row'] == name]
        if not runs:
            continue
        scores = {k: mean_std([100 * r['metrics'].get(f'coco/bbox_{k}', 0.0) for r in runs])
                  for k in ('mAP', 'mAP_50', 'mAP_75')}
        curve = None
        if runs[0]['map_by_steps'] is not None:
            curve = {n: statistics.fmean(100 * r['map_by_steps'][n] for r in runs)
                     for n in args.det_steps}
        minutes = statistics.fmean(r['seconds'] for r in runs) / 60
        summary[name] = dict(seeds=[r['seed'] for r in runs], map_by_steps=curve,
                             **{k: dict(mean=m, std=sd) for k, (m, sd) in scores.items()})
        cells = ' | '.join(fmt(m, sd, digits=1) for m, sd in scores.values())
        curve_cell = ' / '.join(f'{v:.1f}' for v in curve.values()) if curve else '-'
        lines.append(f'| {name} | {cells} | {curve_cell} | {len(runs)} | {minutes:.1f} |')
    return '\n'.join(lines), summary


def det_data(args) -> str:
    """The composed detection set of ``--det-train`` / ``--det-val`` images."""
    from fmkt_mm.datasets import make_detection_set
    data_root = osp.join(args.out_dir, 'fashion_det')
    make_detection_set(data_root, args.det_train, args.det_val, image_size=128, seed=0)
    return data_root


def train_det_teacher(args, data_root, config='retinanet_r18_teacher.py', name='det_teacher',
                      epochs=None):
    """``(checkpoint, test metrics, seconds)`` of a detection teacher
    trained by this script on ``data_root`` for ``epochs`` (default
    ``--det-teacher-epochs``; reused when its checkpoint exists)."""
    import torch
    from mmengine.runner import Runner

    from fmkt_mm import experiment
    torch.set_num_threads(1)
    path = osp.join(args.out_dir, f'{name}.pth')
    cfg = det_config(config, data_root, osp.join(args.out_dir, 'det', name),
                     epochs or args.det_teacher_epochs, seed=0)
    if osp.isfile(path):
        cfg.load_from = path
        return path, Runner.from_cfg(cfg).test(), None
    run = experiment.train_and_test(cfg)
    experiment.save_weights(run, path)
    return path, run.metrics, run.seconds


def benchmark_det(args):
    import torch
    torch.set_num_threads(1)
    data_root = det_data(args)
    work = osp.join(args.out_dir, 'det')
    teacher_ckpt, teacher_metrics, teacher_seconds = train_det_teacher(args, data_root)
    jobs = []
    for seed in args.det_seeds:
        for name, config in DET_ROWS:
            if not args.det_rows or name in args.det_rows:
                work_dir = osp.join(work, f'{osp.splitext(config)[0]}_seed{seed}')
                jobs.append((name, config, seed, args, data_root, teacher_ckpt, work_dir))
    results = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context('spawn')) as pool:
            results = list(pool.map(run_det, jobs))
    else:
        results = [run_det(job) for job in jobs]
    for r in results:
        print(f'[det] {r["row"]} seed {r["seed"]}: {100 * r["metrics"].get("coco/bbox_mAP", 0.0):.1f}',
              flush=True)
    table, summary = det_table(teacher_metrics, results, args)
    return dict(teacher=dict(metrics={k: float(v) for k, v in teacher_metrics.items()},
                             seconds=teacher_seconds),
                runs=results, summary=summary, table=table)


# -- the detection recipe study (--study --task det) -----------------------------------

DET_STUDENT = 'fmkt_retinanet_r18_to_r18w16_deploy-student.py'
DET_FLOW = 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'
#: (row, config, distiller overrides); the first row (PKD) is the baseline
#: every other row is paired with, seed by seed and teacher by teacher
DET_STUDY_ROWS = [
    ('PKD', 'pkd_retinanet_r18_to_r18w16.py', None),
    ('FM-KT deploy student', DET_STUDENT, dict(raw_loss_weight=0.0)),
    ('FM-KT deploy student, VE path', DET_STUDENT, dict(flow=dict(path='ve'), raw_loss_weight=0.0)),
    ('FM-KT deploy student + PKD on the raw levels (default)', DET_STUDENT, dict(raw_loss_weight=1.0)),
    ('FM-KT deploy flow', DET_FLOW, None),
    ('FM-KT deploy flow, EMA of the flows (0.01, warm-up 50)', DET_FLOW,
     dict(ema_momentum=0.01, ema_warmup=50)),
    # cheaper recipes: fewer serial steps (the per-level loop is launch-bound)
    ('FM-KT deploy flow, N = 2', DET_FLOW, dict(flow=dict(num_steps=2))),
    ('FM-KT deploy flow, N = 1', DET_FLOW, dict(flow=dict(num_steps=1))),
    ('student alone', 'retinanet_r18w16_student.py', None),  # what the teachers add at all
]


def study_det(args):
    """The detection recipe study (``--study --task det``): every row x
    teacher (RetinaNet R18, ``--det-teacher-epochs`` and half of them) x
    ``--det-seeds``, bbox mAP paired with PKD; resumable (``study_det.jsonl``)."""
    rows = study_rows(DET_STUDY_ROWS, args.det_rows)
    data_root = det_data(args)
    teachers = {'full': train_det_teacher(args, data_root),
                'half': train_det_teacher(args, data_root, name='det_teacher_half',
                                          epochs=max(1, args.det_teacher_epochs // 2))}
    done = {(r['teacher'], r['row'], r['seed']) for r in read_record(args.out_dir, 'study_det.jsonl')}

    def job(name, config, overrides, seed, teacher, checkpoint):
        return (name, config, seed, args, data_root, checkpoint,
                osp.join(args.out_dir, 'study_det', teacher, f'{slug(name)}_seed{seed}'), overrides, teacher)

    jobs = study_jobs(rows, {k: v[0] for k, v in teachers.items()}, args.det_seeds, done, job)
    study = run_recorded(jobs, args, 'study_det.jsonl', run_det_study_job, 'study det')
    for run in study:  # the step curve in % like the mAP
        run['map_steps'] = {n: 100 * v for n, v in (run.get('map_by_steps') or {}).items()}
    scores = {k: 100 * v[1].get('coco/bbox_mAP', 0.0) for k, v in teachers.items()}
    table, summary = study_table(study, scores, rows, key='bbox_map', label='bbox mAP',
                                 curve_key='map_steps', steps=tuple(args.det_steps))
    return dict(teachers={k: dict(checkpoint=v[0], bbox_mAP=scores[k]) for k, v in teachers.items()},
                runs=study, summary=summary, table=table)


def run_det_study_job(job):
    result = run_det_scored(job[:-1])
    result['teacher'] = job[-1]
    return result


# -- several teachers, and instance segmentation (--teachers) -----------------------------

TWO_CLS = 'fmkt_2teachers_resnet18_w16-w8_to_resnet18_w4.py'
TWO_DET = 'fmkt_retinanet-fcos_r18_to_r18w16_deploy-student.py'
#: (row, config, distiller overrides: the teachers it keeps, ...); the
#: rows with one teacher are the references of the rows with both
TEACHER_CLS_ROWS = [
    ('FM-KT VE, teacher w16', TWO_CLS, dict(keep_teachers=(0,))),
    ('FM-KT VE, teacher w8', TWO_CLS, dict(keep_teachers=(1,))),
    ('FM-KT VE, both teachers, separate flows', TWO_CLS,
     dict(keep_teachers=(0, 1), teacher_flows='separate')),
    ('FM-KT VE, both teachers, shared flow', TWO_CLS, dict(keep_teachers=(0, 1), teacher_flows='shared')),
]
TEACHER_DET_ROWS = [
    ('FM-KT deploy student, RetinaNet teacher', TWO_DET, dict(keep_teachers=(0,))),
    ('FM-KT deploy student, FCOS teacher', TWO_DET, dict(keep_teachers=(1,))),
    ('FM-KT deploy student, both teachers, separate flows', TWO_DET,
     dict(keep_teachers=(0, 1), teacher_flows='separate')),
    ('FM-KT deploy student, both teachers, shared flows', TWO_DET,
     dict(keep_teachers=(0, 1), teacher_flows='shared')),
]
#: (row, config) of the Mask R-CNN comparison
MASK_ROWS = [('student alone Mask R-CNN R18 w16', 'mask-rcnn_r18w16_student.py'),
             ('PKD', 'pkd_mask-rcnn_r18_to_r18w16.py'),
             ('FM-KT deploy student', 'fmkt_mask-rcnn_r18_to_r18w16_deploy-student.py')]


def override_distiller(cfg, overrides) -> None:
    """Merge ``overrides`` into the config's distiller; ``keep_teachers``
    (indices) keeps only those teachers of a several-teacher config."""
    overrides = copy.deepcopy(dict(overrides))  # merging consumes `_delete_` markers
    keep = overrides.pop('keep_teachers', None)
    if keep is not None:
        entries = cfg.distiller.teachers
        cfg.distiller.teachers = [entries[j] for j in keep]
    cfg.merge_from_dict(dict(distiller=overrides))


def teachers_table(runs, rows, metrics, single) -> Tuple[str, dict]:
    """Per row: each metric (mean ± std over seeds); for a row with several
    teachers, its paired difference (first metric) to the best of the rows
    ``single`` on the same seeds and the seeds won; and its cost."""
    best = max((r for r in single if any(x['row'] == r for x in runs)), default=None,
               key=lambda r: statistics.fmean(x[metrics[0][1]] for x in runs if x['row'] == r))
    lines = ['| row | ' + ' | '.join(label for label, _ in metrics) +
             f' | minus {best} (paired) | seeds won | s / iter | trainable params | peak MiB |',
             '|---|' + '---|' * (len(metrics) + 5)]
    summary = {}
    for name in rows:
        mine = sorted((r for r in runs if r['row'] == name), key=lambda r: r['seed'])
        if not mine:
            continue
        values = {key: mean_std([r[key] for r in mine]) for _, key in metrics}
        diffs = []
        if best is not None and name not in single:
            reference = {r['seed']: r for r in runs if r['row'] == best}
            key = metrics[0][1]
            diffs = [r[key] - reference[r['seed']][key] for r in mine if r['seed'] in reference]
        diff = mean_std(diffs) if diffs else None
        peaks = [r['peak_mib'] for r in mine if r.get('peak_mib')]
        summary[name] = dict(seeds=[r['seed'] for r in mine], diff=diff, wins=sum(d > 0 for d in diffs),
                             sec_per_iter=statistics.fmean(r['sec_per_iter'] for r in mine),
                             params=mine[0]['params'], peak_mib=max(peaks) if peaks else None,
                             **{key: dict(mean=m, std=sd) for key, (m, sd) in values.items()})
        cells = [fmt(*values[key]) for _, key in metrics] + [
            fmt(*diff) if diff else '-', f'{summary[name]["wins"]}/{len(diffs)}' if diffs else '-',
            f'{summary[name]["sec_per_iter"]:.3f}', f'{summary[name]["params"]:,}',
            f'{summary[name]["peak_mib"]:.0f}' if peaks else '-']
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines), summary


def run_det_scored(job):
    """:func:`run_det` with bbox and segm mAP in % at the top level (0 where
    nothing was predicted: CocoMetric then reports nothing)."""
    result = run_det(job)
    for kind in ('bbox', 'segm'):
        result[f'{kind}_map'] = 100 * result['metrics'].get(f'coco/{kind}_mAP', 0.0)
    return result


def teachers_cls(args):
    """Two classification teachers (w16 and w8, trained by this script) vs
    each alone, over ``--seeds``; resumable (``teachers_cls.jsonl``)."""
    teachers = [train_cls_teacher(args), train_cls_teacher(args, 'cls_teacher_w8',
                                                           config='teacher_resnet18_w8.py')]
    done = {(r['row'], r['seed']) for r in read_record(args.out_dir, 'teachers_cls.jsonl')}
    jobs = [(name, config, None, seed, args, [teachers[j][0] for j in overrides['keep_teachers']],
             osp.join(args.out_dir, 'teachers_cls', f'{slug(name)}_seed{seed}'), overrides)
            for seed in args.seeds for name, config, overrides in TEACHER_CLS_ROWS
            if (name, seed) not in done]
    runs = run_recorded(jobs, args, 'teachers_cls.jsonl', run_cls, 'teachers cls')
    rows = [r[0] for r in TEACHER_CLS_ROWS]
    table, summary = teachers_table(runs, rows, [('top-1 (%)', 'top1')], rows[:2])
    return dict(teachers={name: dict(checkpoint=t[0], top1=t[1]) for name, t in zip(('w16', 'w8'), teachers)},
                runs=runs, summary=summary, table=table)


def teachers_det(args):
    """A RetinaNet and an FCOS teacher (trained by this script) vs each
    alone, over ``--det-seeds``; resumable (``teachers_det.jsonl``)."""
    data_root = det_data(args)
    teachers = [train_det_teacher(args, data_root),
                train_det_teacher(args, data_root, 'fcos_r18_teacher.py', 'det_teacher_fcos')]
    done = {(r['row'], r['seed']) for r in read_record(args.out_dir, 'teachers_det.jsonl')}
    jobs = [(name, config, seed, args, data_root, [teachers[j][0] for j in overrides['keep_teachers']],
             osp.join(args.out_dir, 'teachers_det', f'{slug(name)}_seed{seed}'), overrides)
            for seed in args.det_seeds for name, config, overrides in TEACHER_DET_ROWS
            if (name, seed) not in done]
    runs = run_recorded(jobs, args, 'teachers_det.jsonl', run_det_scored, 'teachers det')
    rows = [r[0] for r in TEACHER_DET_ROWS]
    table, summary = teachers_table(runs, rows, [('bbox mAP', 'bbox_map')], rows[:2])
    return dict(teachers={name: dict(checkpoint=t[0], bbox_mAP=100 * t[1].get('coco/bbox_mAP', 0.0))
                          for name, t in zip(('RetinaNet', 'FCOS'), teachers)},
                runs=runs, summary=summary, table=table)


def mask_det(args):
    """Mask R-CNN: student alone, PKD and FM-KT (both deploy modes) from a
    Mask R-CNN teacher trained by this script, bbox and segm mAP, over
    ``--det-seeds``; resumable (``mask.jsonl``)."""
    data_root = det_data(args)
    teacher = train_det_teacher(args, data_root, 'mask-rcnn_r18_teacher.py', 'det_teacher_mask-rcnn')
    done = {(r['row'], r['seed']) for r in read_record(args.out_dir, 'mask.jsonl')}
    jobs = [(name, config, seed, args, data_root, teacher[0],
             osp.join(args.out_dir, 'mask', f'{slug(name)}_seed{seed}'))
            for seed in args.det_seeds for name, config in MASK_ROWS if (name, seed) not in done]
    runs = run_recorded(jobs, args, 'mask.jsonl', run_det_scored, 'mask')
    rows = [r[0] for r in MASK_ROWS]
    table, summary = teachers_table(runs, rows, [('bbox mAP', 'bbox_map'), ('segm mAP', 'segm_map')],
                                    rows[:2])
    return dict(teacher={k: 100 * teacher[1].get(f'coco/{k}_mAP', 0.0) for k in ('bbox', 'segm')},
                runs=runs, summary=summary, table=table)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    import mmengine
    import torch
    start = time.time()
    out = dict(date=time.strftime('%Y-%m-%d'), machine=f'{platform.processor() or platform.machine()}, '
               f'{os.cpu_count()} cores', torch=torch.__version__, mmengine=mmengine.__version__,
               command=shlex.join(['python', 'tools/benchmark_efficacy.py'] + (argv or sys.argv[1:])))
    text = []
    if args.teachers:
        tasks = ('cls', 'det', 'mask') if args.task == 'all' else (args.task,)
        if 'cls' in tasks:
            out['teachers_cls'] = teachers_cls(args)
            top1 = ', '.join(f'{k} {v["top1"]:.2f} %' for k, v in out['teachers_cls']['teachers'].items())
            text += [f'Two teachers, Fashion-MNIST ({top1} top-1): {args.train_samples} training '
                     f'images, {args.epochs} epochs, seeds {args.seeds}, top-1 at N=8 on '
                     f'{args.test_samples or 10000} test images', '', out['teachers_cls']['table'], '']
        if 'det' in tasks:
            out['teachers_det'] = teachers_det(args)
            maps = ', '.join(f'{k} {v["bbox_mAP"]:.1f}' for k, v in out['teachers_det']['teachers'].items())
            text += [f'Two teachers, composed detection set (teachers\' bbox mAP: {maps}): '
                     f'{args.det_train} / {args.det_val} images, {args.det_epochs} epochs, seeds '
                     f'{args.det_seeds}', '', out['teachers_det']['table'], '']
        if 'mask' in tasks:
            out['mask'] = mask_det(args)
            teacher = out['mask']['teacher']
            text += [f'Mask R-CNN, composed detection set (teacher bbox {teacher["bbox"]:.1f} / segm '
                     f'{teacher["segm"]:.1f} mAP): {args.det_train} / {args.det_val} images, '
                     f'{args.det_epochs} epochs, seeds {args.det_seeds}', '', out['mask']['table'], '']
    elif args.study:
        if args.task in ('cls', 'all'):
            out['study'] = study_cls(args)
            text += [f'Recipe study, Fashion-MNIST: {args.train_samples} training images, {args.epochs} '
                     f'epochs, seeds {args.seeds}, two teachers ({args.teacher_epochs} and '
                     f'{max(1, args.teacher_epochs // 2)} epochs), top-1 at N=8 on '
                     f'{args.test_samples or 10000} test images', '', out['study']['table'], '']
        if args.task in ('det', 'all'):
            out['study_det'] = study_det(args)
            maps = ', '.join(f'{k} {v["bbox_mAP"]:.1f}' for k, v in out['study_det']['teachers'].items())
            text += [f'Detection recipe study, composed set: {args.det_train} / {args.det_val} images, '
                     f'{args.det_epochs} epochs, seeds {args.det_seeds}, two RetinaNet R18 teachers '
                     f'({args.det_teacher_epochs} and {max(1, args.det_teacher_epochs // 2)} epochs; '
                     f'bbox mAP {maps})', '', out['study_det']['table'], '']
    elif args.task in ('cls', 'all'):
        out['cls'] = benchmark_cls(args)
        text += [f'Fashion-MNIST classification: {args.train_samples} training images, '
                 f'{args.epochs} epochs, seeds {args.seeds}, top-1 on '
                 f'{args.test_samples or 10000} test images (mean ± std over seeds)', '',
                 out['cls']['table'], '']
    if args.task in ('det', 'all') and not args.study and not args.teachers:
        out['det'] = benchmark_det(args)
        text += [f'Fashion-MNIST detection: {args.det_train} train / {args.det_val} val images '
                 f'(128 px), teacher {args.det_teacher_epochs} epochs, students {args.det_epochs} '
                 f'epochs, seeds {args.det_seeds}, COCO mAP (pycocotools; mean ± std over seeds)', '',
                 out['det']['table'], '']
    out['minutes'] = (time.time() - start) / 60
    text.append(f'{out["date"]}, {out["machine"]}, torch {out["torch"]}, '
                f'total {out["minutes"]:.1f} min: `{out["command"]}`')
    with open(osp.join(args.out_dir, 'results.json'), 'w') as f:
        json.dump(out, f, indent=1)
    with open(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write('\n'.join(text) + '\n')
    print('\n' + '\n'.join(text), flush=True)
    return out


if __name__ == '__main__':
    main()
