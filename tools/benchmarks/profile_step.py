"""Where one training step's memory and time go, component by component.

One configuration of the cost tables (``cost_rows``: ``--method``, ``--steps``,
``--encoder``; the detection rows at ``--det-size`` x ``--det-width``) runs a
warm-up step, then one profiled step. Two tables:

* **what backward keeps**, per component (``student.backbone``,
  ``student.neck``, ``flows.0``, ..., ``teacher.*``, and ``distiller`` for
  what the distiller itself computes between modules: the metric losses,
  the ensemble): the bytes of the activations autograd saves for backward
  (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once,
  by the component whose forward was running when it was saved; weights are
  not counted). This is
  the bulk of a step's peak and does not depend on the machine;
* **where the time goes**: the operators with the most self time over the
  forward, losses and backward (``torch.profiler``), with their calls and the
  memory they allocate (machine-dependent; read the ratios).

Compare two rows side by side in one run with ``--method`` (each in a fresh
process)::

    python tools/benchmarks/profile_step.py --det-config \\
        configs/mmdet/fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py \\
        --det-teacher mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py \\
        --det-size 800 --det-width 1333 --det-batch 2 --method pkd fmkt --steps 4
    python tools/benchmarks/profile_step.py --quick        # a smoke run
"""
import os.path as osp
import time
from functools import partial
from typing import Dict, List

import options
import pool
import reporting
import study_tables
from cost_rows import (
    DET_CONFIG,
    DET_TEACHER,
    LABELS,
    METHODS,
    ConfigJob,
    build,
    input_size,
    make_batch,
    method,
    training_step,
)


def component(name: str) -> str:
    """The component a module belongs to: its first two name parts
    (``student.backbone``, ``flows.3``, ``teacher.neck``)."""
    return '.'.join(name.split('.')[:2]) if name else 'distiller'


def saved_by_component(model, step) -> Dict[str, int]:
    """Bytes autograd saves for backward during ``step()``, by the component
    whose forward was running (each storage counted once; the model's own
    parameters and buffers not at all)."""
    import torch
    stack: List[str] = ['distiller']
    handles = []

    def enter(part, *_) -> None:  # hooks return None: they leave the inputs and outputs alone
        stack.append(part)

    def leave(*_) -> None:
        stack.pop()

    for name, module in model.named_modules():
        if name:  # every module, so a flow's encoder counts for its flow even when the flow's forward is not called
            handles.append(module.register_forward_pre_hook(partial(enter, component(name))))
            handles.append(module.register_forward_hook(leave, always_call=True))  # a tapped teacher stops by raising
    # the weights are the model's own memory, kept whatever the step does: not counted
    seen = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    totals: Dict[str, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and storage.nbytes():
            seen.add(key)
            totals[stack[-1]] = totals.get(stack[-1], 0) + storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            step()
    finally:
        for handle in handles:
            handle.remove()
    return totals


def profile(spec, args) -> dict:
    """The saved bytes by component and the top operators of one step of ``spec``."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    task, name, steps, encoder = spec
    torch.manual_seed(0)
    model, _ = build(task, name, steps, encoder, args)
    model.train()
    size, batch = input_size(task, args)
    data = model.data_preprocessor(make_batch(task, batch, size), True)

    step = partial(training_step(model)[0], data)
    step()  # warm-up: caches, lazily built parts, momentum buffers
    saved = saved_by_component(model, step)
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    seconds = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]
    ops = [dict(op=e.key, calls=e.count, self_ms=e.self_cpu_time_total / 1e3,
                self_mib=e.self_cpu_memory_usage / 2**20) for e in events]
    return dict(task=task, method=name, steps=steps, encoder=encoder, saved=saved, ops=ops,
                profiled_seconds=seconds)


def profile_job(job: ConfigJob) -> dict:
    return profile(job.spec, job.args)


def tables(results: List[dict]) -> str:
    names = [f'{LABELS[r["method"]]}' + (f' (N={r["steps"]})' if r['steps'] else '') for r in results]
    parts = sorted({p for r in results for p in r['saved']}, key=lambda p: -max(r['saved'].get(p, 0) for r in results))
    cells = [[p] + [f'{r["saved"].get(p, 0) / 2**20:.0f}' for r in results] for p in parts]
    cells.append(['**total**'] + [f'**{sum(r["saved"].values()) / 2**20:.0f}**' for r in results])
    lines = ['Saved for backward (MiB), by component:', '', study_tables.markdown_table(['component'] + names, cells)]
    for r, name in zip(results, names):
        lines += ['', f'{name}: the operators with the most self time (one step, '
                      f'{r["profiled_seconds"]:.1f} s under the profiler):', '',
                  study_tables.markdown_table(['operator', 'calls', 'self ms', 'self MiB allocated'],
                                              [[o['op'], o['calls'], f'{o["self_ms"]:.0f}', f'{o["self_mib"]:.0f}']
                                               for o in r['ops']])]
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--method', nargs='+', default=['pkd', 'fmkt'], help='cost rows (cost_rows.METHODS)')
    parser.add_argument('--steps', type=int, default=4, help='flow steps of the flow rows')
    parser.add_argument('--encoder', default='mlp')
    parser.add_argument('--det-config', default=DET_CONFIG)
    parser.add_argument('--det-teacher', default=DET_TEACHER)
    parser.add_argument('--det-size', type=int, default=800)
    parser.add_argument('--det-width', type=int, default=1333)
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--det-flow-width', type=int, default=64)
    parser.add_argument('--top', type=int, default=12, help='operators listed per row')
    parser.add_argument('--out', default=None, help='the markdown tables (default: '
                        'work_dirs/benchmark_cost/profile.md); the measurements as JSON beside them')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    args.task = 'det'
    if args.quick:
        args.det_size, args.det_width, args.det_batch, args.steps, args.top = 128, 128, 1, 1, 5
    args.out = args.out or osp.join('work_dirs', 'benchmark_cost', 'quick' if args.quick else '', 'profile.md')
    unknown = [m for m in args.method if m not in {row.name for row in METHODS['det']}]
    if unknown:
        parser.error(f'unknown detection rows {unknown}; see tools/benchmarks/cost_rows.py')
    return args


def main(argv=None):
    args = parse_args(argv)
    flows = {m: method('det', m).kind == 'flow' for m in args.method}
    specs = [('det', m, args.steps if flows[m] else None, args.encoder if flows[m] else None) for m in args.method]
    # each row in a fresh process, one at a time: nothing of one leaks into the next
    results = pool.run_jobs([ConfigJob(spec, args) for spec in specs], profile_job, isolate=True)
    import torch
    header = (f'{time.strftime("%Y-%m-%d")}, torch {torch.__version__}, {osp.basename(args.det_config)}, '
              f'{args.det_size}x{args.det_width}, batch {args.det_batch}: '
              f'`{reporting.command_line(__file__, argv)}`')
    reporting.write_report(args.out, header + '\n\n' + tables(results), dict(header=header, results=results))
    return results


if __name__ == '__main__':
    main()
