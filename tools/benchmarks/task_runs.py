"""The runs of the demo tasks: Fashion-MNIST classification
(:func:`cls_config`, :func:`run_cls`, :func:`train_cls_teacher`) and the
composed detection set (:func:`det_config`, :func:`run_det`,
:func:`train_det_teacher`, and the detection study :func:`det_study`)."""
import argparse
import copy
import os
import os.path as osp
import time
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

import reporting
from common import Job, slug
from pool import run_recorded
from study_tables import study_table

if TYPE_CHECKING:
    from mmengine.config import Config

    from fmkt_mm.experiment import Run


def override_distiller(cfg: 'Config', overrides: dict) -> None:
    """Merge ``overrides`` into the config's distiller; ``keep_teachers``
    (indices) keeps only those teachers of a several-teacher config."""
    overrides = copy.deepcopy(dict(overrides))  # merging consumes `_delete_` markers
    keep = overrides.pop('keep_teachers', None)
    if keep is not None:
        entries = cfg.distiller.teachers
        cfg.distiller.teachers = [entries[j] for j in keep]
    cfg.merge_from_dict(dict(distiller=overrides))


def cls_config(job: Job) -> 'Config':
    """The Fashion-MNIST config of ``job``, ready to run: ``job.epochs`` on
    ``job.train_samples`` images, seeded, the last checkpoint kept; a flow
    is also scored at each of ``job.test_steps``."""
    from fmkt_mm import experiment
    cfg = experiment.shrink_classification(experiment.load(osp.join('fashion_mnist', job.config)), job.epochs,
                                           job.train_samples, job.test_samples, job.seed)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=True)
    if job.distiller:
        override_distiller(cfg, job.distiller)
    experiment.set_teacher(cfg, job.teacher_checkpoint)
    if 'distiller' in cfg:
        if job.flow:  # a copy: merging consumes the `_delete_` markers
            cfg.merge_from_dict(dict(distiller=dict(flow=copy.deepcopy(job.flow))))
        if cfg.distiller.get('flow') is not None:
            cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if 'FlowSteps' not in h['type']]
            cfg.custom_hooks.append(dict(type='fmkt_mm.FlowStepsHook', test_steps=job.test_steps))
    return experiment.finalize(cfg, job.config, job.work_dir)


