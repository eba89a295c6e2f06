"""Segmentation study: FM-KT against CWD on the composed Fashion-MNIST set.

Two PSPNet R18 w32 teachers (trained ``--teacher-epochs`` and half of it),
then, for each teacher and seed, every row of :data:`ROWS` trains the PSPNet
R18 w8 student; every run is paired with CWD's run of the same teacher and
seed. Every distillation row carries CWD's total distillation weight (3: the
sum of its terms' weights), so a difference is the method's, not the
weight's. Prints (and writes to ``--out``, default ``WORK_DIR/study_seg.md``,
its JSON beside it) the student's floor (the mIoU of predicting the
background everywhere), then per teacher: mIoU mean ± std, the paired
difference to CWD and the seeds won, the mIoU per inference step count of the
rows whose flow predicts, s/iter, the operators of one training step and the
peak memory beside CWD's; then the paired 95 % t intervals per teacher and
pooled (:mod:`fmkt_mm.studies`), and the verdict. Each finished run is a line
of ``WORK_DIR/study_seg.jsonl``; a rerun of the same command resumes.

    python tools/benchmarks/seg.py --seeds 0 1 2 --jobs 2     # the study (about 45 min on 2 cores)
    python tools/benchmarks/seg.py --quick                    # a smoke run (a minute)
"""
import os
import os.path as osp
import statistics
import time
from dataclasses import asdict
from typing import Dict, List

import common
import options
import pool
import reporting
import study_tables
from common import Job, Row

CONFIGS = osp.join(common.ROOT, 'configs', 'fashion_seg')
TEACHER = 'pspnet_r18w32_teacher.py'
#: the first is the baseline every row is paired with
ROWS = [Row('CWD', 'cwd_pspnet_r18w32_to_r18w8.py'),
        Row('student alone', 'pspnet_r18w8_student.py'),
        Row('pixel KD', 'kd_pspnet_r18w32_to_r18w8.py'),
        Row('FM-KT logits, deploy student', 'fmkt_pspnet_r18w32_to_r18w8_deploy-student.py'),
        Row('FM-KT logits, deploy flow', 'fmkt_pspnet_r18w32_to_r18w8_deploy-flow.py'),
        Row('FM-KT logits, deploy student + CWD on the raw logits',
            'fmkt_pspnet_r18w32_to_r18w8_deploy-student_cwd-raw.py'),
        Row('FM-KT backbone stage (PKD), deploy student', 'fmkt_pspnet_r18w32_to_r18w8_deploy-student_backbone.py'),
        # what the row above adds beyond its metric at the same place and weight
        Row('PKD on the backbone stage (control)', 'pkd_pspnet_r18w32_to_r18w8.py')]
RECORD = 'study_seg.jsonl'


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
    """One run (a teacher's when ``job.teacher`` is None: its weights are kept)."""
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


def mean_of(runs, key: str):
    """The mean of ``key`` over ``runs`` (None when a run lacks it: a
    peak memory is only a run's own in a process of its own, ``--jobs`` 2+)."""
    values = [r.get(key) for r in runs]
    return None if not values or None in values else statistics.fmean(values)


def background_floor(data_root: str) -> float:
    """The validation mIoU (%) of a segmentor that predicts the background
    everywhere, as mmseg's ``IoUMetric`` scores it: the background's IoU is
    its share of the pixels, every garment class present scores 0, absent
    classes are left out of the mean."""
    import glob

    import cv2
    import numpy as np

    from fmkt_mm.datasets import FASHION_SEG_METAINFO
    counts = np.zeros(256, dtype=np.int64)
    for path in glob.glob(osp.join(data_root, 'ann_dir', 'val', '*.png')):
        counts += np.bincount(cv2.imread(path, cv2.IMREAD_UNCHANGED).ravel(), minlength=256)
    present = int((counts[:len(FASHION_SEG_METAINFO['classes'])] > 0).sum())
    return 100.0 * counts[0] / counts.sum() / present


