"""Paired comparisons of study runs, and what a step costs in operators.

A study (``tools/benchmarks/recipes_det.py``, ``tools/benchmarks/seg.py``, ...)
records one line per run: ``row``, ``teacher``, ``seed`` and the score. Each
run is paired with the baseline's run of the same teacher and seed. Per row,
per teacher and pooled over teachers, :func:`table` gives the mean paired
difference with its 95 % t interval (``mean ± t_{0.975, n-1} * sd / sqrt(n)``)
and the seeds won. A row **beats** the baseline when its pooled interval lies
above zero, **loses** when it lies below, and **ties** otherwise. (Pooling
treats the teachers' pairs as one sample: the question is whether the recipe
helps across teachers, not for one.)
"""
import math
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

#: t_{0.975, df} for df = 1..30 (beyond: the normal 1.96 within 0.1 %)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return float('nan')
    return _T975[df - 1] if df <= len(_T975) else 1.96


def interval(diffs: Sequence[float]) -> Tuple[float, float]:
    """``(mean, half-width)`` of the 95 % t interval of the mean of ``diffs``."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, float('nan')
    return mean, t975(n - 1) * statistics.stdev(diffs) / math.sqrt(n)


def paired_diffs(records: List[dict], row: str, baseline: str, key: str,
                 teacher: Optional[str] = None) -> List[float]:
    """Row minus baseline, per (teacher, seed) both ran (one teacher, or all)."""
    base = {(r['teacher'], r['seed']): r[key] for r in records if r['row'] == baseline}
    return [r[key] - base[(r['teacher'], r['seed'])] for r in records
            if r['row'] == row and (teacher is None or r['teacher'] == teacher)
            and (r['teacher'], r['seed']) in base]


def verdict(diffs: Sequence[float]) -> str:
    mean, half = interval(diffs)
    if math.isnan(half):
        return 'too few pairs'
    return 'beats' if mean - half > 0 else 'loses' if mean + half < 0 else 'ties'


def cell(diffs: Sequence[float]) -> str:
    if not diffs:
        return '-'
    mean, half = interval(diffs)
    wins = sum(d > 0 for d in diffs)
    return f'{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] ({wins}/{len(diffs)})'


def table(records: List[dict], baseline: str, key: str, rows: Optional[Sequence[str]] = None) -> str:
    """The markdown verdict table of ``records`` against ``baseline``."""
    teachers = sorted({r['teacher'] for r in records})
    names = list(dict.fromkeys(r['row'] for r in records if r['row'] != baseline))
    names = [n for n in names if rows is None or n in rows]
    head = ' | '.join(f'teacher {t!r}: mean [95 % CI] (seeds won)' for t in teachers)
    lines = [f'| row (minus {baseline}, paired) | {head} | pooled | verdict |',
             '|---' * (len(teachers) + 3) + '|']
    for name in names:
        per = [cell(paired_diffs(records, name, baseline, key, t)) for t in teachers]
        pooled = paired_diffs(records, name, baseline, key)
        lines.append(f'| {name} | ' + ' | '.join(per) + f' | {cell(pooled)} | {verdict(pooled)} |')
    return '\n'.join(lines)


def summary(records: List[dict], baseline: str, key: str) -> Dict[str, str]:
    """``{row: verdict}`` over the pooled pairs."""
    names = dict.fromkeys(r['row'] for r in records if r['row'] != baseline)
    return {n: verdict(paired_diffs(records, n, baseline, key)) for n in names}


def operator_histogram(fn: Callable[[], Any]) -> Dict[str, int]:
    """``{aten operator: calls}`` of one call of ``fn`` (views and in-place
    updates included: each is one trip through the dispatcher)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode
    calls: Dict[str, int] = Counter()

    class Histogram(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with Histogram():
        fn()
    return dict(calls)


def count_operators(fn: Callable[[], Any]) -> int:
    """aten operators dispatched by one call of ``fn`` (:func:`operator_histogram`'s total)."""
    return sum(operator_histogram(fn).values())
