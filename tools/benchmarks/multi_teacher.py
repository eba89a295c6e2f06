"""Several teachers measured: two teachers against each alone, and Mask R-CNN.

``--task cls``: two Fashion-MNIST teachers (ResNet-18 w16 and w8, trained by
this script) against each alone, over ``--seeds``; ``--task det``: a
RetinaNet and an FCOS teacher on the composed set against each alone, over
``--det-seeds``; ``--task mask``: Mask R-CNN (student alone, PKD, FM-KT) from
a Mask R-CNN teacher, bbox and segm mAP; ``--task all`` (the default): the
three (``--task cls det``: those two). A row with both teachers is paired, seed by seed, with the better
single-teacher row; every row also reports s / iter, trainable parameters and
its process's peak memory. Writes the tables to ``--out`` (default
``WORK_DIR/multi_teacher.md``, its JSON beside it). Each finished run is a
line of ``WORK_DIR/{teachers_cls,teachers_det,mask}.jsonl``; a rerun of the
same command resumes::

    python tools/benchmarks/multi_teacher.py --train-samples 3000 --epochs 3 --det-train 300 \\
        --det-val 100 --det-epochs 6 --det-teacher-epochs 8 --det-seeds 0 1 2 --jobs 2
    python tools/benchmarks/multi_teacher.py --task cls --quick      # a smoke run (tiny sizes)
"""
import os
import os.path as osp
import statistics
import time
from typing import Tuple

import common
import options
import pool
import reporting
import study_tables
import task_runs
from common import Row

TWO_CLS = 'fmkt_2teachers_resnet18_w16-w8_to_resnet18_w4.py'
TWO_DET = 'fmkt_retinanet-fcos_r18_to_r18w16_deploy-student.py'
#: (the overrides are the distiller's: the teachers it keeps, ...); the rows
#: with one teacher are the references of the rows with both
TEACHER_CLS_ROWS = [
    Row('FM-KT VE, teacher w16', TWO_CLS, distiller=dict(keep_teachers=(0,))),
    Row('FM-KT VE, teacher w8', TWO_CLS, distiller=dict(keep_teachers=(1,))),
    Row('FM-KT VE, both teachers, separate flows', TWO_CLS,
        distiller=dict(keep_teachers=(0, 1), teacher_flows='separate')),
    Row('FM-KT VE, both teachers, shared flow', TWO_CLS, distiller=dict(keep_teachers=(0, 1), teacher_flows='shared')),
]
TEACHER_DET_ROWS = [
    Row('FM-KT deploy student, RetinaNet teacher', TWO_DET, distiller=dict(keep_teachers=(0,))),
    Row('FM-KT deploy student, FCOS teacher', TWO_DET, distiller=dict(keep_teachers=(1,))),
    Row('FM-KT deploy student, both teachers, separate flows', TWO_DET,
        distiller=dict(keep_teachers=(0, 1), teacher_flows='separate')),
    Row('FM-KT deploy student, both teachers, shared flows', TWO_DET,
        distiller=dict(keep_teachers=(0, 1), teacher_flows='shared')),
]
#: the Mask R-CNN comparison
MASK_ROWS = [Row('student alone Mask R-CNN R18 w16', 'mask-rcnn_r18w16_student.py'),
             Row('PKD', 'pkd_mask-rcnn_r18_to_r18w16.py'),
             Row('FM-KT deploy student', 'fmkt_mask-rcnn_r18_to_r18w16_deploy-student.py')]


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--task', nargs='+', choices=['cls', 'det', 'mask', 'all'], default=['all'],
                        help='the comparisons to run (several: e.g. cls det)')
    options.add_cls_sizes(parser)
    options.add_det_sizes(parser)
    options.add_jobs(parser)
    options.add_output(parser, common.EFFICACY_DIR, 'multi_teacher.md')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    if args.quick:
        options.shrink(args)
    options.finish_output(args, 'multi_teacher.md')
    return args


def teachers_table(runs, rows, metrics, single) -> Tuple[str, dict]:
    """Per row: each metric (mean ± std over seeds); for a row with several
    teachers, its paired difference (first metric) to the best of the rows
    ``single`` on the same seeds and the seeds won; and its cost."""
    best = max((r for r in single if any(x['row'] == r for x in runs)), default=None,
               key=lambda r: statistics.fmean(x[metrics[0][1]] for x in runs if x['row'] == r))
    cells, summary = [], {}
    for name in rows:
        mine = sorted((r for r in runs if r['row'] == name), key=lambda r: r['seed'])
        if not mine:
            continue
        values = {key: study_tables.mean_std([r[key] for r in mine]) for _, key in metrics}
        diffs = []
        if best is not None and name not in single:
            reference = {r['seed']: r for r in runs if r['row'] == best}
            key = metrics[0][1]
            diffs = [r[key] - reference[r['seed']][key] for r in mine if r['seed'] in reference]
        diff = study_tables.mean_std(diffs) if diffs else None
        peaks = [r['peak_mib'] for r in mine if r.get('peak_mib')]
        summary[name] = dict(seeds=[r['seed'] for r in mine], diff=diff, wins=sum(d > 0 for d in diffs),
                             sec_per_iter=statistics.fmean(r['sec_per_iter'] for r in mine),
                             params=mine[0]['params'], peak_mib=max(peaks) if peaks else None,
                             **{key: dict(mean=m, std=sd) for key, (m, sd) in values.items()})
        cells.append([name] + [study_tables.fmt(*values[key]) for _, key in metrics] + [
            study_tables.fmt(*diff) if diff else '-', f'{summary[name]["wins"]}/{len(diffs)}' if diffs else '-',
            f'{summary[name]["sec_per_iter"]:.3f}', f'{summary[name]["params"]:,}',
            f'{summary[name]["peak_mib"]:.0f}' if peaks else '-'])
    header = ['row'] + [label for label, _ in metrics] + [
        f'minus {best} (paired)', 'seeds won', 's / iter', 'trainable params', 'peak MiB']
    return study_tables.markdown_table(header, cells), summary


