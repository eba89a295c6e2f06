"""What FM-KT costs: training-iteration time, peak memory and inference time.

Side by side in one run, on random ImageNet-shaped / COCO-shaped batches
(the cost does not depend on the data):

* classification, ResNet-34 -> ResNet-18 at 224 px: (a) the student alone,
  (b) classic KD from the same teacher (teacher forward + student
  forward/backward: the floor of any teacher-student method), (c) FM-KT at
  N = 1, 2, 4, 8 with each meta-encoder, (d) FM-KT^Theta; inference of the
  student alone, of FM-KT's ensemble at each N and of the exported student;
* detection, RetinaNet R101 -> RetinaNet R50: (a) the student alone, (b)
  PKD on the four FPN levels (teacher backbone+neck forward + student
  forward/backward), (c) FM-KT (deploy mode 'flow') at N = 1, 2, 4,
  (d) FM-KT with training-only flows (deploy mode 'student').

Beside the times, every row counts what does not depend on the machine: the
aten operators dispatched by one training step (forward, losses, backward,
optimizer step; ``TorchDispatchMode``) and by one inference batch, and the
floating-point operations of one training step (``torch.utils.flop_counter``).
On a GPU a training step of these sizes is bound by operator launches, so the
operator ratio, not the FLOP ratio, predicts the time ratio there. The
optimizer is SGD with ``foreach=True`` on every device (a GPU's default; on a
CPU torch would otherwise update parameter by parameter), so the counts are
the same on every machine.

Every row is data (:class:`Method`: its name, label, the distiller it
builds, the flow and distiller overrides, who predicts), listed once in
:data:`METHODS`. Times are medians over ``--iters`` iterations after
``--warmup``; every configuration runs in a fresh process (``pool.run_jobs``,
one at a time), so the peak memory of one does not
leak into the next (CPU: peak resident memory above the process's footprint
after imports; GPU: ``torch.cuda.max_memory_allocated``). Prints markdown
tables and writes JSON::

    python tools/benchmarks/cost.py                         # CPU, about 15 min on 2 cores
    python tools/benchmarks/cost.py --device cuda --cls-batch 64 --det-batch 2
    python tools/benchmarks/cost.py --quick --in-process    # a smoke run (seconds)

``--count`` counts instead of timing (operators per training step and per
inference batch, GFLOP per training step), deterministic, in a minute or two;
the operator counts do not depend on the input size::

    python tools/benchmarks/cost.py --count

The tables go to ``--out`` (default ``work_dirs/benchmark_cost/results.md``,
``counts.md`` with ``--count``; ``--quick``: under ``quick/``), the
measurements as JSON beside them.
"""

import os
import os.path as osp
import platform
import resource
import statistics
import time
from functools import partial

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
    flow_levels,
    flow_width,
    input_size,
    make_batch,
    method,
    specs,
    training_step,
)

from fmkt_mm.studies import count_operators, operator_histogram

#: targets reported next to the measurements (not enforced)
TARGETS = dict(cls_train=1.25, det_train=1.15, memory=1.25)


# -- one configuration -------------------------------------------------------------------


def current_rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(spec, args, device):
    """``(model in train mode on device, exported plain student or None, a
    preprocessed training batch)`` of one configuration, seeded."""
    import torch
    torch.manual_seed(0)
    model, plain = build(*spec, args)
    model.to(device).train()
    size, batch = input_size(spec[0], args)
    return model, plain, model.data_preprocessor(make_batch(spec[0], batch, size), True)


def inference_runs(spec, model, plain, args, device) -> dict:
    """``{name: a no-grad call}`` of what a configuration deploys: the
    student alone, the flows' implicit ensemble at its N steps, the exported
    student. Detection: the network alone (backbone, neck, flows, head
    outputs); end-to-end ``predict`` would add NMS, whose cost depends on how
    many boxes the weights happen to score."""
    import torch
    task, name, steps, _ = spec
    model.eval()
    size, batch = input_size(task, args)
    test = model.data_preprocessor(make_batch(task, batch, size, seed=1), False)
    mode = 'tensor' if task == 'det' else 'predict'
    who = {}
    if method(task, name).predicts_with_flows():
        model.set_eval_steps(steps)
        who['ensemble'] = model
    elif name == 'student':
        who['student'] = model
    if plain is not None:
        who['exported student'] = plain.to(device).eval()

    def call(net):
        with torch.no_grad():
            return net(test['inputs'], test['data_samples'], mode=mode)
    return {key: partial(call, net) for key, net in who.items()}


