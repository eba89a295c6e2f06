"""What the benchmark scripts of this folder share.

* :class:`Row` (a table row: its config and overrides) and :class:`Job` (one
  training run: a row at one seed, teacher and size);
* the run builders of the two demo tasks: Fashion-MNIST classification
  (:func:`cls_config`, :func:`run_cls`, :func:`train_cls_teacher`) and the
  composed detection set (:func:`det_config`, :func:`run_det`,
  :func:`train_det_teacher`);
* one process-pool loop (:func:`run_jobs`: every run in a fresh process with
  its own torch thread count, or all in this process) and one recorded runner
  on top of it (:func:`run_recorded`: a JSON line per finished run, a rerun of
  the same command resumes);
* markdown tables (:func:`markdown_table`, :func:`study_table`) and the
  report every script ends with (:func:`write_report`, :func:`finish`);
* the command-line options the scripts have in common.

The scripts import it as a sibling module (``import common``): run as
``python tools/benchmarks/<name>.py``, their folder is on the module path.
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
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from mmengine.config import Config

    from fmkt_mm.experiment import Run

#: the repository
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: inference step counts at which a flow in the inference path is scored
INFERENCE_STEPS = (1, 2, 4, 8)
#: the efficacy, recipe and several-teacher scripts' folder: the teachers
#: trained there serve all of them
EFFICACY_DIR = osp.join('work_dirs', 'benchmark_efficacy')

Checkpoint = Union[None, str, List[str]]


@dataclass
class Row:
    """A row of a benchmark table: every seed and teacher runs it alike."""
    name: str
    config: str  # a file of the task's config folder
    flow: Optional[dict] = None  # overrides of ``distiller.flow``
    distiller: Optional[dict] = None  # overrides of the distiller (see :func:`override_distiller`)

    def job(self, seed: int, work_dir: str, **fields: Any) -> 'Job':
        """This row's :class:`Job` at ``seed``, written to ``work_dir``."""
        return Job(self.name, self.config, seed, work_dir, flow=self.flow, distiller=self.distiller, **fields)


@dataclass
class Job:
    """One training run."""
    row: str  # the table row it belongs to
    config: str  # a file of the task's config folder
    seed: int
    work_dir: str
    teacher: Optional[str] = None  # a study's teacher ('full', 'half'), recorded with the result
    teacher_checkpoint: Checkpoint = None  # one per teacher the config keeps
    flow: Optional[dict] = None  # overrides of ``distiller.flow``
    distiller: Optional[dict] = None  # overrides of the distiller (see :func:`override_distiller`)
    epochs: Optional[int] = None
    train_samples: Optional[int] = None  # Fashion-MNIST training images (None: the config's)
    test_samples: Optional[int] = None  # Fashion-MNIST test images (None: all 10,000)
    batch_size: Optional[int] = None  # Fashion-MNIST training batch (None: the config's)
    data_root: Optional[str] = None  # a composed set (detection, segmentation)
    test_steps: Tuple[int, ...] = INFERENCE_STEPS  # step counts a flow in the inference path is scored at
    threads: Optional[int] = 1  # torch threads of the run (None: torch's default)


def slug(name: str) -> str:
    """A row name as a folder name."""
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


# -- the runs -------------------------------------------------------------------------------


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
        # CocoMetric reports nothing when no box was predicted: 0 mAP, as for the rows
        by_steps = run.by_steps('test/flow/coco/bbox_mAP_steps')
        curve = {n: by_steps.get(n, 0.0) for n in job.test_steps}
    result = dict(row=job.row, seed=job.seed, metrics={k: float(v) for k, v in run.metrics.items()},
                  seconds=run.seconds, map_by_steps=curve, sec_per_iter=run.seconds / max(1, run.iters),
                  **footprint(run))
    for kind in ('bbox', 'segm'):
        result[f'{kind}_map'] = 100 * result['metrics'].get(f'coco/{kind}_mAP', 0.0)
    if job.teacher is not None:
        result['teacher'] = job.teacher
    return result


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


