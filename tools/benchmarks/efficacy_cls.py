"""What FM-KT gains in classification, measured against the baselines on Fashion-MNIST.

ResNet-18 w16 teacher -> ResNet-18 w4 student, several seeds: student alone,
KD, DKD, DIST, FM-KT with each path (rectified, VP, VE), each meta-encoder
(mlp, conv, transformer) and N_train 4 / 8, FM-KT^Theta and OFM-KT. Prints a
markdown table and writes it (``--out``, default
``WORK_DIR/efficacy_cls.md``, its JSON beside it) and two plots in the work
dir (top-1 against the number of inference steps; training loss of each flow
step)::

    python tools/benchmarks/efficacy_cls.py --jobs 2    # about 40 min on 2 cores
    python tools/benchmarks/efficacy_cls.py --quick     # a smoke run (tiny sizes)

Every run is seeded and asks for deterministic algorithms, so a rerun of a
row in the same environment repeats its numbers. The teacher is trained once
(or reused from the work dir) and shared by every row; every row trains from
scratch with the same data, schedule and seed as the student alone.
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
from common import INFERENCE_STEPS, Row

FMKT = 'fmkt_resnet18_w16_to_resnet18_w4.py'
CLS_ROWS = [
    Row('student alone', 'student_resnet18_w4.py'),
    Row('KD (tau 4)', 'kd_resnet18_w16_to_resnet18_w4.py'),
    Row('DKD', 'dkd_resnet18_w16_to_resnet18_w4.py'),
    Row('DIST', 'dist_resnet18_w16_to_resnet18_w4.py'),
    Row('FM-KT rectified / mlp / N=8', FMKT, dict(path='rectified')),
    Row('FM-KT rectified / mlp / N=4', FMKT, dict(path='rectified', num_steps=4)),
    Row('FM-KT VP / mlp / N=8', FMKT, dict(path='vp')),
    Row('FM-KT VE / mlp / N=8', FMKT, dict(path='ve')),
    Row('FM-KT rectified / conv / N=8', FMKT, dict(path='rectified', encoder=dict(_delete_=True, type='conv'))),
    Row('FM-KT rectified / transformer / N=8', FMKT,
        dict(path='rectified', encoder=dict(_delete_=True, type='transformer'))),
    Row('FM-KT^Theta rectified / mlp / N=8', 'fmkt_theta_resnet18_w16_to_resnet18_w4.py', dict(path='rectified')),
    Row('OFM-KT (no teacher)', 'ofmkt_resnet18_w4.py', {}),
]
#: the rows of ``--quick`` (unless ``--rows`` names others)
QUICK_ROWS = ['student alone', 'KD (tau 4)', 'FM-KT rectified / mlp / N=8', 'FM-KT^Theta rectified / mlp / N=8']


def parse_args(argv=None):
    parser = options.parser(__doc__)
    options.add_cls_sizes(parser)
    parser.add_argument('--rows', nargs='+', metavar='NAME',
                        help='rows to run, by exact name: ' + '; '.join(repr(r.name) for r in CLS_ROWS))
    options.add_jobs(parser)
    options.add_output(parser, common.EFFICACY_DIR, 'efficacy_cls.md')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    if args.quick:
        options.shrink(args)
        args.rows = args.rows or QUICK_ROWS
    args.rows = options.pick_rows(parser, CLS_ROWS, args.rows)
    options.finish_output(args, 'efficacy_cls.md')
    return args


def jobs(args, teacher_checkpoint: str):
    """Every row at every seed, seed by seed."""
    return [row.job(seed, osp.join(args.work_dir, 'cls', f'{common.slug(row.name)}_seed{seed}'),
                    teacher_checkpoint=teacher_checkpoint, epochs=args.epochs,
                    train_samples=args.train_samples, test_samples=args.test_samples)
            for seed in args.seeds for row in args.rows]


def cls_table(results, teacher_top1: float):
    """``(markdown, summary)``: per row, top-1 (mean ± std over seeds), the
    ensemble's top-1 at each inference step count, s / iter."""
    rows = {}
    for r in results:
        rows.setdefault(r['row'], []).append(r)
    cells = [['teacher ResNet-18 w16', f'{teacher_top1:.2f}', '-', '-', 1]]
    summary = {}
    for row in CLS_ROWS:
        if row.name not in rows:
            continue
        runs = rows[row.name]
        top1 = study_tables.mean_std([r['top1'] for r in runs])
        curve = '-'
        if runs[0]['steps']:
            curve = ' / '.join(f'{statistics.fmean(r["steps"][n] for r in runs):.2f}' for n in INFERENCE_STEPS)
        speed = statistics.median(r['sec_per_iter'] for r in runs)
        cells.append([row.name, study_tables.fmt(*top1), curve, f'{speed:.3f}', len(runs)])
        summary[row.name] = dict(top1_mean=top1[0], top1_std=top1[1], seeds=[r['seed'] for r in runs])
    header = ['method', 'top-1 (%)', 'ensemble top-1 at N = ' + ' / '.join(map(str, INFERENCE_STEPS)),
              's / iter', 'seeds']
    return study_tables.markdown_table(header, cells), summary


def plot_cls(results, work_dir: str):
    """``fmkt_steps.png``: the ensemble's top-1 against N, each flow step's training loss."""
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
    path = osp.join(work_dir, 'fmkt_steps.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(__file__, argv)
    teacher_checkpoint, teacher_top1, _ = task_runs.train_cls_teacher(args)
    results = pool.run_jobs(
        jobs(args, teacher_checkpoint), task_runs.run_cls, args.jobs,
        lambda r: print(f'[cls] {r["row"]} seed {r["seed"]}: {r["top1"]:.2f}', flush=True))
    table, summary = cls_table(results, teacher_top1)
    out['cls'] = dict(teacher_top1=teacher_top1, runs=results, summary=summary, table=table,
                      plots=plot_cls(results, args.work_dir))
    text = [f'Fashion-MNIST classification: {args.train_samples} training images, {args.epochs} epochs, '
            f'seeds {args.seeds}, top-1 on {args.test_samples or 10000} test images (mean ± std over seeds)',
            '', table, '']
    return reporting.finish(args, out, text, start)


if __name__ == '__main__':
    main()