def tables(runs: List[dict], teachers: Dict[str, float], rows: List[Row]) -> str:
    baseline = rows[0].name
    lines = []
    for teacher, score in teachers.items():
        base = {r['seed']: r for r in runs if r['teacher'] == teacher and r['row'] == baseline}
        cells = []
        for row in rows:
            mine = [r for r in runs if r['teacher'] == teacher and r['row'] == row.name]
            if not mine:
                continue
            diffs = [r['miou'] - base[r['seed']]['miou'] for r in mine if r['seed'] in base]
            steps = [{int(n): v for n, v in r['steps'].items()} for r in mine]  # JSON keys are strings
            curve = ' / '.join(f'{statistics.fmean(s[n] for s in steps):.2f}'
                               for n in (1, 2, 4, 8) if all(n in s for s in steps)) or '-'
            ops, base_ops = mean_of(mine, 'train_ops'), mean_of(base.values(), 'train_ops')
            peak, base_peak = mean_of(mine, 'peak_mib'), mean_of(base.values(), 'peak_mib')
            first = row.name == baseline
            cells.append([row.name, study_tables.fmt(*study_tables.mean_std([r['miou'] for r in mine])),
                          '-' if first else study_tables.fmt(*study_tables.mean_std(diffs)),
                          '-' if first else f'{sum(d > 0 for d in diffs)}/{len(diffs)}', curve,
                          f'{statistics.fmean(r["sec_per_iter"] for r in mine):.3f}',
                          f'{ops:.0f} ({ops / base_ops:.2f}x)',
                          '-' if peak is None else f'{peak:.0f} ({peak / base_peak:.2f}x)'])
        header = ['row', 'mIoU', f'minus {baseline} (paired)', 'seeds won', 'mIoU at N=1/2/4/8', 's / iter',
                  f'operators / step (x {baseline})', f'peak MiB (x {baseline})']
        lines += [f'Teacher {teacher!r} ({score:.2f} mIoU):', '', study_tables.markdown_table(header, cells), '']
    verdict_lines, _, _ = study_tables.verdicts(runs, baseline, 'miou', [r.name for r in rows])
    return '\n'.join(lines + verdict_lines)


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rows', nargs='+', help='a subset of the rows (the baseline always runs)')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--teacher-epochs', type=int, default=16)
    parser.add_argument('--jobs', type=int, default=1, help='runs in parallel, each in its own process')
    options.add_output(parser, osp.join('work_dirs', 'study_seg'), 'study_seg.md')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.epochs, args.teacher_epochs, args.seeds = 8, 4, 1, 1, [0]
    args.rows = options.pick_rows(parser, ROWS, args.rows, keep_first=True)
    options.finish_output(args, 'study_seg.md')
    return args


def main(argv=None):
    args = parse_args(argv)
    from fmkt_mm.datasets import make_segmentation_set
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(__file__, argv)
    data_root = osp.join(args.work_dir, 'data')
    make_segmentation_set(data_root, args.num_train, args.num_val)
    record = osp.join(args.work_dir, RECORD)
    # one torch thread per run when runs share the cores (more oversubscribe them), else torch's default
    threads = 1 if args.jobs > 1 else None
    # at one epoch (--quick) the half teacher is the full one: trained once
    epochs = dict(full=args.teacher_epochs, half=max(1, args.teacher_epochs // 2))
    teacher_jobs = [Job(name, TEACHER, 0, osp.join(args.work_dir, f'teacher_{name}'), epochs=n,
                        data_root=data_root, test_steps=(), threads=threads)
                    for name, n in epochs.items() if name == 'full' or n != epochs['full']]
    runs = pool.run_recorded(teacher_jobs, run_job, record, min(args.jobs, 2), 'seg teachers', key='miou')
    teachers = {r['row']: r for r in runs if r['teacher'] is None}
    teachers.setdefault('half', teachers['full'])
    jobs = [row.job(seed, osp.join(args.work_dir, f'{teacher}_{row.name.replace(" ", "-").replace("+", "")}_s{seed}'),
                    teacher=teacher, teacher_checkpoint=teachers[teacher]['checkpoint'], epochs=args.epochs,
                    data_root=data_root, test_steps=(), threads=threads)
            for seed in args.seeds for teacher in ('full', 'half') for row in args.rows]
    runs = pool.run_recorded(jobs, run_job, record, args.jobs, 'seg', key='miou')
    names = [r.name for r in args.rows]
    runs = [r for r in runs if r['teacher'] is not None and r['seed'] in args.seeds and r['row'] in names]
    floor = background_floor(data_root)
    header = (f'Segmentation study, composed set: {args.num_train} / {args.num_val} images of 64 px, '
              f'{args.epochs} epochs, seeds {args.seeds}, two PSPNet R18 w32 teachers ({args.teacher_epochs} and '
              f'{max(1, args.teacher_epochs // 2)} epochs); the PSPNet R18 w8 student; every distillation '
              f'row at CWD\'s total weight 3. The background everywhere scores {floor:.2f} mIoU.')
    table = tables(runs, {n: teachers[n]['miou'] for n in ('full', 'half')}, args.rows)
    out['seg'] = dict(background_miou=floor, runs=runs, table=table,
                      teachers={n: dict(checkpoint=teachers[n]['checkpoint'], miou=teachers[n]['miou'])
                                for n in ('full', 'half')})
    return reporting.finish(args, out, [header, '', table, ''], start)


if __name__ == '__main__':
    main()