def det_study_args(doc: str, rows: Sequence[Row], report: str,
                   argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of a detection study over ``rows`` (the first, the
    baseline, always runs), its report named ``report``."""
    parser_ = parser(doc)
    add_det_sizes(parser_)
    add_study_rows(parser_, '--det-rows', rows, rows[0].name)
    add_det_steps(parser_)
    add_jobs(parser_)
    add_output(parser_, EFFICACY_DIR, report)
    add_quick(parser_)
    args = parser_.parse_args(argv)
    args.det_rows = study_rows(parser_, args, 'det_rows', rows)
    finish_output(args, report)
    return args


def det_study(args: argparse.Namespace, teacher_config: str = 'retinanet_r18_teacher.py', name: str = 'det') -> dict:
    """Every row of ``args.det_rows`` x teacher x seed, resumable
    (``study_{name}.jsonl``); two teachers of ``teacher_config`` (a file of
    configs/fashion_det), ``--det-teacher-epochs`` and half of them."""
    data_root = det_data(args.work_dir, args.det_train, args.det_val)
    teacher = 'det_teacher' if name == 'det' else f'{name}_teacher'
    teachers = {'full': train_det_teacher(args, data_root, teacher_config, name=teacher),
                'half': train_det_teacher(args, data_root, teacher_config, name=f'{teacher}_half',
                                          epochs=max(1, args.det_teacher_epochs // 2))}
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


# -- running many -----------------------------------------------------------------------------


def _run(run: Callable[[Job], dict], job: Job) -> dict:
    if job.threads is not None:
        import torch
        torch.set_num_threads(job.threads)
    return run(job)


def run_jobs(jobs: Sequence[Job], run: Callable[[Job], dict], workers: int = 1,
             on_result: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """``run(job)`` for every job, with ``job.threads`` torch threads; the
    results in the jobs' order, ``on_result`` called on each as it finishes.
    With ``workers`` > 1 each run has a fresh (spawned) process, so a
    result's ``peak_mib`` is that run's own; in this process (``workers`` 1)
    the peak is not the run's and is left out (None)."""
    results = {}

    def keep(index: int, result: dict) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    if workers > 1 and jobs:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context('spawn'),
                                 max_tasks_per_child=1) as pool:
            futures = {pool.submit(_run, run, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                keep(futures[future], future.result())
    else:
        for i, job in enumerate(jobs):
            result = _run(run, job)
            if 'peak_mib' in result:
                result['peak_mib'] = None
            keep(i, result)
    return [results[i] for i in range(len(jobs))]


def read_record(path: str) -> List[dict]:
    """The runs recorded at ``path`` (one JSON line per run; step counts as ints)."""
    if not osp.isfile(path):
        return []
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    for r in runs:
        for key in ('steps', 'map_by_steps'):
            if r.get(key):
                r[key] = {int(n): v for n, v in r[key].items()}
    return runs


def run_recorded(jobs: Sequence[Job], run: Callable[[Job], dict], record: str, workers: int = 1,
                 label: str = 'run', key: str = 'top1') -> List[dict]:
    """Every job not yet in ``record`` (a JSON line per finished run; a run
    is its ``(teacher, row, seed)``) through :func:`run_jobs`, each result
    appended to ``record`` as it finishes; returns every recorded run, the
    older ones first, so a rerun of the same command resumes where the last
    one stopped and repeats its tables."""
    results = read_record(record)
    done = {(r.get('teacher'), r['row'], r['seed']) for r in results}
    todo = [j for j in jobs if (j.teacher, j.row, j.seed) not in done]
    print(f'[{label}] {len(results)} runs recorded, {len(todo)} to run', flush=True)
    os.makedirs(osp.dirname(record) or '.', exist_ok=True)

    def keep(result: dict) -> None:
        results.append(result)
        with open(record, 'a') as f:
            f.write(json.dumps(result) + '\n')
        print(f'[{label}] {result.get("teacher") or ""} {result["row"]}, seed {result["seed"]}: '
              f'{result[key]:.2f}', flush=True)

    run_jobs(todo, run, workers, keep)
    return results


# -- tables ------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """``(mean, sample std)``; the std is NaN for a single value."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else float('nan')
    return mean, std


def fmt(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std``, or the mean alone when the std is NaN."""
    return f'{mean:.{digits}f}' if math.isnan(std) else f'{mean:.{digits}f} ± {std:.{digits}f}'


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table of ``rows`` (cells as they are, with ``str``)."""
    lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines)


def verdicts(runs: List[dict], baseline: str, key: str,
             rows: Optional[Sequence[str]] = None) -> Tuple[List[str], dict, List[str]]:
    """``(lines, {row: verdict}, winners)``: each row's paired differences to
    ``baseline`` with their 95 % t intervals, per teacher and pooled
    (:mod:`fmkt_mm.studies`), and the rows whose pooled interval lies above it."""
    from fmkt_mm import studies
    found = studies.summary(runs, baseline, key)
    winners = [name for name, verdict in found.items() if verdict == 'beats']
    lines = [f'Paired differences to {baseline} with their 95 % t intervals, per teacher and pooled '
             f'(fmkt_mm.studies):', '', studies.table(runs, baseline, key, rows), '',
             f'Rows whose pooled 95 % interval lies above {baseline}: {", ".join(winners) or "none"}.']
    return lines, found, winners


def paired(runs: List[dict], teacher: str, row: str, baseline: str, key: str = 'top1') -> List[Tuple[float, float]]:
    """Per seed (shared by both rows): ``(row score, baseline score)``."""
    by_seed = {r['seed']: r for r in runs if r['teacher'] == teacher and r['row'] == baseline}
    return [(r[key], by_seed[r['seed']][key]) for r in runs
            if r['teacher'] == teacher and r['row'] == row and r['seed'] in by_seed]


def study_table(runs: List[dict], teachers: Dict[str, float], rows: Sequence[Row], key: str = 'top1',
                label: str = 'top-1', curve_key: str = 'steps',
                steps: Sequence[int] = INFERENCE_STEPS) -> Tuple[str, dict]:
    """A recipe study's tables. Per teacher (``{name: its own score}``) and
    row: the score ``key`` (mean ± std over seeds), the paired difference to
    the baseline (the first row; mean ± std over seeds), the seeds won,
    whether the mean difference exceeds 2 standard deviations of the paired
    differences, the ensemble's score at each of ``steps`` inference steps
    (``curve_key``) and s / iter; then the verdicts (:func:`verdicts`)."""
    baseline = rows[0].name
    lines, summary = [], {}
    for teacher, teacher_score in teachers.items():
        lines += [f'Teacher {teacher!r} ({teacher_score:.2f} {label}):', '']
        cells = []
        for row in rows:
            name = row.name
            mine = [r for r in runs if r['teacher'] == teacher and r['row'] == name]
            if not mine:
                continue
            score = mean_std([r[key] for r in mine])
            diffs = [a - b for a, b in paired(runs, teacher, name, baseline, key)] if name != baseline else []
            diff = mean_std(diffs) if diffs else (float('nan'), float('nan'))
            beyond = len(diffs) > 1 and diff[0] > 2 * diff[1]
            curve = {n: statistics.fmean(r[curve_key][n] for r in mine) for n in steps
                     if all(r.get(curve_key) and n in r[curve_key] for r in mine)}
            summary.setdefault(name, {})[teacher] = dict(
                score=score, diff=diff, wins=sum(d > 0 for d in diffs), seeds=len(mine), beyond_2sd=beyond,
                curve=curve, sec_per_iter=statistics.fmean(r['sec_per_iter'] for r in mine))
            cells.append([name, fmt(*score), '-' if not diffs else f'{diff[0]:+.2f} ± {diff[1]:.2f}',
                          '-' if not diffs else f'{sum(d > 0 for d in diffs)}/{len(diffs)}',
                          '-' if not diffs else ('yes' if beyond else 'no'),
                          ' / '.join(f'{v:.2f}' for v in curve.values()) or '-',
                          f'{summary[name][teacher]["sec_per_iter"]:.3f}'])
        lines += [markdown_table(['row', label, f'minus {baseline} (paired)', 'seeds won', '> 2 sd',
                                  f'{label} at N={"/".join(map(str, steps))}', 's / iter'], cells), '']
    verdict_lines, found, winners = verdicts(runs, baseline, key)
    return '\n'.join(lines + verdict_lines), dict(rows=summary, winners=winners, verdicts=found)


# -- the command line and the report ---------------------------------------------------------


def parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser, described by the first line of its docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_output(parser: argparse.ArgumentParser, work_dir: str, report: Optional[str] = None,
               quick: bool = True) -> None:
    """``--work-dir`` (where the runs, teachers and records go) and, with a
    ``report`` name, ``--out`` (the markdown report; its JSON beside it)."""
    parser.add_argument('--work-dir', default=work_dir,
                        help=f'folder of the runs, teachers and records (default: {work_dir}'
                             + ('; --quick: its quick/ subfolder)' if quick else ')'))
    if report:
        parser.add_argument('--out', default=None,
                            help=f'the markdown report (default: WORK_DIR/{report}); its JSON beside it '
                                 '(.json)')


def add_jobs(parser: argparse.ArgumentParser) -> None:
    """``--jobs``: trainings at a time."""
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs in parallel, each in a fresh process with one torch thread')


def add_quick(parser: argparse.ArgumentParser) -> None:
    """``--quick``: a smoke run."""
    parser.add_argument('--quick', action='store_true', help='tiny sizes: checks the script runs')


def add_cls_sizes(parser: argparse.ArgumentParser) -> None:
    """The Fashion-MNIST runs: seeds, images, epochs, and the teachers'."""
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--train-samples', type=int, default=5000)
    parser.add_argument('--test-samples', type=int, default=None, help='default: all 10,000')
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--teacher-epochs', type=int, default=6)
    parser.add_argument('--teacher-samples', type=int, default=10000)


def add_det_sizes(parser: argparse.ArgumentParser, seeds: bool = True) -> None:
    """The composed-set detection runs: images, epochs, the teachers' and
    (``seeds``) the seeds."""
    parser.add_argument('--det-train', type=int, default=600, help='composed training images')
    parser.add_argument('--det-val', type=int, default=200, help='composed validation images')
    parser.add_argument('--det-teacher-epochs', type=int, default=10)
    parser.add_argument('--det-epochs', type=int, default=8)
    if seeds:
        parser.add_argument('--det-seeds', type=int, nargs='+', default=[0])


def add_det_steps(parser: argparse.ArgumentParser) -> None:
    """``--det-steps``: the step counts a detection flow in the inference path is scored at."""
    parser.add_argument('--det-steps', type=int, nargs='+', default=list(INFERENCE_STEPS),
                        help='inference step counts scored for the flow deploy mode (the last is the '
                             'table\'s mAP)')


#: ``--quick`` of the Fashion-MNIST and detection runs (what the arguments hold)
QUICK = dict(train_samples=64, teacher_samples=64, test_samples=64, epochs=1, teacher_epochs=1,
             det_train=16, det_val=8, det_teacher_epochs=1, det_epochs=1)


def shrink(args: argparse.Namespace) -> None:
    """``--quick``'s tiny sizes (:data:`QUICK`, the first seed) on the arguments the script has."""
    for name, value in QUICK.items():
        if hasattr(args, name):
            setattr(args, name, value)
    if hasattr(args, 'seeds'):
        args.seeds = args.seeds[:1]


def finish_output(args: argparse.Namespace, report: Optional[str] = None) -> None:
    """``--quick`` writes under ``WORK_DIR/quick``; ``--out`` defaults to
    ``WORK_DIR/<report>``."""
    if getattr(args, 'quick', False):
        args.work_dir = osp.join(args.work_dir, 'quick')
    if report and getattr(args, 'out', None) is None:
        args.out = osp.join(args.work_dir, report)


def add_study_rows(parser: argparse.ArgumentParser, flag: str, rows: Sequence[Row], always: str) -> None:
    """``flag`` (e.g. ``--rows``): the rows of a study to run, by exact name
    (``always``, the baseline, runs in any case)."""
    parser.add_argument(flag, nargs='+', metavar='NAME',
                        help=f'rows to run ({always} always), by exact name: '
                             + '; '.join(repr(r.name) for r in rows))


def study_rows(parser: argparse.ArgumentParser, args: argparse.Namespace, attr: str,
               rows: Sequence[Row]) -> List[Row]:
    """The rows a study runs: those named in ``args.<attr>``, the baseline
    always; with ``--quick`` the first row after the baseline unless named."""
    names = getattr(args, attr)
    if args.quick:
        shrink(args)
        names = names or [rows[1].name]
    return pick_rows(parser, rows, names, keep_first=True)


def pick_rows(parser: argparse.ArgumentParser, rows: Sequence[Row], names: Optional[Sequence[str]],
              keep_first: bool = False) -> List[Row]:
    """The ``rows`` named (all without names; the first, a baseline, always
    with ``keep_first``); an unknown name is a usage error listing the rows."""
    known = [r.name for r in rows]
    unknown = set(names or ()) - set(known)
    if unknown:
        parser.error(f'unknown rows {sorted(unknown)}; the rows are {known}')
    return [r for i, r in enumerate(rows) if not names or r.name in names or (keep_first and i == 0)]


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """How ``script`` (its ``__file__``) was called, from the repository."""
    name = osp.relpath(osp.abspath(script), ROOT)
    return shlex.join(['python', name] + list(sys.argv[1:] if argv is None else argv))


def provenance(script: str, argv: Optional[Sequence[str]]) -> dict:
    """Date, machine, torch and mmengine versions and the command line."""
    import mmengine
    import torch
    return dict(date=time.strftime('%Y-%m-%d'),
                machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
                torch=torch.__version__, mmengine=mmengine.__version__, command=command_line(script, argv))


def write_report(out: str, text: str, data: Optional[dict] = None) -> None:
    """The markdown ``text`` at ``out`` (and printed) and, with ``data``,
    its JSON beside it (``.json`` for ``.md``)."""
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f:
        f.write(text + '\n')
    if data is not None:
        with open(osp.splitext(out)[0] + '.json', 'w') as f:
            json.dump(data, f, indent=1)
    print('\n' + text, flush=True)


def finish(args: argparse.Namespace, out: dict, text: List[str], start: float) -> dict:
    """A script's report: ``text`` and a provenance line (``out`` from
    :func:`provenance`, given the minutes since ``start``) at ``--out``,
    ``out`` as its JSON."""
    out['minutes'] = (time.time() - start) / 60
    text = text + [f'{out["date"]}, {out["machine"]}, torch {out["torch"]}, total {out["minutes"]:.1f} min: '
                   f'`{out["command"]}`']
    write_report(args.out, '\n'.join(text), out)
    return out
