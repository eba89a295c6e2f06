"""Draw a distillation run's flow as a PNG: the per-step flow losses over
training, and the accuracy (or mAP) by the number of inference steps.

    python tools/plot_run.py WORK_DIR [--out PNG]

Reads every ``vis_data/scalars.json`` under WORK_DIR (MMEngine's
``LocalVisBackend``); writes ``WORK_DIR/flow_run.png`` by default. Per-level
detection terms (``flow_l0_step3``, ...) are summed over levels per step.
"""
import argparse
import glob
import json
import os.path as osp
import re
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

STEP_TERM = re.compile(r'^flow(?:_l\d+)?_step(?P<k>\d+)$')
BY_STEPS = re.compile(r'^(?:.*/)?flow/(?P<metric>.+)_steps(?P<n>\d+)$')


def read_scalars(work_dir):
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '**', 'vis_data', 'scalars.json'), recursive=True)):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir!r}: is it the work dir of '
                                f'a run with the LocalVisBackend?')
    return rows


def step_losses(rows):
    """``{k: ([iteration...], [loss of step k...])}`` over training."""
    curves = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for key, value in row.items():
            match = STEP_TERM.match(key)
            if match:
                curves[int(match['k'])][row['step']] += value
    return {k: (sorted(c), [c[i] for i in sorted(c)]) for k, c in sorted(curves.items())}


def metric_by_steps(rows):
    """``(metric name, {N: value})`` of the last evaluation that scored several step counts."""
    for row in reversed(rows):
        found = defaultdict(dict)
        for key, value in row.items():
            match = BY_STEPS.match(key)
            if match and isinstance(value, (int, float)):
                found[match['metric']][int(match['n'])] = value
        if found:
            metric = 'top1' if 'top1' in found else sorted(found, key=lambda m: ('mAP' not in m, m))[0]
            return metric, dict(sorted(found[metric].items()))
    return None, {}


def plot(work_dir, out=None):
    rows = read_scalars(work_dir)
    losses = step_losses(rows)
    metric, by_steps = metric_by_steps(rows)
    if not losses and not by_steps:
        raise ValueError(f'the scalar logs under {work_dir!r} hold no per-step flow terms '
                         f'(flow_step*) and no metric by steps (flow/*_steps*): not an FM-KT run?')
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (iters, values) in losses.items():
        left.plot(iters, values, label=f'step {k}')
    left.set(title='flow loss per step', xlabel='iteration', ylabel='loss')
    if losses:
        left.legend(fontsize='small', ncol=2)
    if by_steps:
        right.plot(list(by_steps), list(by_steps.values()), marker='o')
        right.set_xscale('log', base=2)
        right.set_xticks(list(by_steps), [str(n) for n in by_steps])
    else:
        right.text(0.5, 0.5, 'no evaluation by number of steps\n(FlowStepsHook with several counts)',
                   ha='center', va='center', transform=right.transAxes)
    right.set(title=f'{metric or "metric"} by inference steps', xlabel='flow steps N',
              ylabel=metric or '')
    fig.tight_layout()
    out = out or osp.join(work_dir, 'flow_run.png')
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out, losses, (metric, by_steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', help='PNG path (default: WORK_DIR/flow_run.png)')
    args = parser.parse_args()
    out, losses, (metric, by_steps) = plot(args.work_dir, args.out)
    print(f'wrote {out}: flow loss of {len(losses)} steps'
          + (f', {metric} by steps ' + ', '.join(f'N={n}: {v:.4g}' for n, v in by_steps.items())
             if by_steps else ''))


if __name__ == '__main__':
    main()
