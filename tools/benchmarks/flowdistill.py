"""FlowDistill on the demo data: plain FM-KT against each capability switched on.

Trains the Fashion-MNIST FM-KT student (ResNet-18 w16 -> w4, logit-based,
8 flow steps) once per row and reports, per row, top-1 of the test set, the
training time per iteration and the flow's round-trip errors
(student -> teacher -> student and teacher -> student -> teacher, relative L2,
explicit reverse sampler) measured on the test set:

    fmkt               plain FM-KT                         fmkt_resnet18_w16_to_resnet18_w4.py
    conditional        + conditional flow, pooled feature  ..._conditional.py
    conditional-class  + conditional flow, class embedding ..._conditional-class.py
    conditional-class-soft  the same, soft class guess     ..._conditional-class-soft.py
    conditional-class-none  label dropped for half, none   ..._conditional-class-none.py
    progressive        + progressive steps and curriculum  ..._progressive.py
    roundtrip          + cycle-consistency training        ..._roundtrip.py

The teacher is reused from ``--teacher`` or ``work_dirs/fashion_mnist/teacher.pth``
(written by tools/demo_fashion_mnist.py) and trained here otherwise.
Prints a markdown table and writes ``<work-dir>/flowdistill_results.json``.

    python tools/benchmarks/flowdistill.py [--epochs 6] [--train-samples 10000]
        [--test-samples N] [--rows fmkt conditional ...] [--teacher PATH] [--quick]

``--task det`` runs the same comparison on the composed detection set
(RetinaNet R18 -> R18 w16, four FPN levels, deploy mode 'flow', N = 4;
``configs/fashion_det/fmkt_retinanet_r18_to_r18w16_{deploy-flow,conditional,
progressive,roundtrip}.py``), reporting COCO mAP and the round-trip errors
summed over levels (``<work-dir>/flowdistill_det_results.json``); the teacher
is ``--det-teacher`` or trained first::

    python tools/benchmarks/flowdistill.py --task det [--det-epochs 8] [--det-train 600]
        [--det-val 200] [--det-teacher PATH]

``--quick`` is a smoke run of a few seconds per row (a few iterations on a
few hundred images, a briefly trained teacher): its numbers say that the
pipeline works, not which capability helps.
"""
import copy
import functools
import json
import os
import os.path as osp

import options
import pool
import study_tables
import task_runs
from common import Job

