"""The classification recipe study: does an FM-KT recipe beat DIST beyond seed noise?

Every row of :data:`STUDY_ROWS` x two Fashion-MNIST teachers trained by this
script (ResNet-18 w16, ``--teacher-epochs`` and half of them) x ``--seeds``;
every run is paired with DIST's run (the first row) of the same teacher and
seed. Prints, per teacher, top-1 (mean ± std over seeds), the paired
difference to DIST, the seeds won, the ensemble's top-1 at N = 1/2/4/8 and
s / iter, then the paired 95 % t intervals per teacher and pooled
(:mod:`fmkt_mm.studies`); writes them to ``--out`` (default
``WORK_DIR/recipes_cls.md``, its JSON beside it). Each finished run is a line
of ``WORK_DIR/study.jsonl``; a rerun of the same command resumes::

    python tools/benchmarks/recipes_cls.py --seeds 0 1 2 3 4 --train-samples 3000 --epochs 3 --jobs 2
    python tools/benchmarks/recipes_cls.py --quick          # a smoke run (tiny sizes)
"""
import os
import os.path as osp
import time

import common
import options
import pool
import reporting
import study_tables
import task_runs
from common import Row

FMKT = 'fmkt_resnet18_w16_to_resnet18_w4.py'
#: the first row is the baseline every other row is paired with, seed by
#: seed and teacher by teacher
STUDY_ROWS = [
    Row('DIST', 'dist_resnet18_w16_to_resnet18_w4.py'),
    Row('FM-KT VE (default)', FMKT, dict(path='ve')),
    Row('FM-KT rectified', FMKT, dict(path='rectified')),
    Row('FM-KT VP', FMKT, dict(path='vp')),
    Row('FM-KT rectified, estimate from X_S (authors)', FMKT, dict(path='rectified', estimate='student')),
    Row('FM-KT VE, N drawn from 1..16', FMKT, dict(path='ve', num_steps=16, num_steps_choices=(1, 2, 4, 8, 16))),
    Row('FM-KT VE, encoder width x2', FMKT, dict(path='ve', encoder=dict(hidden_ratio=4.0))),
    Row('FM-KT VE, flow loss weight 0.5', FMKT, dict(path='ve'), dict(flow_loss_weight=0.5)),
    Row('FM-KT VE, flow loss weight 2', FMKT, dict(path='ve'), dict(flow_loss_weight=2.0)),
    Row('FM-KT VE, sigma_max 2 (time scale)', FMKT, dict(path=dict(_delete_=True, type='ve', sigma_max=2.0))),
]
RECORD = 'study.jsonl'


def parse_args(argv=None):
    parser = options.parser(__doc__)
    options.add_cls_sizes(parser)
    options.add_study_rows(parser, '--rows', STUDY_ROWS, 'DIST')
    options.add_jobs(parser)
    options.add_output(parser, common.EFFICACY_DIR, 'recipes_cls.md')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    args.rows = options.study_rows(parser, args, 'rows', STUDY_ROWS)
    options.finish_output(args, 'recipes_cls.md')
    return args


def study(args) -> dict:
    """Every row x teacher x seed, resumable (``study.jsonl``)."""
    half = max(1, args.teacher_epochs // 2)
    teachers = {'full': task_runs.train_cls_teacher(args)}
    # at one epoch (--quick) the half teacher is the full one: trained once
    teachers['half'] = teachers['full'] if half == args.teacher_epochs else \
        task_runs.train_cls_teacher(args, 'cls_teacher_half', half)
    # seed by seed: an interrupted study holds whole seeds, paired on both teachers
    jobs = [row.job(seed, osp.join(args.work_dir, 'study', teacher, f'{common.slug(row.name)}_seed{seed}'),
                    teacher=teacher, teacher_checkpoint=checkpoint, epochs=args.epochs,
                    train_samples=args.train_samples, test_samples=args.test_samples)
            for seed in args.seeds for teacher, (checkpoint, *_) in teachers.items() for row in args.rows]
    runs = pool.run_recorded(jobs, task_runs.run_cls, osp.join(args.work_dir, RECORD), args.jobs, 'study')
    table, summary = study_tables.study_table(runs, {k: v[1] for k, v in teachers.items()}, args.rows)
    return dict(teachers={k: dict(checkpoint=v[0], top1=v[1]) for k, v in teachers.items()},
                runs=runs, summary=summary, table=table)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(__file__, argv)
    out['study'] = study(args)
    text = [f'Recipe study, Fashion-MNIST: {args.train_samples} training images, {args.epochs} epochs, seeds '
            f'{args.seeds}, two teachers ({args.teacher_epochs} and {max(1, args.teacher_epochs // 2)} epochs), '
            f'top-1 at N=8 on {args.test_samples or 10000} test images', '', out['study']['table'], '']
    return reporting.finish(args, out, text, start)


if __name__ == '__main__':
    main()
