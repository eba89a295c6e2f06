"""The rows of the cost tables (tools/benchmarks/cost.py), as data, and the
training step they are measured by (:func:`training_step`). Each
:class:`Method` names the distiller it builds from the measured FM-KT config
and its overrides; :func:`specs` lists the configurations a command line
asks for and :func:`build` makes one, with random batches of the task's
input size (:func:`make_batch`)."""
import argparse
import copy
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from common import ROOT

CLS_CONFIG = osp.join(ROOT, 'configs', 'mmpretrain', 'fmkt_resnet34_resnet18_8xb32_in1k.py')
DET_CONFIG = osp.join(ROOT, 'configs', 'mmdet', 'fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py')
DET_TEACHER = 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'


@dataclass(frozen=True)
class Method:
    """One kind of row of the cost tables."""
    name: str  # its key on the command line (--det-methods) and in the JSON
    label: str  # its words in the tables; '{width}' is the reduced flows' width, '{levels}' the flows' levels
    kind: str  # 'student' alone, 'logit' / 'feature' (a one-loss baseline) or 'flow' (the config's FM-KT)
    loss: Optional[dict] = None  # a baseline's metric (None: the FM-KT config's own, applied once)
    level_weights: float = 1.0  # a feature baseline's
    deploy: str = 'flow'  # a flow row's deploy mode: 'flow' (the ensemble predicts) or 'student'
    flow: dict = field(default_factory=dict)  # a flow row's overrides of the config's flow
    distiller: dict = field(default_factory=dict)  # a flow row's overrides of the distiller
    encoder: Optional[str] = None  # a flow row measured once: its encoder (None: the first asked for)
    sweep: bool = False  # a flow row measured at every encoder x step count asked for
    reduced: bool = False  # the flows on a --det-flow-width projection of their level
    levels: bool = False  # the flows on the --det-flow-levels of the neck instead of the config's

    def predicts_with_flows(self) -> bool:
        return self.kind == 'flow' and self.deploy == 'flow'


#: every level in one encoder call per step (a shared mlp told the level by its embedding)
BATCHED = dict(shared_encoder=True, batch_levels=True, condition=dict(type='level'))
FEATURE = '(teacher backbone+neck fwd + student fwd/bwd'
#: the rows of each task, in table order; the first is the student alone, the second the floor
METHODS: Dict[str, List[Method]] = dict(
    cls=[Method('student', 'student alone', 'student'),
         Method('kd', 'KD (teacher fwd + student fwd/bwd)', 'logit', loss=dict(type='fmkt_mm.KDLoss', tau=4.0)),
         Method('dist', 'DIST (the FM-KT config\'s metric loss, once)', 'logit'),
         Method('fmkt', 'FM-KT', 'flow', sweep=True),
         Method('fmkt_theta', 'FM-KT^Theta', 'flow', deploy='student', encoder='mlp')],
    det=[Method('student', 'student alone', 'student'),
         Method('pkd', f'PKD {FEATURE})', 'feature', loss=dict(type='fmkt_mm.PKDLoss'), level_weights=10.0),
         Method('mgd', f'MGD {FEATURE} + generation blocks)', 'feature',
                loss=dict(type='fmkt_mm.MGDLoss', alpha_mgd=2e-5, lambda_mgd=0.65)),
         Method('fmkt', 'FM-KT', 'flow', sweep=True),
         Method('fmkt_student', 'FM-KT, training-only flows', 'flow', deploy='student',
                distiller=dict(ema_momentum=None)),
         Method('fmkt_recompute', 'FM-KT, loop recomputed in backward', 'flow', flow=dict(recompute=True)),
         Method('fmkt_recompute_steps', 'FM-KT, each encoder call recomputed in backward', 'flow',
                flow=dict(recompute='step')),
         Method('fmkt_batched', 'FM-KT, levels batched (shared mlp, level embedding)', 'flow', flow=BATCHED,
                encoder='mlp'),
         Method('fmkt_batched_recompute', 'FM-KT, levels batched and loop recomputed', 'flow',
                flow=dict(BATCHED, recompute=True), encoder='mlp'),
         Method('fmkt_reduced', 'FM-KT, flows of width {width}', 'flow', reduced=True),
         Method('fmkt_reduced_batched', 'FM-KT, flows of width {width}, levels batched', 'flow', flow=BATCHED,
                encoder='mlp', reduced=True),
         Method('fmkt_reduced_batched_factored', 'FM-KT, flows of width {width}, levels batched, the loss on '
                'their factors', 'flow', flow=dict(BATCHED, factored=True), encoder='mlp', reduced=True),
         Method('fmkt_student_reduced_batched', 'FM-KT, training-only flows of width {width}, levels batched',
                'flow', deploy='student', flow=BATCHED, distiller=dict(ema_momentum=None), encoder='mlp',
                reduced=True),
         Method('fmkt_p2_pkd', 'FM-KT, PKD alone on P2, flows on P3-P5', 'flow',
                distiller=dict(levels=(1, 2, 3), raw_levels=(0, ))),
         Method('fmkt_levels', 'FM-KT, flows on the neck levels {levels}', 'flow', levels=True),
         Method('fmkt_levels_recompute_steps', 'FM-KT, flows on the neck levels {levels}, each encoder call '
                'recomputed in backward', 'flow', flow=dict(recompute='step'), levels=True)])