TEACHER_CONFIG = 'teacher_resnet18_w16.py'
ROWS = {
    'fmkt': ('plain FM-KT', 'fmkt_resnet18_w16_to_resnet18_w4.py'),
    'conditional': ('+ conditional flow (pooled feature)', 'fmkt_resnet18_w16_to_resnet18_w4_conditional.py'),
    'conditional-class': ('+ conditional flow (class)', 'fmkt_resnet18_w16_to_resnet18_w4_conditional-class.py'),
    'conditional-class-soft': ('+ conditional flow (class, soft guess at inference)',
                               'fmkt_resnet18_w16_to_resnet18_w4_conditional-class-soft.py'),
    'conditional-class-none': ('+ conditional flow (class dropped for half, none at inference)',
                               'fmkt_resnet18_w16_to_resnet18_w4_conditional-class-none.py'),
    'progressive': ('+ progressive (steps 2-4-8, curriculum)', 'fmkt_resnet18_w16_to_resnet18_w4_progressive.py'),
    'roundtrip': ('+ cycle-consistency training', 'fmkt_resnet18_w16_to_resnet18_w4_roundtrip.py'),
}
#: the round trip every row is measured with: N = 1 and the training N = 8
ROUNDTRIP_STEPS = (1, 8)
DET_ROWS = {
    'fmkt': ('plain FM-KT (deploy flow)', 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'),
    'conditional': ('+ conditional flows (level + pooled, one shared encoder)',
                    'fmkt_retinanet_r18_to_r18w16_conditional.py'),
    'progressive': ('+ progressive (steps 1-2-4, coarse to fine levels)',
                    'fmkt_retinanet_r18_to_r18w16_progressive.py'),
    'roundtrip': ('+ cycle-consistency training', 'fmkt_retinanet_r18_to_r18w16_roundtrip.py'),
}
#: detection trains with N = 4
DET_ROUNDTRIP_STEPS = (1, 4)
#: the leading columns of each task's table: (header, result key, format)
CLS_SCORES = [('top-1 (%)', 'top1', '.2f')]
DET_SCORES = [('bbox mAP', 'mAP', '.1f'), ('mAP@50', 'mAP_50', '.1f')]


def epoch_milestones_to_iters(hook: dict, config_epochs: int, total_iters: int) -> dict:
    """An epoch-based progressive schedule written for ``config_epochs``,
    stretched onto this run's ``total_iters`` iterations."""
    hook = copy.deepcopy(hook)
    if not hook.get('by_epoch', False):
        return hook
    hook['by_epoch'] = False
    for name in ('num_steps', 'level_weights', 'curriculum'):
        if hook.get(name) is not None:
            hook[name]['milestones'] = [int(round(m * total_iters / config_epochs))
                                        for m in hook[name]['milestones']]
            # stages that collapse onto one iteration keep the later value
            kept_m, kept_v = [], [hook[name]['values'][0]]
            for m, v in zip(hook[name]['milestones'], hook[name]['values'][1:]):
                if kept_m and kept_m[-1] == m:
                    kept_v[-1] = v
                else:
                    kept_m.append(m)
                    kept_v.append(v)
            hook[name]['milestones'], hook[name]['values'] = kept_m, kept_v
    return hook


def build_cfg(job: Job, verbose: bool = False):
    """A Fashion-MNIST run, scored once (by ``runner.test()``), its round trip measured."""
    from fmkt_mm import experiment
    cfg = experiment.load(osp.join('fashion_mnist', job.config))
    config_epochs = cfg.train_cfg.max_epochs
    experiment.shrink_classification(cfg, job.epochs, job.train_samples, job.test_samples,
                                     batch_size=job.batch_size)
    cfg.train_cfg.val_interval = job.epochs + 1  # scored once, by runner.test()
    cfg.test_dataloader = cfg.val_dataloader
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=job.epochs, max_keep_ckpts=1)
    if not verbose:
        cfg.log_level = 'WARNING'
    iters_per_epoch = -(-job.train_samples // job.batch_size)
    hooks = []
    for hook in cfg.get('custom_hooks', []):
        kind = str(hook.get('type', '')).split('.')[-1]
        if kind == 'FlowRoundTripHook':
            continue  # replaced by the common measurement below
        if kind == 'ProgressiveDistillationHook':
            hook = epoch_milestones_to_iters(hook, config_epochs, iters_per_epoch * job.epochs)
        hooks.append(hook)
    if 'distiller' in cfg:
        hooks.append(dict(type='fmkt_mm.FlowRoundTripHook', num_steps=ROUNDTRIP_STEPS, refine=0))
    cfg.custom_hooks = hooks
    experiment.set_teacher(cfg, job.teacher_checkpoint)
    return experiment.finalize(cfg, job.config, job.work_dir)


def det_config(job: Job, verbose: bool = False):
    """A composed-set detection run (seed 0), its round trip measured."""
    from fmkt_mm import experiment
    from fmkt_mm.apis import make_reproducible
    path = osp.join('fashion_det', job.config)
    cfg = experiment.point_detection(experiment.load(path), job.data_root, job.epochs)
    make_reproducible(cfg, job.seed)
    if not verbose:
        cfg.log_level = 'WARNING'
    if 'distiller' in cfg:
        cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                            if str(h.get('type', '')).split('.')[-1] != 'FlowRoundTripHook']
        cfg.custom_hooks.append(dict(type='fmkt_mm.FlowRoundTripHook', num_steps=DET_ROUNDTRIP_STEPS,
                                     refine=0))
    experiment.set_teacher(cfg, job.teacher_checkpoint)
    return experiment.finalize(cfg, path, job.work_dir)