def footprint(run: 'Run') -> dict:
    """Trainable parameters (student, flows, adapters) and the process's peak
    resident memory in MiB (the run's own in a fresh process: see :func:`run_jobs`)."""
    import resource
    params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    return dict(params=params, peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_cls(job: Job) -> dict:
    """One classification run in this process: top-1, the flow's top-1 at
    each step count (``steps``), each flow step's training loss
    (``step_loss``, the last quarter of training) and its cost."""
    from fmkt_mm import experiment
    run = experiment.train_and_test(cls_config(job))
    result = dict(row=job.row, seed=job.seed, top1=float(run.metrics['accuracy/top1']),
                  steps=run.by_steps('test/flow/top1_steps'), step_loss=run.tail_mean('train/flow_step'),
                  seconds=run.seconds, iters=run.iters, sec_per_iter=run.seconds / max(1, run.iters),
                  **footprint(run))
    if job.teacher is not None:
        result['teacher'] = job.teacher
    return result


def train_cls_teacher(args: argparse.Namespace, name: str = 'cls_teacher', epochs: Optional[int] = None,
                      config: str = 'teacher_resnet18_w16.py') -> Tuple[str, float, Optional[float]]:
    """``(checkpoint, top-1, seconds)`` of the classification teacher
    ``name`` in ``--work-dir``, trained ``epochs`` (default
    ``--teacher-epochs``) on ``--teacher-samples`` images, or reused (and
    tested) when its checkpoint exists."""
    import torch
    from mmengine.runner import Runner

    from fmkt_mm import experiment
    path = osp.join(args.work_dir, f'{name}.pth')
    work_dir = osp.join(args.work_dir, 'cls', name)
    torch.set_num_threads(1)
    if osp.isfile(path):
        print(f'reusing the classification teacher {path}', flush=True)
        cfg = cls_config(Job(name, config, 0, work_dir, epochs=args.epochs, train_samples=args.train_samples,
                             test_samples=args.test_samples))
        cfg.load_from = path
        return path, float(Runner.from_cfg(cfg).test()['accuracy/top1']), None
    run = experiment.train_and_test(cls_config(Job(
        name, config, 0, work_dir, epochs=epochs or args.teacher_epochs, train_samples=args.teacher_samples,
        test_samples=args.test_samples)))
    experiment.save_weights(run, path)
    return path, float(run.metrics['accuracy/top1']), run.seconds


def det_data(work_dir: str, num_train: int, num_val: int) -> str:
    """The composed detection set (128 px, seed 0) in ``work_dir/fashion_det``."""
    from fmkt_mm.datasets import make_detection_set
    data_root = osp.join(work_dir, 'fashion_det')
    make_detection_set(data_root, num_train, num_val, image_size=128, seed=0)
    return data_root


def det_config(job: Job) -> 'Config':
    """The composed-set detection config of ``job``, ready to run; a
    distiller whose flows predict is also tested at each of ``job.test_steps``
    (and validated at the last)."""
    from fmkt_mm import experiment
    from fmkt_mm.apis import make_reproducible
    from fmkt_mm.export import deploy_mode_of
    path = osp.join('fashion_det', job.config)
    cfg = experiment.point_detection(experiment.load(path), job.data_root, job.epochs)
    if job.distiller:
        override_distiller(cfg, job.distiller)
    experiment.set_teacher(cfg, job.teacher_checkpoint)
    steps = job.test_steps
    if steps and 'distiller' in cfg and deploy_mode_of(cfg.distiller) == 'flow':
        cfg.distiller.eval_steps = steps[-1]
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='fmkt_mm.FlowStepsHook', val_steps=steps[-1], test_steps=tuple(steps))]
    make_reproducible(cfg, job.seed)
    return experiment.finalize(cfg, path, job.work_dir)


def run_det(job: Job) -> dict:
    """One detection run in this process: its COCO metrics, bbox and segm
    mAP in % (``bbox_map``, ``segm_map``; 0 where nothing was predicted:
    CocoMetric then reports nothing) and, for a distiller whose flows
    predict, bbox mAP at each of ``job.test_steps`` (``map_by_steps``)."""
    from fmkt_mm import experiment
    cfg = det_config(job)
    flow_tested = any(str(h.get('type', '')).endswith('FlowStepsHook') for h in cfg.custom_hooks)
    run = experiment.train_and_test(cfg)
    curve = None
    if flow_tested:
        curve = step_curve(run.by_steps('test/flow/coco/bbox_mAP_steps'), job.test_steps,
                           run.metrics.get('coco/bbox_mAP', 0.0))
    result = dict(row=job.row, seed=job.seed, metrics={k: float(v) for k, v in run.metrics.items()},
                  seconds=run.seconds, map_by_steps=curve, sec_per_iter=run.seconds / max(1, run.iters),
                  **footprint(run))
    for kind in ('bbox', 'segm'):
        result[f'{kind}_map'] = 100 * result['metrics'].get(f'coco/{kind}_mAP', 0.0)
    if job.teacher is not None:
        result['teacher'] = job.teacher
    return result


def step_curve(by_steps: Dict[int, float], steps: Sequence[int], evaluated: float) -> Dict[int, float]:
    """``{N: score}`` at each of ``steps`` from FlowStepsHook's per-count
    scalars ``by_steps``: the last count is the evaluator's own number
    ``evaluated`` (the hook logs the counts only when there are several);
    a count with nothing logged scores 0 (CocoMetric reports nothing when no
    box was predicted), as the rows do."""
    logged = {steps[-1]: evaluated, **by_steps}
    return {n: logged.get(n, 0.0) for n in steps}


