"""Paired verdicts of a recipe study by 95 % confidence intervals
(:mod:`fmkt_mm.studies`), from its recorded runs.

    python tools/study_stats.py docs/benchmarks/study_det.jsonl --baseline PKD --key bbox_map
    python tools/study_stats.py docs/benchmarks/study_cls_8epochs.jsonl --baseline DIST --key top1
    python tools/study_stats.py docs/benchmarks/study_seg.jsonl --baseline CWD --key miou

Records of the teachers' own trainings (no ``teacher``) are left out.
"""
import argparse
import json

from fmkt_mm.studies import table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('records', help='a study_*.jsonl')
    parser.add_argument('--baseline', required=True, help='the baseline row, e.g. PKD or DIST')
    parser.add_argument('--key', required=True, help='the score: bbox_map, top1, miou, ...')
    args = parser.parse_args(argv)
    with open(args.records) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r.get('teacher') is not None]  # not a teacher's own training
    print(table(records, args.baseline, args.key))


if __name__ == '__main__':
    main()
