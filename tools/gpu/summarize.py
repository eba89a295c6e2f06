"""The tables of a device check: per training run, its bbox mAP and median
s/iter (from MMEngine's scalar logs), then the cost tables the benchmarks
wrote. Markdown on stdout.

    python tools/gpu/summarize.py WORK_DIR OUT_DIR
"""
import glob
import json
import os.path as osp
import statistics
import sys


def scalars(work_dir: str):
    """Every record of the newest ``vis_data/scalars.json`` under ``work_dir``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def row(name: str, records) -> str:
    train = [r for r in records if 'loss' in r and 'time' in r]
    times = [r['time'] for r in train[1:]] or [r['time'] for r in train]
    maps = [r['coco/bbox_mAP'] for r in records if 'coco/bbox_mAP' in r]
    finite = all(r['loss'] == r['loss'] and abs(r['loss']) != float('inf') for r in train)
    s_iter = f'{statistics.median(times):.4f}' if times else '-'
    bbox = f'{maps[-1]:.3f}' if maps else '-'
    return f'| {name} | {len(train)} | {s_iter} | {bbox} | {"yes" if finite else "NO"} |'


def main(work: str, out: str) -> None:
    print('\n## Training runs\n')
    print('| run | logged iterations | median s/iter | bbox mAP | losses finite |')
    print('|---|---|---|---|---|')
    for name in ('teacher', 'pkd_retinanet_r18_to_r18w16', 'fmkt_retinanet_r18_to_r18w16_deploy-student',
                 'amp', 'ddp', 'compile'):
        records = scalars(osp.join(work, name))
        print(row(name, records) if records else f'| {name} | - | - | - | (no log) |')
    for path in sorted(glob.glob(osp.join(out, 'cost_*', '**', 'results.md'), recursive=True)):
        print(f'\n## {osp.relpath(osp.dirname(path), out)}\n')
        with open(path) as f:
            print(f.read())


if __name__ == '__main__':
    main(*sys.argv[1:3])