def compare(args, rows, record: str, run, teachers, seeds, metrics, **fields) -> dict:
    """Every row at every seed (seed by seed), each with the teachers its
    ``keep_teachers`` names (all of ``teachers`` without), recorded in
    ``record``; the table pairs the rows with several teachers with the
    best of the first two."""
    folder = osp.splitext(record)[0]
    jobs = [row.job(seed, osp.join(args.work_dir, folder, f'{common.slug(row.name)}_seed{seed}'),
                    teacher_checkpoint=teachers if not row.distiller else
                    [teachers[j] for j in row.distiller['keep_teachers']], **fields)
            for seed in seeds for row in rows]
    runs = pool.run_recorded(jobs, run, osp.join(args.work_dir, record), args.jobs,
                               folder.replace('_', ' '), key=metrics[0][1])
    names = [r.name for r in rows]
    table, summary = teachers_table(runs, names, metrics, names[:2])
    return dict(runs=runs, summary=summary, table=table)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(__file__, argv)
    tasks = ('cls', 'det', 'mask') if 'all' in args.task else args.task
    text = []
    if 'cls' in tasks:
        teachers = [task_runs.train_cls_teacher(args),
                    task_runs.train_cls_teacher(args, 'cls_teacher_w8', config='teacher_resnet18_w8.py')]
        result = compare(args, TEACHER_CLS_ROWS, 'teachers_cls.jsonl', task_runs.run_cls, [t[0] for t in teachers],
                         args.seeds, [('top-1 (%)', 'top1')], epochs=args.epochs,
                         train_samples=args.train_samples, test_samples=args.test_samples)
        out['teachers_cls'] = dict(teachers={name: dict(checkpoint=t[0], top1=t[1])
                                             for name, t in zip(('w16', 'w8'), teachers)}, **result)
        top1 = ', '.join(f'{k} {v["top1"]:.2f} %' for k, v in out['teachers_cls']['teachers'].items())
        text += [f'Two teachers, Fashion-MNIST ({top1} top-1): {args.train_samples} training images, '
                 f'{args.epochs} epochs, seeds {args.seeds}, top-1 at N=8 on {args.test_samples or 10000} test '
                 f'images', '', result['table'], '']
    if 'det' in tasks or 'mask' in tasks:
        data_root = task_runs.det_data(args.work_dir, args.det_train, args.det_val)
        sizes = f'{args.det_train} / {args.det_val} images, {args.det_epochs} epochs, seeds {args.det_seeds}'
    if 'det' in tasks:
        teachers = [task_runs.train_det_teacher(args, data_root),
                    task_runs.train_det_teacher(args, data_root, 'fcos_r18_teacher.py', 'det_teacher_fcos')]
        result = compare(args, TEACHER_DET_ROWS, 'teachers_det.jsonl', task_runs.run_det, [t[0] for t in teachers],
                         args.det_seeds, [('bbox mAP', 'bbox_map')], epochs=args.det_epochs, data_root=data_root)
        out['teachers_det'] = dict(teachers={name: dict(checkpoint=t[0], bbox_mAP=100 * t[1].get('coco/bbox_mAP', 0.0))
                                             for name, t in zip(('RetinaNet', 'FCOS'), teachers)}, **result)
        maps = ', '.join(f'{k} {v["bbox_mAP"]:.1f}' for k, v in out['teachers_det']['teachers'].items())
        text += [f'Two teachers, composed detection set (teachers\' bbox mAP: {maps}): {sizes}', '',
                 result['table'], '']
    if 'mask' in tasks:
        teacher = task_runs.train_det_teacher(args, data_root, 'mask-rcnn_r18_teacher.py', 'det_teacher_mask-rcnn')
        result = compare(args, MASK_ROWS, 'mask.jsonl', task_runs.run_det, teacher[0], args.det_seeds,
                         [('bbox mAP', 'bbox_map'), ('segm mAP', 'segm_map')], epochs=args.det_epochs,
                         data_root=data_root)
        scores = {k: 100 * teacher[1].get(f'coco/{k}_mAP', 0.0) for k in ('bbox', 'segm')}
        out['mask'] = dict(teacher=scores, **result)
        text += [f'Mask R-CNN, composed detection set (teacher bbox {scores["bbox"]:.1f} / segm '
                 f'{scores["segm"]:.1f} mAP): {sizes}', '', result['table'], '']
    return reporting.finish(args, out, text, start)


if __name__ == '__main__':
    main()
