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

Times are medians over ``--iters`` iterations after ``--warmup``; every
configuration runs in its own process, so the peak memory of one does not
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
import argparse
import copy
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time

import common
from common import ROOT

from fmkt_mm.studies import count_operators

CLS_CONFIG = osp.join(ROOT, 'configs', 'mmpretrain', 'fmkt_resnet34_resnet18_8xb32_in1k.py')
DET_CONFIG = osp.join(ROOT, 'configs', 'mmdet', 'fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py')
DET_TEACHER = 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'

#: the methods whose flows predict (deploy mode 'flow')
FLOW_METHODS = ('fmkt', 'fmkt_recompute', 'fmkt_batched', 'fmkt_batched_recompute', 'fmkt_reduced',
                'fmkt_reduced_batched')
#: the methods whose flows run on all levels in one encoder call per step
BATCHED_METHODS = ('fmkt_batched', 'fmkt_batched_recompute', 'fmkt_reduced_batched')
#: targets reported next to the measurements (not enforced)
TARGETS = dict(cls_train=1.25, det_train=1.15, memory=1.25)


def specs(args):
    """Every configuration measured: ``(task, method, steps, encoder)``."""
    out = []
    if args.task in ('cls', 'all'):
        out += [('cls', 'student', None, None), ('cls', 'kd', None, None), ('cls', 'dist', None, None)]
        for encoder in args.encoders:
            for n in args.cls_steps:
                out.append(('cls', 'fmkt', n, encoder))
        out.append(('cls', 'fmkt_theta', max(args.cls_steps), 'mlp'))
    if args.task in ('det', 'all'):
        out += [('det', 'student', None, None), ('det', 'pkd', None, None), ('det', 'mgd', None, None)]
        for encoder in args.det_encoders:
            for n in args.det_steps:
                out.append(('det', 'fmkt', n, encoder))
        out.append(('det', 'fmkt_student', max(args.det_steps), args.det_encoders[0]))
        out.append(('det', 'fmkt_recompute', max(args.det_steps), args.det_encoders[0]))
        out.append(('det', 'fmkt_batched', max(args.det_steps), 'mlp'))
        out.append(('det', 'fmkt_batched_recompute', max(args.det_steps), 'mlp'))
        out.append(('det', 'fmkt_reduced', max(args.det_steps), args.det_encoders[0]))
        out.append(('det', 'fmkt_reduced_batched', max(args.det_steps), 'mlp'))
    if args.det_methods:
        keep = set(args.det_methods) | {'student', 'pkd'}  # the references of the ratios
        out = [spec for spec in out if spec[0] != 'det' or spec[1] in keep]
    return out


# -- one configuration -------------------------------------------------------------------


def current_rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(task, method, steps, encoder, args):
    """``(model, plain_student_or_None)`` for one configuration."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from fmkt_mm.apis import apply_distiller
    from fmkt_mm.distill.teacher import build_model
    from fmkt_mm.registry import MODELS
    cfg = apply_distiller(Config.fromfile(CLS_CONFIG if task == 'cls' else args.det_config))
    scope = cfg.default_scope
    distiller = copy.deepcopy(cfg.model)
    student = distiller['student']
    if task == 'det':
        student['backbone']['init_cfg'] = None  # no download: random weights cost the same
    student.setdefault('data_preprocessor', distiller.get('data_preprocessor'))
    teacher = dict(config=distiller['teacher']['config'] if task == 'cls' or args.det_teacher is None
                   else args.det_teacher,
                   checkpoint=None, allow_random_init=True)
    size, _ = input_size(task, args)
    with DefaultScope.overwrite_default_scope(scope):
        if method == 'student':
            return build_model(student, scope), None
        common = dict(student=student, teacher=teacher,
                      data_preprocessor=distiller.get('data_preprocessor'))
        if method in ('kd', 'dist'):
            loss = dict(type='fmkt_mm.KDLoss', tau=4.0) if method == 'kd' else \
                copy.deepcopy(distiller['flow']['loss'])  # FM-KT's own metric loss, applied once
            model = MODELS.build(dict(type='fmkt_mm.LogitDistiller', loss=loss, **common))
        elif method in ('pkd', 'mgd'):
            loss = dict(type='fmkt_mm.PKDLoss') if method == 'pkd' else \
                dict(type='fmkt_mm.MGDLoss', alpha_mgd=2e-5, lambda_mgd=0.65)
            model = MODELS.build(dict(type='fmkt_mm.FeatureDistiller', loss=loss,
                                      level_weights=10.0 if method == 'pkd' else 1.0,
                                      dummy_input_shape=input_shape(size), **common))
        else:
            distiller.update(common)
            distiller['dummy_input_shape'] = input_shape(size)
            flow = dict(distiller['flow'])
            configured = dict(flow.get('encoder') or {})
            # the configured encoder (with its width) when its type is asked for, else the type's defaults
            flow.update(num_steps=steps,
                        encoder=configured if configured.get('type') == encoder else dict(type=encoder))
            flow['recompute'] = method in ('fmkt_recompute', 'fmkt_batched_recompute')
            if method in BATCHED_METHODS:  # one shared encoder call per step
                flow.update(shared_encoder=True, batch_levels=True, condition=dict(type='level'))
            if flow_width(method, args) is not None:  # the flows on a channel-reduced projection
                flow['width'] = flow_width(method, args)
            distiller['flow'] = flow
            flow_mode = method in FLOW_METHODS
            distiller['deploy_mode'] = 'flow' if flow_mode else 'student'
            if task != 'cls' and not flow_mode:
                distiller['ema_momentum'] = None
            model = MODELS.build(distiller)
        plain = None
        if model.deploy_mode == 'student':  # the exported student: a plain model
            plain = build_model(student, scope)
            plain.load_state_dict(model.student_state_dict(), strict=True)
        return model, plain


def flow_width(method, args):
    """The flows' reduced width of a configuration (None: all channels)."""
    return args.det_flow_width if method.startswith('fmkt_reduced') else None


