"""Paired 95 % t intervals of the recipe studies (fmkt_mm.studies)."""
import math
import os.path as osp
import statistics

import pytest

from fmkt_mm import studies as study_stats
from tiny_runs import ROOT


def test_the_interval_is_the_t_interval_written_out():
    diffs = [1.0, 2.0, 0.5, 1.5, 3.0]
    mean, half = study_stats.interval(diffs)
    assert mean == pytest.approx(1.6)
    # t_{0.975, 4} = 2.776; sd = 0.9618
    assert half == pytest.approx(2.776 * statistics.stdev(diffs) / math.sqrt(5))
    assert study_stats.verdict(diffs) == 'beats'
    assert study_stats.verdict([-d for d in diffs]) == 'loses'
    assert study_stats.verdict([1.0, -1.2, 0.3]) == 'ties'
    assert study_stats.verdict([1.0]) == 'too few pairs'


def test_pairs_are_made_per_teacher_and_seed_and_pooled():
    records = [dict(row=row, teacher=t, seed=s, score=base + (1.0 if row == 'A' else 0.0) + 0.1 * s)
               for row in ('base', 'A') for t, base in (('full', 30.0), ('half', 20.0)) for s in range(3)]
    records.append(dict(row='A', teacher='full', seed=9, score=99.0))  # no baseline run: not paired
    assert study_stats.paired_diffs(records, 'A', 'base', 'score', 'full') == pytest.approx([1.0] * 3)
    assert study_stats.paired_diffs(records, 'A', 'base', 'score') == pytest.approx([1.0] * 6)
    table = study_stats.table(records, 'base', 'score')
    assert '| A | +1.00 [+1.00, +1.00] (3/3) | +1.00 [+1.00, +1.00] (3/3) | +1.00 [+1.00, +1.00] (6/6) | beats |' \
        in table


def test_the_recorded_detection_study_ties_pkd():
    import json
    with open(osp.join(ROOT, 'docs', 'benchmarks', 'study_det.jsonl')) as f:
        records = [json.loads(line) for line in f]
    verdicts = study_stats.summary(records, 'PKD', 'bbox_map')
    assert verdicts['FM-KT deploy student + PKD on the raw levels (default)'] == 'ties'
    assert verdicts['student alone'] == 'loses'
