"""Segmentation study: FM-KT against CWD on the composed Fashion-MNIST set.

Two PSPNet R18 w32 teachers (trained ``--teacher-epochs`` and half of it),
then, for each teacher and seed, every row of :data:`ROWS` trains the PSPNet
R18 w8 student; every run is paired with CWD's run of the same teacher and
seed. Prints (and writes as ``study_seg.md``) per teacher: mIoU mean ± std,
the paired difference to CWD and the seeds won, s/iter and the operators of
one training step beside CWD's; then the paired 95 % t intervals per teacher
and pooled (:mod:`fmkt_mm.studies`), and the verdict. Each finished run is
a line of ``OUT_DIR/study_seg.jsonl``; a rerun of the same command resumes.

    python tools/benchmark_seg.py --seeds 0 1 2 --jobs 2            # the study (about 30 min on 2 cores)
    python tools/benchmark_seg.py --quick                           # a smoke run (a minute)
"""
import argparse
import json
import os
import os.path as osp
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs', 'fashion_seg')
TEACHER = 'pspnet_r18w32_teacher.py'
#: (row, config); the first is the baseline every row is paired with
ROWS = [('CWD', 'cwd_pspnet_r18w32_to_r18w8.py'),
        ('student alone', 'pspnet_r18w8_student.py'),
        ('pixel KD', 'kd_pspnet_r18w32_to_r18w8.py'),
        ('FM-KT deploy student', 'fmkt_pspnet_r18w32_to_r18w8_deploy-student.py'),
        ('FM-KT deploy student + CWD on the raw features', 'fmkt_pspnet_r18w32_to_r18w8_deploy-student_cwd-raw.py'),
        ('FM-KT deploy flow', 'fmkt_pspnet_r18w32_to_r18w8_deploy-flow.py')]
RECORD = 'study_seg.jsonl'


@dataclass
class Job:
    """One training run of the study."""
    row: str
    config: str
    seed: int
    teacher: Optional[str]  # the teacher's name ('full', 'half'), None for the teachers themselves
    teacher_checkpoint: Optional[str]
    epochs: int
    work_dir: str
    data_root: str
    threads: int = 1  # torch threads of the run (cores / parallel runs: no oversubscription)


def seg_config(job: Job):
    """The job's config: the composed set, the schedule, the seed, the teacher."""
    from fmkt_mm import experiment
    from fmkt_mm.apis import make_reproducible
    path = osp.join(CONFIGS, job.config)
    cfg = experiment.load(path)
    root = job.data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = job.epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'CosineAnnealingLR':
            scheduler.end = scheduler.T_max = job.epochs
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    make_reproducible(cfg, job.seed)
    experiment.set_teacher(cfg, job.teacher_checkpoint)
    return experiment.finalize(cfg, path, job.work_dir)


def train_step_operators(runner) -> int:
    """aten operators of one training forward, losses and backward (no optimizer step)."""
    from fmkt_mm.studies import count_operators
    model = runner.model
    batch = next(iter(runner.train_dataloader))
    data = model.data_preprocessor(batch, True)
    model.train()

    def step():
        loss, _ = model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))
        loss.backward()
    operators = count_operators(step)
    model.zero_grad(set_to_none=True)
    return operators


def run_job(job: Job) -> dict:
    import resource

    from fmkt_mm import experiment
    cfg = seg_config(job)
    run = experiment.train_and_test(cfg, f'{job.teacher or "teacher"} {job.row} s{job.seed}')
    result = dict(asdict(job), miou=float(run.metrics['mIoU']), seconds=run.seconds,
                  sec_per_iter=run.seconds_per_iter(), steps=run.by_steps('test/flow/mIoU_steps'),
                  train_ops=train_step_operators(run.runner),
                  peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if job.teacher is None:
        result['checkpoint'] = experiment.save_weights(run, osp.join(job.work_dir, 'teacher.pth'))
    return result


def run_all(jobs: List[Job], workers: int, record: Optional[str] = None) -> List[dict]:
    """Every job's result, each appended to ``record`` as it finishes."""
    results = []

    def keep(result):
        results.append(result)
        if record:
            with open(record, 'a') as f:
                f.write(json.dumps(result) + '\n')
        print(f'[seg] {result["teacher"] or "teacher"} {result["row"]} seed {result["seed"]}: '
              f'mIoU {result["miou"]:.2f}', flush=True)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context('spawn'), max_tasks_per_child=1) as pool:
            for future in as_completed([pool.submit(run_job, job) for job in jobs]):
                keep(future.result())
    else:
        for job in jobs:
            keep(run_job(job))
    return results


def fmt(values) -> str:
    if len(values) < 2:
        return f'{values[0]:.2f}'
    return f'{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}'


