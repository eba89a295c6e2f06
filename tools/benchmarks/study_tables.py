"""Markdown tables: numbers as ``mean ± std``, a study's tables per
teacher and row, and its verdicts from :mod:`fmkt_mm.studies` (the paired
95 % intervals)."""
import math
import statistics
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from common import INFERENCE_STEPS, Row


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


def study_table(runs: List[dict], teachers: Dict[str, float], rows: Sequence[Row], key: str = 'top1',
                label: str = 'top-1', curve_key: str = 'steps',
                steps: Sequence[int] = INFERENCE_STEPS) -> Tuple[str, dict]:
    """A recipe study's tables. Per teacher (``{name: its own score}``) and
    row: the score ``key`` (mean ± std over seeds), the paired difference to
    the baseline (the first row; mean ± std over seeds), the seeds won,
    whether the mean difference exceeds 2 standard deviations of the paired
    differences, the ensemble's score at each of ``steps`` inference steps
    (``curve_key``) and s / iter; then the verdicts (:func:`verdicts`)."""
    from fmkt_mm import studies
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
            diffs = studies.paired_diffs(runs, name, baseline, key, teacher) if name != baseline else []
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
