"""Running many: one process-pool loop (:func:`run_jobs`: every run in a
fresh process with its own torch thread count, or all in this process) and
one recorded runner on top of it (:func:`run_recorded`: a JSON line per
finished run, a rerun of the same command resumes)."""
import json
import os
import os.path as osp
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from typing import Callable, List, Optional, Sequence

from common import Job


def _run(run: Callable[[Job], dict], job: Job) -> dict:
    if job.threads is not None:
        import torch
        torch.set_num_threads(job.threads)
    return run(job)


def run_jobs(jobs: Sequence[Job], run: Callable[[Job], dict], workers: int = 1,
             on_result: Optional[Callable[[dict], None]] = None, isolate: bool = False) -> List[dict]:
    """``run(job)`` for every job, with ``job.threads`` torch threads; the
    results in the jobs' order, ``on_result`` called on each as it finishes.
    With ``workers`` > 1, or ``isolate`` (one at a time), each run has a
    fresh (spawned) process, so a result's ``peak_mib`` is that run's own;
    in this process the peak is not the run's and is left out (None)."""
    results = {}

    def keep(index: int, result: dict) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    if (workers > 1 or isolate) and jobs:
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
    # jobs that differ only in their teacher's label (a quick study's half teacher is the full
    # one) are one run: it runs once and is recorded under each label
    first, same = {}, {}
    for job in todo:
        run_key = repr(replace(job, teacher=None, work_dir=''))
        if run_key in first:
            same.setdefault((first[run_key].teacher, job.row, job.seed), []).append(job.teacher)
        else:
            first[run_key] = job

    def keep(result: dict) -> None:
        for teacher in [result.get('teacher')] + same.get((result.get('teacher'), result['row'], result['seed']), []):
            labelled = dict(result, teacher=teacher)
            results.append(labelled)
            with open(record, 'a') as f:
                f.write(json.dumps(labelled) + '\n')
            print(f'[{label}] {teacher or ""} {result["row"]}, seed {result["seed"]}: {result[key]:.2f}', flush=True)

    run_jobs(list(first.values()), run, workers, keep)
    return results