def timed(fn, iters, warmup, sync):
    times = []
    for i in range(warmup + iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(spec, args):
    """Train/inference times (ms), operators, GFLOP and peak memory (MiB) of one configuration."""
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rss_after_imports = current_rss_mib()
    model, plain, data = prepare(spec, args, device)
    step, params = training_step(model)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train_ms = 1e3 * timed(partial(step, data), args.iters, args.warmup, sync)
    train_ops = count_operators(partial(step, data))
    train_gflop = step_gflop(model, data)
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib() - rss_after_imports
    runs = inference_runs(spec, model, plain, args, device)
    inference = {name: 1e3 * timed(run, args.iters, args.warmup, sync) for name, run in runs.items()}
    return dict(describe(spec, args), train_ms=train_ms, memory_mib=memory, inference_ms=inference,
                train_ops=train_ops, inference_ops={name: count_operators(run) for name, run in runs.items()},
                train_gflop=train_gflop, trainable_params=sum(p.numel() for p in params))


def describe(spec, args) -> dict:
    task, name, steps, encoder = spec
    return dict(task=task, method=name, steps=steps, encoder=encoder, width=flow_width(name, args),
                levels=flow_levels(name, args))


def step_gflop(model, data) -> float:
    """GFLOP of one forward, losses and backward (no optimizer update)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))
        loss.backward()
    for p in model.parameters():
        p.grad = None
    return counter.get_total_flops() / 1e9


def count(spec, args):
    """What one configuration dispatches and computes, machine-independent:
    operators of a training step and of an inference batch, GFLOP of a
    training step."""
    import torch
    model, plain, data = prepare(spec, args, torch.device('cpu'))
    step, _ = training_step(model)
    step(data)  # the first step builds caches (time tables, momentum buffers)
    by_name = operator_histogram(partial(step, data))
    result = dict(describe(spec, args), train_ops=sum(by_name.values()), train_ops_by_name=by_name,
                  train_gflop=step_gflop(model, data))
    runs = inference_runs(spec, model, plain, args, torch.device('cpu'))
    deployed = runs.get('ensemble') or runs.get('student') or runs.get('exported student')
    if deployed is not None:
        deployed()
        result['inference_ops'] = count_operators(deployed)
    return result


def det_shape(args) -> str:
    return f'{args.det_size}x{args.det_width}' if args.det_width else str(args.det_size)


def det_teacher_name(args) -> str:
    name = args.det_teacher.split('/')[-1]
    return 'RetinaNet R101' if args.det_teacher == DET_TEACHER else name.rsplit('.', 1)[0]


def det_student_name(args) -> str:
    return 'RetinaNet R50' if args.det_config == DET_CONFIG else \
        osp.splitext(osp.basename(args.det_config))[0] + ' (its student)'


def counts_table(results, args) -> str:
    lines = []
    for task, title in (('cls', f'Classification, {args.cls_size} px, batch {args.cls_batch}'),
                        ('det', f'Detection, {det_shape(args)} px, batch {args.det_batch}')):
        rows = [r for r in results if r['task'] == task]
        if not rows:
            continue
        base = next(r for r in rows if r['method'] == 'student')
        floor = next(r for r in rows if r['method'] in ('kd', 'pkd'))
        name = 'KD' if task == 'cls' else 'PKD'
        cells = []
        for r in rows:
            inference = r.get('inference_ops')
            cells.append([label(r), r['train_ops'], f'{r["train_ops"] / floor["train_ops"]:.2f}',
                          f'{r["train_gflop"]:.2f}', f'{r["train_gflop"] / floor["train_gflop"]:.2f}']
                         + (['-', '-'] if inference is None else
                            [inference, f'{inference / base["inference_ops"]:.2f}']))
        lines += [f'**{title}**: one training step (forward, losses, backward, SGD) and one inference batch', '',
                  study_tables.markdown_table(['training', 'operators / step', f'x {name}', 'GFLOP / step', f'x {name}',
                                         'operators / inference batch', 'x student'], cells), '',
                  f'Operators of a training step above {name}\'s, by aten operator (the largest differences):', '']
        lines += [f'- {label(r)}: {above_floor(r, floor)}' for r in rows if r is not floor and r is not base]
        lines.append('')
    return '\n'.join(lines)


def above_floor(row: dict, floor: dict, top: int = 10) -> str:
    """``row``'s training operators minus ``floor``'s, the ``top`` largest
    differences by aten operator first."""
    mine, theirs = row.get('train_ops_by_name') or {}, floor.get('train_ops_by_name') or {}
    diffs = sorted(((mine.get(k, 0) - theirs.get(k, 0), k) for k in {*mine, *theirs}),
                   key=lambda d: (-abs(d[0]), d[1]))
    shown = ', '.join(f'{k} {d:+d}' for d, k in diffs[:top] if d)
    return f'{row["train_ops"] - floor["train_ops"]:+d} in all' + (f' ({shown})' if shown else '')


# -- the table ------------------------------------------------------------------------------


def label(r):
    levels = r.get('levels')
    name = LABELS[r['method']].format(width=r.get('width'), levels=levels and ', '.join(map(str, levels)))
    if r['steps'] is not None:
        name += f' ({r["encoder"]}, N={r["steps"]})'
    return name


def tables(results, args):
    lines = []
    for task, title in (('cls', f'Classification: ResNet-34 -> ResNet-18, {args.cls_size} px, '
                                f'batch {args.cls_batch}'),
                        ('det', f'Detection: {det_teacher_name(args)} -> {det_student_name(args)}, '
                                f'{det_shape(args)} px, batch {args.det_batch}')):
        rows = [r for r in results if r['task'] == task]
        if not rows:
            continue
        base = next(r for r in rows if r['method'] == 'student')
        floor = next(r for r in rows if r['method'] in ('kd', 'pkd'))
        target = TARGETS['cls_train' if task == 'cls' else 'det_train']
        training = []
        for r in rows:
            time_ratio = r['train_ms'] / floor['train_ms']
            flop_ratio = r['train_gflop'] / floor['train_gflop']
            training.append([label(r), f'{r["train_ms"]:.1f}', f'{r["train_ms"] / base["train_ms"]:.2f}',
                             f'{time_ratio:.2f}', r['train_ops'], f'{r["train_ops"] / floor["train_ops"]:.2f}',
                             f'{r["train_gflop"]:.2f}', f'{flop_ratio:.2f}', f'{time_ratio - flop_ratio:+.2f}',
                             f'{r["memory_mib"]:.0f}', f'{r["memory_mib"] / floor["memory_mib"]:.2f}'])
        student_ms = base['inference_ms']['student']
        student_ops = base['inference_ops']['student']
        inference = []
        for r in rows:
            for name, ms in r['inference_ms'].items():
                who = 'student alone' if name == 'student' else f'{label(r)}, implicit ensemble'
                if name == 'exported student':
                    who = f'exported student of {label(r)}'
                ops = r['inference_ops'][name]
                inference.append([who, f'{ms:.1f}', f'{ms / student_ms:.2f}', ops, f'{ops / student_ops:.2f}'])
        what = 'network forward, no NMS' if task == 'det' else 'predict'
        lines += [f'**{title}** (target: FM-KT at most {target:.2f}x the '
                  f'{"KD" if task == "cls" else "PKD"} step, memory at most {TARGETS["memory"]:.2f}x)', '',
                  study_tables.markdown_table(['training', 'ms / iter', 'x student', 'x KD floor', 'operators / step',
                                         'ops x KD floor', 'GFLOP / step', 'FLOP x KD floor',
                                         'time x floor - FLOP x floor', 'peak memory (MiB)', 'memory x KD floor'],
                                        training), '',
                  study_tables.markdown_table([f'inference ({what})', 'ms / batch', 'x student', 'operators / batch',
                                         'ops x student'], inference), '']
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--task', choices=['cls', 'det', 'all'], default='all')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (CPU)')
    parser.add_argument('--cls-batch', type=int, default=8)
    parser.add_argument('--cls-size', type=int, default=224)
    parser.add_argument('--det-batch', type=int, default=1)
    parser.add_argument('--det-width', type=int, default=None,
                        help='detection image width (default: --det-size, square); COCO: '
                             '--det-size 800 --det-width 1333')
    parser.add_argument('--det-methods', nargs='+', metavar='METHOD',
                        help='detection rows to measure besides student and pkd (default: all): '
                             + ' '.join(m.name for m in METHODS['det'][2:]))
    parser.add_argument('--det-flow-width', type=int, default=64,
                        help='the reduced width of the fmkt_reduced rows (flow=dict(width=...))')
    parser.add_argument('--det-flow-levels', type=int, nargs='+', default=[0, 1, 2, 3],
                        help='the neck levels of the fmkt_levels rows (distiller levels=...), e.g. 0 1 2 3: '
                             'Faster R-CNN\'s P2-P5')
    parser.add_argument('--det-config', default=DET_CONFIG,
                        help='the FM-KT detection config whose student (and flows) are measured, e.g. '
                             'configs/mmdet/fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py')
    parser.add_argument('--det-teacher', default=DET_TEACHER,
                        help='the detection teacher\'s config (random weights), e.g. '
                             'mmdet::retinanet/retinanet_x101-64x4d_fpn_2x_coco.py')
    parser.add_argument('--det-size', type=int, default=512,
                        help='square input side (COCO trains at 1333x800; 512 keeps a CPU run short)')
    parser.add_argument('--cls-steps', type=int, nargs='+', help='default: 1 2 4 8')
    parser.add_argument('--det-steps', type=int, nargs='+', help='default: 1 2 4')
    parser.add_argument('--encoders', nargs='+', help='classification; default: mlp conv transformer')
    parser.add_argument('--det-encoders', nargs='+', default=['mlp', 'conv'],
                        help='detection (the first also for the training-only flows); default: mlp '
                             '(the COCO configs\' recipe) conv (the authors\' encoder)')
    parser.add_argument('--iters', type=int, default=6)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--out', default=None,
                        help='the markdown tables (default: work_dirs/benchmark_cost/results.md, counts.md '
                             'with --count; --quick: under quick/); the measurements as JSON beside them')
    parser.add_argument('--in-process', action='store_true',
                        help='measure every configuration in this process (faster; memory '
                             'figures then include what earlier configurations left behind)')
    parser.add_argument('--count', '--flops', dest='count', action='store_true',
                        help='count instead of timing: operators dispatched per training step and '
                             'per inference batch, FLOPs per training step (in this process; '
                             'deterministic)')
    options.add_quick(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.cls_size, args.cls_batch, args.det_size, args.det_batch = 64, 2, 128, 1
        args.cls_steps = args.cls_steps or [1, 2]
        args.det_steps = args.det_steps or [1]
        args.encoders = args.encoders or ['mlp']
        args.iters, args.warmup = 1, 0
    args.cls_steps = args.cls_steps or [1, 2, 4, 8]
    args.det_steps = args.det_steps or [1, 2, 4]
    args.encoders = args.encoders or ['mlp', 'conv', 'transformer']
    if args.out is None:
        args.out = osp.join('work_dirs', 'benchmark_cost', 'quick' if args.quick else '',
                            'counts.md' if args.count else 'results.md')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.count:
        return main_counts(args, argv)
    jobs = [ConfigJob(spec, args) for spec in specs(args)]

    def show(result):
        print(f'{result["task"]} {label(result)}: {result["train_ms"]:.1f} ms/iter, '
              f'{result["memory_mib"]:.0f} MiB', flush=True)
    # each configuration in a fresh process, one at a time (its peak memory is its own)
    results = pool.run_jobs(jobs, measure_job, on_result=show, isolate=not args.in_process)
    import torch
    header = (f'{time.strftime("%Y-%m-%d")}, {args.device} ({platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} cores, torch threads {args.threads or torch.get_num_threads()}), '
              f'torch {torch.__version__}, medians of {args.iters} iterations after {args.warmup} '
              f'warm-up: `{reporting.command_line(__file__, argv)}`')
    write_report(args.out, header, tables(results, args), results)
    return results


def measure_job(job: ConfigJob) -> dict:
    return measure(job.spec, job.args)


def main_counts(args, argv):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for spec in specs(args):
        results.append(count(spec, args))
        print(f'{spec[0]} {label(results[-1])}: {results[-1]["train_ops"]} operators, '
              f'{results[-1]["train_gflop"]:.2f} GFLOP', flush=True)
    header = (f'{time.strftime("%Y-%m-%d")}, torch {torch.__version__}, TorchDispatchMode and '
              f'torch.utils.flop_counter: `{reporting.command_line(__file__, argv)}`')
    write_report(args.out, header, counts_table(results, args), results)
    return results


def write_report(out: str, header: str, tables_text: str, results) -> None:
    """The tables under ``header`` at ``out`` (and printed), the results as JSON beside them."""
    reporting.write_report(out, (header + '\n\n' + tables_text).rstrip('\n'), dict(header=header, results=results))


if __name__ == '__main__':
    main()