def train_det_teacher(args: argparse.Namespace, data_root: str, config: str = 'retinanet_r18_teacher.py',
                      name: str = 'det_teacher', epochs: Optional[int] = None) -> Tuple[str, dict, Optional[float]]:
    """``(checkpoint, test metrics, seconds)`` of the detection teacher
    ``name`` in ``--work-dir``, trained on ``data_root`` for ``epochs``
    (default ``--det-teacher-epochs``), or reused when its checkpoint exists."""
    import torch
    from mmengine.runner import Runner

    from fmkt_mm import experiment
    torch.set_num_threads(1)
    path = osp.join(args.work_dir, f'{name}.pth')
    cfg = det_config(Job(name, config, 0, osp.join(args.work_dir, 'det', name), data_root=data_root,
                         epochs=epochs or args.det_teacher_epochs))
    if osp.isfile(path):
        cfg.load_from = path
        return path, Runner.from_cfg(cfg).test(), None
    run = experiment.train_and_test(cfg)
    experiment.save_weights(run, path)
    return path, run.metrics, run.seconds


def det_study(args: argparse.Namespace, teacher_config: str = 'retinanet_r18_teacher.py', name: str = 'det') -> dict:
    """Every row of ``args.det_rows`` x teacher x seed, resumable
    (``study_{name}.jsonl``); two teachers of ``teacher_config`` (a file of
    configs/fashion_det), ``--det-teacher-epochs`` and half of them."""
    data_root = det_data(args.work_dir, args.det_train, args.det_val)
    teacher = 'det_teacher' if name == 'det' else f'{name}_teacher'
    half = max(1, args.det_teacher_epochs // 2)
    teachers = {'full': train_det_teacher(args, data_root, teacher_config, name=teacher)}
    # at one epoch (--quick) the half teacher is the full one: trained once
    teachers['half'] = teachers['full'] if half == args.det_teacher_epochs else \
        train_det_teacher(args, data_root, teacher_config, name=f'{teacher}_half', epochs=half)
    # seed by seed: an interrupted study holds whole seeds, paired on both teachers
    jobs = [row.job(seed, osp.join(args.work_dir, f'study_{name}', teacher, f'{slug(row.name)}_seed{seed}'),
                    teacher=teacher, teacher_checkpoint=checkpoint, epochs=args.det_epochs, data_root=data_root,
                    test_steps=tuple(args.det_steps))
            for seed in args.det_seeds for teacher, (checkpoint, *_) in teachers.items() for row in args.det_rows]
    runs = run_recorded(jobs, run_det, osp.join(args.work_dir, f'study_{name}.jsonl'), args.jobs,
                        f'study {name}', key='bbox_map')
    for run in runs:  # the step curve in % like the mAP
        run['map_steps'] = {n: 100 * v for n, v in (run.get('map_by_steps') or {}).items()}
    scores = {k: 100 * v[1].get('coco/bbox_mAP', 0.0) for k, v in teachers.items()}
    table, summary = study_table(runs, scores, args.det_rows, key='bbox_map', label='bbox mAP',
                                 curve_key='map_steps', steps=tuple(args.det_steps))
    return dict(teachers={k: dict(checkpoint=v[0], bbox_mAP=scores[k]) for k, v in teachers.items()},
                runs=runs, summary=summary, table=table)


def det_study_report(script: str, argv: Optional[Sequence[str]], args: argparse.Namespace, teacher_config: str,
                     name: str, title: str, teachers: str, student: Optional[str] = None) -> dict:
    """A detection study's whole run (:func:`det_study` of ``teacher_config``
    and ``name``) and its report, headed ``title`` with the composed set,
    the seeds, the ``teachers`` (e.g. ``'RetinaNet R18'``: their epochs and
    bbox mAP) and the ``student``."""
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    out = reporting.provenance(script, argv)
    study = out[f'study_{name}'] = det_study(args, teacher_config, name)
    maps = ', '.join(f'{k} {v["bbox_mAP"]:.1f}' for k, v in study['teachers'].items())
    text = [f'{title}, composed set: {args.det_train} / {args.det_val} images, {args.det_epochs} epochs, seeds '
            f'{args.det_seeds}, two {teachers} teachers ({args.det_teacher_epochs} and '
            f'{max(1, args.det_teacher_epochs // 2)} epochs; bbox mAP {maps})'
            + (f', student {student}' if student else ''), '', study['table'], '']
    return reporting.finish(args, out, text, start)