def tables(runs: List[dict], teachers: Dict[str, float], rows) -> str:
    from fmkt_mm import studies as study_stats
    baseline = rows[0][0]
    lines = []
    for teacher, score in teachers.items():
        lines += [f'Teacher {teacher!r} ({score:.2f} mIoU):', '',
                  f'| row | mIoU | minus {baseline} (paired) | seeds won | mIoU at N=1/2/4/8 | s / iter | '
                  f'operators / step x {baseline} |', '|---|---|---|---|---|---|---|']
        base = {r['seed']: r for r in runs if r['teacher'] == teacher and r['row'] == baseline}
        for name, _ in rows:
            mine = [r for r in runs if r['teacher'] == teacher and r['row'] == name]
            if not mine:
                continue
            diffs = [r['miou'] - base[r['seed']]['miou'] for r in mine if r['seed'] in base]
            steps = [{int(n): v for n, v in r['steps'].items()} for r in mine]  # JSON keys are strings
            curve = ' / '.join(f'{statistics.fmean(s[n] for s in steps):.2f}'
                               for n in (1, 2, 4, 8) if all(n in s for s in steps)) or '-'
            ops = statistics.fmean(r['train_ops'] for r in mine)
            base_ops = statistics.fmean(r['train_ops'] for r in base.values()) if base else float('nan')
            lines.append(f'| {name} | {fmt([r["miou"] for r in mine])} | '
                         f'{"-" if name == baseline else fmt(diffs)} | '
                         f'{"-" if name == baseline else f"{sum(d > 0 for d in diffs)}/{len(diffs)}"} | '
                         f'{curve} | {statistics.fmean(r["sec_per_iter"] for r in mine):.3f} | '
                         f'{ops:.0f} ({ops / base_ops:.2f}x) |')
        lines.append('')
    lines += [f'Paired differences to {baseline}, 95 % t intervals (fmkt_mm.studies):', '',
              study_stats.table(runs, baseline, 'miou', [n for n, _ in rows]), '']
    verdicts = study_stats.summary(runs, baseline, 'miou')
    winners = [n for n, v in verdicts.items() if v == 'beats']
    lines.append(f'Rows whose pooled 95 % interval lies above {baseline}: {", ".join(winners) or "none"}.')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rows', nargs='+', help='a subset of the rows (the baseline always runs)')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--teacher-epochs', type=int, default=10)
    parser.add_argument('--jobs', type=int, default=1, help='runs in parallel, each in its own process')
    parser.add_argument('--out-dir', default=osp.join('work_dirs', 'study_seg'))
    parser.add_argument('--quick', action='store_true', help='tiny sizes: checks the script runs')
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.epochs, args.teacher_epochs, args.seeds = 16, 8, 1, 2, [0]
        args.out_dir = osp.join(args.out_dir, 'quick')
    rows = [r for r in ROWS if r == ROWS[0] or not args.rows or r[0] in args.rows]
    unknown = set(args.rows or []) - {n for n, _ in ROWS}
    if unknown:
        raise SystemExit(f'unknown rows {sorted(unknown)}; the rows are {[n for n, _ in ROWS]}')
    from fmkt_mm.datasets import make_segmentation_set
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    data_root = osp.join(args.out_dir, 'data')
    make_segmentation_set(data_root, args.num_train, args.num_val)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    record = osp.join(args.out_dir, RECORD)
    done = []
    if osp.isfile(record):
        with open(record) as f:
            done = [json.loads(line) for line in f if line.strip()]
    teachers = {r['row']: r for r in done if r['teacher'] is None}
    need = [Job(name, TEACHER, 0, None, None, epochs, osp.join(args.out_dir, f'teacher_{name}'), data_root,
                max(1, (os.cpu_count() or 1) // min(args.jobs, 2)))
            for name, epochs in (('full', args.teacher_epochs), ('half', max(1, args.teacher_epochs // 2)))
            if name not in teachers]
    for result in run_all(need, min(args.jobs, len(need)) or 1, record):
        teachers[result['row']] = result
    keys = {(r['teacher'], r['row'], r['seed']) for r in done if r['teacher'] is not None}
    jobs = [Job(name, config, seed, teacher, teachers[teacher]['checkpoint'], args.epochs,
                osp.join(args.out_dir, f'{teacher}_{name.replace(" ", "-").replace("+", "")}_s{seed}'), data_root,
                threads)
            for seed in args.seeds for teacher in ('full', 'half') for name, config in rows
            if (teacher, name, seed) not in keys]
    print(f'[seg] {len(done)} runs recorded, {len(jobs)} to run', flush=True)
    runs = [r for r in done if r['teacher'] is not None] + run_all(jobs, args.jobs, record)
    runs = [r for r in runs if r['seed'] in args.seeds and r['row'] in dict(rows)]
    header = (f'Segmentation study, composed set: {args.num_train} / {args.num_val} images of 64 px, '
              f'{args.epochs} epochs, seeds {args.seeds}, two PSPNet R18 w32 teachers ({args.teacher_epochs} and '
              f'{max(1, args.teacher_epochs // 2)} epochs); the PSPNet R18 w8 student')
    table = tables(runs, {n: teachers[n]['miou'] for n in ('full', 'half')}, rows)
    footer = (f'{time.strftime("%Y-%m-%d")}, {platform.machine()}, {os.cpu_count()} cores, '
              f'total {(time.time() - start) / 60:.1f} min: `python tools/benchmark_seg.py '
              f'{shlex.join(argv if argv is not None else sys.argv[1:])}`')
    text = '\n\n'.join([header, table, footer])
    print('\n' + text)
    with open(osp.join(args.out_dir, 'study_seg.md'), 'w') as f:
        f.write(text + '\n')
    return runs


if __name__ == '__main__':
    main()