LABELS = {m.name: m.label for methods in METHODS.values() for m in methods}


def method(task: str, name: str) -> Method:
    return next(m for m in METHODS[task] if m.name == name)


def specs(args) -> list:
    """Every configuration measured: ``(task, method, steps, encoder)``."""
    out = []
    for task in ('cls', 'det'):
        if args.task not in (task, 'all'):
            continue
        encoders, steps = (args.encoders, args.cls_steps) if task == 'cls' else (args.det_encoders, args.det_steps)
        for m in METHODS[task]:
            if task == 'det' and args.det_methods and m.name not in {*args.det_methods, 'student', 'pkd'}:
                continue  # student and PKD stay: the references of the ratios
            if m.kind != 'flow':
                out.append((task, m.name, None, None))
            elif m.sweep:
                out += [(task, m.name, n, encoder) for encoder in encoders for n in steps]
            else:
                out.append((task, m.name, max(steps), m.encoder or encoders[0]))
    return out


# -- one configuration -------------------------------------------------------------------



def build(task, name, steps, encoder, args):
    """``(model, plain_student_or_None)`` for one configuration."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from fmkt_mm.apis import apply_distiller
    from fmkt_mm.distill.teacher import build_model
    from fmkt_mm.registry import MODELS
    row = method(task, name)
    cfg = apply_distiller(Config.fromfile(CLS_CONFIG if task == 'cls' else args.det_config))
    scope = cfg.default_scope
    distiller = copy.deepcopy(cfg.model)
    student = distiller['student']
    if task == 'det':
        student['backbone']['init_cfg'] = None  # no download: random weights cost the same
    student.setdefault('data_preprocessor', distiller.get('data_preprocessor'))
    teacher = dict(config=distiller['teacher']['config'] if task == 'cls' or args.det_teacher is None
                   else args.det_teacher, checkpoint=None, allow_random_init=True)
    parts = dict(student=student, teacher=teacher, data_preprocessor=distiller.get('data_preprocessor'))
    shape = input_shape(input_size(task, args)[0])
    with DefaultScope.overwrite_default_scope(scope):
        if row.kind == 'student':
            return build_model(student, scope), None
        if row.kind == 'logit':
            loss = row.loss or copy.deepcopy(distiller['flow']['loss'])
            model = MODELS.build(dict(type='fmkt_mm.LogitDistiller', loss=loss, **parts))
        elif row.kind == 'feature':
            model = MODELS.build(dict(type='fmkt_mm.FeatureDistiller', loss=row.loss, level_weights=row.level_weights,
                                      dummy_input_shape=shape, **parts))
        else:
            flow = dict(distiller['flow'])
            configured = dict(flow.get('encoder') or {})
            # the configured encoder (with its width) when its type is asked for, else the type's defaults
            # the configured recompute (the shipped recipe) unless the row sets it
            flow.update(num_steps=steps,
                        encoder=configured if configured.get('type') == encoder else dict(type=encoder))
            flow.update(copy.deepcopy(row.flow))
            if row.reduced:  # the flows on a channel-reduced projection
                flow['width'] = args.det_flow_width
            if row.levels:
                distiller['levels'] = tuple(args.det_flow_levels)
            # item by item: a ConfigDict's update() would merge the flow into the configured one
            for key, value in dict(parts, dummy_input_shape=shape, flow=flow, deploy_mode=row.deploy,
                                   **copy.deepcopy(row.distiller)).items():
                distiller[key] = value
            model = MODELS.build(distiller)
        plain = None
        if model.deploy_mode == 'student':  # the exported student: a plain model
            plain = build_model(student, scope)
            plain.load_state_dict(model.student_state_dict(), strict=True)
        return model, plain


def flow_width(name, args):
    """The flows' reduced width of a configuration (None: all channels)."""
    return args.det_flow_width if any(m.reduced for m in METHODS['det'] if m.name == name) else None


def flow_levels(name, args):
    """The flows' levels of a configuration when a row sets them (None: the config's)."""
    return list(args.det_flow_levels) if any(m.levels for m in METHODS['det'] if m.name == name) else None

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


def training_step(model):
    """``(step, trainable parameters)``: one training iteration (EMA
    advance, forward, losses, backward, an SGD update with ``foreach``)."""
    import torch
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True)

    def step(data):
        if getattr(model, 'ema_flows', None) is not None:  # what FlowEMAHook does before every iteration
            model.update_ema()
        loss, _ = model.parse_losses(model(data['inputs'], data['data_samples'], mode='loss'))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return step, params


@dataclass(frozen=True)
class ConfigJob:
    """One configuration to run in a process of its own (a job of ``pool.run_jobs``)."""
    spec: tuple  # (task, method, steps, encoder), as :func:`specs` lists them
    args: argparse.Namespace
    threads: Optional[int] = None  # the scripts set --threads themselves