def make_batch(task, batch, size, seed=0):
    """A random batch of ``size`` (a side, or ``(height, width)``) images."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    height, width = (size, size) if isinstance(size, int) else size
    size = min(height, width)
    images = [(torch.rand(3, height, width, generator=gen) * 255).to(torch.uint8) for _ in range(batch)]
    if task == 'cls':
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(i % 1000) for i in range(batch)]
    else:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for i in range(batch):
            sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                                 scale_factor=(1.0, 1.0)))
            boxes = torch.rand(8, 2, generator=gen) * size * 0.6
            sample.gt_instances = InstanceData(
                bboxes=torch.cat([boxes, boxes + size * 0.3], 1), labels=torch.arange(8) % 80)
            samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def input_size(task, args):
    """``(image side or (height, width), batch size)`` of ``task``."""
    if task == 'cls':
        return args.cls_size, args.cls_batch
    return (args.det_size, args.det_width or args.det_size), args.det_batch


def input_shape(size):
    """``(3, height, width)`` of an :func:`input_size` size."""
    return (3, size, size) if isinstance(size, int) else (3, *size)


def prepare(spec, args, device):
    """``(model in train mode on device, exported plain student or None, a
    preprocessed training batch)`` of one configuration, seeded."""
    import torch
    task, method, steps, encoder = spec
    torch.manual_seed(0)
    model, plain = build(task, method, steps, encoder, args)
    model.to(device).train()
    size, batch = input_size(task, args)
    return model, plain, model.data_preprocessor(make_batch(task, batch, size), True)


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
    """Train/inference times (ms) and peak memory (MiB) of one configuration."""
    import torch
    task, method, steps, encoder = spec
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rss_after_imports = current_rss_mib()

    model, plain, data = prepare(spec, args, device)
    size, batch = input_size(task, args)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True)

    def train_step():
        advance_ema(model)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
        loss, _ = model.parse_losses(losses)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train_ms = 1e3 * timed(train_step, args.iters, args.warmup, sync)
    train_ops = count_operators(train_step)
    train_gflop = step_gflop(model, data)
    if cuda:
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = peak_rss_mib() - rss_after_imports
    optim.zero_grad(set_to_none=True)

    model.eval()
    test = model.data_preprocessor(make_batch(task, batch, size, seed=1), False)
    # detection: the network alone (backbone, neck, flows, head outputs). End-to-end
    # ``predict`` would add NMS, whose cost depends on how many boxes the weights
    # happen to score, which differs between models of equal architecture.
    mode = 'tensor' if task == 'det' else 'predict'
    inference = {}
    inference_ops = {}
    with torch.no_grad():
        runs = {}
        if method in FLOW_METHODS:  # the implicit ensemble of this configuration's N steps
            model.set_eval_steps(steps)
            runs['ensemble'] = lambda: model(test['inputs'], test['data_samples'], mode=mode)
        elif method == 'student':
            runs['student'] = lambda: model(test['inputs'], test['data_samples'], mode=mode)
        if plain is not None:
            plain.to(device).eval()
            runs['exported student'] = lambda: plain(test['inputs'], test['data_samples'], mode=mode)
        for name, run in runs.items():
            inference[name] = 1e3 * timed(run, args.iters, args.warmup, sync)
            inference_ops[name] = count_operators(run)
    return dict(task=task, method=method, steps=steps, encoder=encoder, width=flow_width(method, args),
                train_ms=train_ms,
                memory_mib=memory, inference_ms=inference, train_ops=train_ops,
                inference_ops=inference_ops, train_gflop=train_gflop,
                trainable_params=sum(p.numel() for p in params))


def advance_ema(model) -> None:
    """What FlowEMAHook does before every training iteration (a distiller
    that keeps an EMA of its flows)."""
    if getattr(model, 'ema_flows', None) is not None:
        model.update_ema()


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
    task, method, steps, encoder = spec
    model, plain, data = prepare(spec, args, torch.device('cpu'))
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            momentum=0.9, foreach=True)

    def train_step():
        advance_ema(model)
        loss, _ = model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    train_step()  # the first step builds caches (time tables, momentum buffers)
    result = dict(task=task, method=method, steps=steps, encoder=encoder, width=flow_width(method, args),
                  train_ops=count_operators(train_step), train_gflop=step_gflop(model, data))
    model.eval()
    size, batch = input_size(task, args)
    test = model.data_preprocessor(make_batch(task, batch, size, seed=1), False)
    mode = 'tensor' if task == 'det' else 'predict'
    with torch.no_grad():
        if method in FLOW_METHODS:
            model.set_eval_steps(steps)
        who = model if method in FLOW_METHODS + ('student', ) else plain
        if who is not None:
            who.eval()
            who(test['inputs'], test['data_samples'], mode=mode)
            result['inference_ops'] = count_operators(
                lambda: who(test['inputs'], test['data_samples'], mode=mode))
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
                  common.markdown_table(['training', 'operators / step', f'x {name}', 'GFLOP / step', f'x {name}',
                                         'operators / inference batch', 'x student'], cells), '']
    return '\n'.join(lines)


# -- the table ------------------------------------------------------------------------------


def label(r):
    names = dict(student='student alone', kd='KD (teacher fwd + student fwd/bwd)',
                 dist='DIST (the FM-KT config\'s metric loss, once)',
                 pkd='PKD (teacher backbone+neck fwd + student fwd/bwd)',
                 mgd='MGD (teacher backbone+neck fwd + student fwd/bwd + generation blocks)',
                 fmkt='FM-KT', fmkt_theta='FM-KT^Theta', fmkt_student='FM-KT, training-only flows',
                 fmkt_recompute='FM-KT, loop recomputed in backward',
                 fmkt_batched='FM-KT, levels batched (shared mlp, level embedding)',
                 fmkt_batched_recompute='FM-KT, levels batched and loop recomputed',
                 fmkt_reduced=f'FM-KT, flows of width {r.get("width")}',
                 fmkt_reduced_batched=f'FM-KT, flows of width {r.get("width")}, levels batched')
    name = names[r['method']]
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
                  common.markdown_table(['training', 'ms / iter', 'x student', 'x KD floor', 'operators / step',
                                         'ops x KD floor', 'GFLOP / step', 'FLOP x KD floor',
                                         'time x floor - FLOP x floor', 'peak memory (MiB)', 'memory x KD floor'],
                                        training), '',
                  common.markdown_table([f'inference ({what})', 'ms / batch', 'x student', 'operators / batch',
                                         'ops x student'], inference), '']
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = common.parser(__doc__)
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
                        help='detection rows to measure besides student and pkd (default: all): mgd fmkt '
                             'fmkt_student fmkt_recompute fmkt_batched fmkt_batched_recompute fmkt_reduced '
                             'fmkt_reduced_batched')
    parser.add_argument('--det-flow-width', type=int, default=64,
                        help='the reduced width of the fmkt_reduced rows (flow=dict(width=...))')
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
    common.add_quick(parser)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
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
    if args.worker:
        result = measure(tuple(json.loads(args.worker)), args)
        print('RESULT ' + json.dumps(result), flush=True)
        return result
    if args.count:
        return main_counts(args, argv)
    results = []
    given = list(argv if argv is not None else sys.argv[1:])
    passthrough = [a for a in given if a != '--in-process']  # each worker measures in its process
    for spec in specs(args):
        if args.in_process:
            result = measure(spec, args)
        else:
            done = subprocess.run([sys.executable, osp.abspath(__file__), *passthrough,
                                   '--worker', json.dumps(spec)], capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f'measuring {spec} failed:\n{done.stderr[-3000:]}')
            result = json.loads(lines[-1][len('RESULT '):])
        results.append(result)
        print(f'{result["task"]} {label(result)}: {result["train_ms"]:.1f} ms/iter, '
              f'{result["memory_mib"]:.0f} MiB', flush=True)
    import torch
    header = (f'{time.strftime("%Y-%m-%d")}, {args.device} ({platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} cores, torch threads {args.threads or torch.get_num_threads()}), '
              f'torch {torch.__version__}, medians of {args.iters} iterations after {args.warmup} '
              f'warm-up: `{common.command_line(__file__, given)}`')
    write_report(args.out, header, tables(results, args), results)
    return results


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
              f'torch.utils.flop_counter: `{common.command_line(__file__, argv)}`')
    write_report(args.out, header, counts_table(results, args), results)
    return results


def write_report(out: str, header: str, tables_text: str, results) -> None:
    """The tables under ``header`` at ``out`` (and printed), the results as JSON beside them."""
    common.write_report(out, (header + '\n\n' + tables_text).rstrip('\n'), dict(header=header, results=results))


if __name__ == '__main__':
    main()