def cls_job(args, name: str, config: str, work_dir: str, teacher_checkpoint=None, **sizes) -> Job:
    """A Fashion-MNIST job of ``args``' sizes (``sizes`` overrides them);
    the configs' own seed (0), torch's thread count (``--threads``)."""
    sizes = dict(dict(epochs=args.epochs, train_samples=args.train_samples, test_samples=args.test_samples,
                      batch_size=args.batch_size), **sizes)
    return Job(name, config, 0, work_dir, teacher_checkpoint=teacher_checkpoint, threads=None, **sizes)


def train_teacher(args) -> str:
    from fmkt_mm import experiment
    sizes = dict(epochs=1, train_samples=128) if args.quick else {}
    cfg = build_cfg(cls_job(args, 'teacher', TEACHER_CONFIG, osp.join(args.work_dir, 'teacher'), **sizes),
                    args.verbose)
    return experiment.save_weights(experiment.train_and_test(cfg, test=False),
                                   osp.join(args.work_dir, 'teacher.pth'))


def train_and_score(cfg, steps):
    """Train and test ``cfg``: ``(run, round-trip errors at each of ``steps``)``."""
    from fmkt_mm import experiment
    run = experiment.train_and_test(cfg)
    scalars = run.scalars
    roundtrip = {f'{direction}_steps{n}': scalars.get(f'test/flow/roundtrip_{direction}_steps{n}')
                 for direction in ('s2t2s', 't2s2t') for n in steps}
    return run, roundtrip


def run_row(job: Job, verbose: bool = False) -> dict:
    run, roundtrip = train_and_score(build_cfg(job, verbose), ROUNDTRIP_STEPS)
    return dict(row=job.row, model=ROWS[job.row][0], config=job.config, top1=float(run.metrics['accuracy/top1']),
                flow_top1=run.by_steps('test/flow/top1_steps'), seconds_per_iter=run.seconds_per_iter(),
                iterations=run.iters, roundtrip=roundtrip, roundtrip_steps=ROUNDTRIP_STEPS[-1],
                seconds=run.seconds)


def run_det_row(job: Job, verbose: bool = False) -> dict:
    run, roundtrip = train_and_score(det_config(job, verbose), DET_ROUNDTRIP_STEPS)
    return dict(row=job.row, model=DET_ROWS[job.row][0], config=job.config,
                mAP=100 * float(run.metrics.get('coco/bbox_mAP', 0.0)),
                mAP_50=100 * float(run.metrics.get('coco/bbox_mAP_50', 0.0)),
                seconds_per_iter=run.seconds_per_iter(), iterations=run.iters,
                roundtrip=roundtrip, seconds=run.seconds)


def table(results, scores, steps) -> str:
    """Markdown: the ``scores`` columns (``(header, key, format)``), seconds per
    iteration and the round-trip errors at ``steps = (n1, n)``."""
    n1, n = steps

    def fmt(v):
        return '-' if v is None else f'{v:.2e}'

    cells = [[r['model']] + [format(r[key], spec) for _, key, spec in scores] + [
        f"{r['seconds_per_iter']:.3f}", fmt(r['roundtrip'][f's2t2s_steps{n1}']),
        fmt(r['roundtrip'][f's2t2s_steps{n}']), fmt(r['roundtrip'][f't2s2t_steps{n}'])] for r in results]
    header = ['model'] + [h for h, _, _ in scores] + ['s / iter', f's->t->s N={n1}', f's->t->s N={n}',
                                                      f't->s->t N={n}']
    return study_tables.markdown_table(header, cells)


def report(args, results, scores, steps, name: str, **info) -> None:
    print('\n' + table(results, scores, steps))
    out = osp.join(args.work_dir, name)
    with open(out, 'w') as f:
        json.dump(dict(info, quick=args.quick, rows=results), f, indent=1)
    print(f'\nresults written to {out}')


