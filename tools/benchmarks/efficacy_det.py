"""What FM-KT gains in detection, measured against the baselines on the composed Fashion-MNIST set.

RetinaNet R18 teacher -> RetinaNet R18 w16 student on the composed set of
``--det-train`` / ``--det-val`` images of 128 px, over ``--det-seeds``:
student alone, PKD, FM-KT in both deploy modes (and the conv encoder); the
rows whose flows predict are also scored at each of ``--det-steps``. Prints a
markdown table and writes it (``--out``, default ``WORK_DIR/efficacy_det.md``,
its JSON beside it)::

    python tools/benchmarks/efficacy_det.py --det-seeds 0 1 2 --jobs 2   # about 30 min on 2 cores
    python tools/benchmarks/efficacy_det.py --quick                      # a smoke run (tiny sizes)

The teacher is trained once (or reused from the work dir) and shared by every
row; every run is seeded and asks for deterministic algorithms.
"""
import os
import os.path as osp
import statistics
import time

import common
import options
import pool
import reporting
import study_tables
import task_runs
from common import Row

#: the rows whose flows predict are scored at each ``--det-steps``
DET_ROWS = [Row('student alone RetinaNet R18 w16', 'retinanet_r18w16_student.py'),
            Row('PKD', 'pkd_retinanet_r18_to_r18w16.py'),
            Row('FM-KT deploy student (zero cost)', 'fmkt_retinanet_r18_to_r18w16_deploy-student.py'),
            Row('FM-KT deploy flow (paper)', 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'),
            Row('FM-KT deploy flow, conv encoder', 'fmkt_retinanet_r18_to_r18w16_deploy-flow_conv.py')]


def parse_args(argv=None):
    parser = options.parser(__doc__)
    options.add_det_sizes(parser)
    parser.add_argument('--det-rows', nargs='+', metavar='NAME',
                        help='rows to run (the teacher always), by exact name: '
                             + '; '.join(repr(r.name) for r in DET_ROWS))
    options.add_det_steps(parser)
    options.add_jobs(parser)
    options.add_output(parser, common.EFFICACY_DIR, 'efficacy_det.md')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    args.det_rows = options.pick_rows(parser, DET_ROWS, args.det_rows)
    if args.quick:
        options.shrink(args)
    options.finish_output(args, 'efficacy_det.md')
    return args


def jobs(args, data_root: str, teacher_checkpoint: str):
    """Every row at every seed, seed by seed."""
    return [row.job(seed, osp.join(args.work_dir, 'det', f'{osp.splitext(row.config)[0]}_seed{seed}'),
                    teacher_checkpoint=teacher_checkpoint, epochs=args.det_epochs, data_root=data_root,
                    test_steps=tuple(args.det_steps))
            for seed in args.det_seeds for row in args.det_rows]


def det_table(teacher_metrics: dict, results, steps):
    """``(markdown, summary)``: per row, mean (± std over seeds) of mAP,
    mAP@50, mAP@75 and the step curve, and the training time."""
    kinds = ('mAP', 'mAP_50', 'mAP_75')
    cells = [['teacher RetinaNet R18'] + [f'{100 * teacher_metrics.get(f"coco/bbox_{k}", 0.0):.1f}' for k in kinds]
             + ['-', '-', '-']]
    summary = {}
    for row in DET_ROWS:
        runs = [r for r in results if r['row'] == row.name]
        if not runs:
            continue
        scores = {k: study_tables.mean_std([100 * r['metrics'].get(f'coco/bbox_{k}', 0.0) for r in runs])
                  for k in kinds}
        curve = None
        if runs[0]['map_by_steps'] is not None:
            curve = {n: statistics.fmean(100 * r['map_by_steps'][n] for r in runs) for n in steps}
        minutes = statistics.fmean(r['seconds'] for r in runs) / 60
        summary[row.name] = dict(seeds=[r['seed'] for r in runs], map_by_steps=curve,
                                 **{k: dict(mean=m, std=sd) for k, (m, sd) in scores.items()})
        cells.append([row.name] + [study_tables.fmt(m, sd, digits=1) for m, sd in scores.values()]
                     + [' / '.join(f'{v:.1f}' for v in curve.values()) if curve else '-', len(runs),
                        f'{minutes:.1f}'])
    header = ['method', 'bbox mAP', 'mAP@50', 'mAP@75', f'mAP at N={"/".join(str(n) for n in steps)}', 'seeds',
              'train time (min)']
    return study_tables.markdown_table(header, cells), summary


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(__file__, argv)
    data_root = task_runs.det_data(args.work_dir, args.det_train, args.det_val)
    teacher_checkpoint, teacher_metrics, teacher_seconds = task_runs.train_det_teacher(args, data_root)
    results = pool.run_jobs(
        jobs(args, data_root, teacher_checkpoint), task_runs.run_det, args.jobs,
        lambda r: print(f'[det] {r["row"]} seed {r["seed"]}: {r["bbox_map"]:.1f}', flush=True))
    table, summary = det_table(teacher_metrics, results, args.det_steps)
    out['det'] = dict(teacher=dict(metrics={k: float(v) for k, v in teacher_metrics.items()},
                                   seconds=teacher_seconds),
                      runs=results, summary=summary, table=table)
    text = [f'Fashion-MNIST detection: {args.det_train} train / {args.det_val} val images (128 px), teacher '
            f'{args.det_teacher_epochs} epochs, students {args.det_epochs} epochs, seeds {args.det_seeds}, '
            f'COCO mAP (pycocotools; mean ± std over seeds)', '', table, '']
    return reporting.finish(args, out, text, start)


if __name__ == '__main__':
    main()