def main_cls(args):
    teacher = args.teacher
    if teacher is None and not args.quick:
        demo_teacher = osp.join('work_dirs', 'fashion_mnist', 'teacher.pth')
        teacher = demo_teacher if osp.isfile(demo_teacher) else None
    if teacher is None:
        teacher = train_teacher(args)
    print(f'teacher: {teacher}')
    jobs = [cls_job(args, name, ROWS[name][1], osp.join(args.work_dir, name), teacher) for name in args.rows]
    results = pool.run_jobs(jobs, functools.partial(run_row, verbose=args.verbose), on_result=lambda r: print(
        f"{r['row']}: top-1 {r['top1']:.2f}, {r['seconds_per_iter']:.3f} s/iter, "
        f"{r['iterations']} iterations, {r['seconds']:.0f} s", flush=True))
    report(args, results, CLS_SCORES, ROUNDTRIP_STEPS, 'flowdistill_results.json', teacher=teacher,
           epochs=args.epochs, train_samples=args.train_samples, test_samples=args.test_samples)
    return results


def main_det(args):
    from fmkt_mm import experiment
    data_root = task_runs.det_data(args.work_dir, args.det_train, args.det_val)
    teacher = args.det_teacher
    if teacher is None:
        job = Job('teacher', 'retinanet_r18_teacher.py', 0, osp.join(args.work_dir, 'det', 'teacher'),
                  epochs=args.det_teacher_epochs, data_root=data_root)
        teacher = experiment.save_weights(experiment.train_and_test(det_config(job, args.verbose), test=False),
                                          osp.join(args.work_dir, 'det_teacher.pth'))
    print(f'detection teacher: {teacher}')
    jobs = [Job(name, DET_ROWS[name][1], 0, osp.join(args.work_dir, 'det', name), teacher_checkpoint=teacher,
                epochs=args.det_epochs, data_root=data_root, threads=None) for name in args.det_rows]
    results = pool.run_jobs(jobs, functools.partial(run_det_row, verbose=args.verbose), on_result=lambda r: print(
        f"det {r['row']}: mAP {r['mAP']:.1f}, {r['seconds_per_iter']:.3f} s/iter, "
        f"{r['iterations']} iterations, {r['seconds']:.0f} s", flush=True))
    report(args, results, DET_SCORES, DET_ROUNDTRIP_STEPS, 'flowdistill_det_results.json', teacher=teacher,
           epochs=args.det_epochs, train_images=args.det_train, val_images=args.det_val)
    return results


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--task', choices=['cls', 'det', 'all'], default='cls')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-samples', type=int, default=10000)
    parser.add_argument('--test-samples', type=int, default=None,
                        help='evaluate on a subset of the 10k test images')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    parser.add_argument('--teacher', default=None,
                        help='teacher checkpoint (default: work_dirs/fashion_mnist/teacher.pth if it '
                        'exists, else one is trained)')
    options.add_det_sizes(parser, seeds=False)
    parser.add_argument('--det-rows', nargs='+', default=list(DET_ROWS), choices=list(DET_ROWS))
    parser.add_argument('--det-teacher', default=None, help='RetinaNet R18 teacher checkpoint '
                        '(default: trained first)')
    options.add_output(parser, osp.join('work_dirs', 'flowdistill'))
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--verbose', action='store_true', help="print MMEngine's training logs")
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 1 epoch of 2 iterations on 128 images, 64 test images')
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_samples, args.test_samples, args.batch_size = 1, 128, 64, 64
        args.det_train, args.det_val, args.det_epochs, args.det_teacher_epochs = 8, 4, 1, 1
    options.finish_output(args)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    import fmkt_mm  # noqa: F401  (registers the components)
    os.makedirs(args.work_dir, exist_ok=True)
    results = []
    if args.task in ('cls', 'all'):
        results += main_cls(args)
    if args.task in ('det', 'all'):
        results += main_det(args)
    return results


if __name__ == '__main__':
    main()
