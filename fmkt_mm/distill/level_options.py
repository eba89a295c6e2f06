"""The options of a level distiller (detection, segmentation): the one place
where its two config forms meet, and the deploy modes every distiller knows.

Every shipped config writes the options one level deep, as the classifier's
are written (``levels=(0, 1, 2, 3)``, ``level_weights=10.0``,
``deploy_mode='student'``, ``ema_momentum=...``, ``teacher_flows=``, a list
in ``teachers=``, ...). The distiller also accepts them in four groups, as
mmdet's semi-supervised detectors take ``semi_train_cfg``::

    distiller = dict(
        type='fmkt_mm.DetectionDistiller',
        student=..., teacher=dict(config=..., checkpoint=...),
        flow=dict(num_steps=4, encoder=dict(type='mlp'), loss=dict(type='PKDLoss'), width=None,
                  shared_encoder=False, roundtrip_loss_weight=0.0, batch_levels=False),
        levels=dict(pairs=(0, 1, 2, 3), weights=10.0, student_tap='neck', teacher_tap='neck',
                    adapter='auto', teacher_norm=False, raw_loss_weight=0.0, raw_loss=None,
                    raw_pairs=(), raw_weights=None, dummy_input_shape=(3, 128, 128)),
        deploy=dict(mode='student', eval_steps=None, theta_loss=None, theta_loss_weight=1.0,
                    ema_momentum=None, ema_warmup=2000),
        teachers=dict(models=[...], flows='separate', deploy='mean'))   # several teachers

:data:`FLAT_KEYS` maps the one form into the other; a key given both ways,
or an unknown key, is an error that names it.
"""
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from torch import nn

#: flat key -> (group, key in the group)
FLAT_KEYS: Dict[str, Tuple[str, str]] = {
    'level_weights': ('levels', 'weights'),
    'student_tap': ('levels', 'student_tap'),
    'teacher_tap': ('levels', 'teacher_tap'),
    'adapter': ('levels', 'adapter'),
    'teacher_norm': ('levels', 'teacher_norm'),
    'dummy_input_shape': ('levels', 'dummy_input_shape'),
    'raw_loss_weight': ('levels', 'raw_loss_weight'),
    'raw_loss': ('levels', 'raw_loss'),
    'raw_levels': ('levels', 'raw_pairs'),
    'raw_level_weights': ('levels', 'raw_weights'),
    'deploy_mode': ('deploy', 'mode'),
    'eval_steps': ('deploy', 'eval_steps'),
    'theta_loss': ('deploy', 'theta_loss'),
    'theta_loss_weight': ('deploy', 'theta_loss_weight'),
    'ema_momentum': ('deploy', 'ema_momentum'),
    'ema_warmup': ('deploy', 'ema_warmup'),
    'teacher_flows': ('teachers', 'flows'),
    'deploy_teacher': ('teachers', 'deploy'),
    'shared_encoder': ('flow', 'shared_encoder'),
    'roundtrip_loss_weight': ('flow', 'roundtrip_loss_weight'),
}
DEPLOY_MODES = ('flow', 'student')


@dataclass(frozen=True)
class LevelOptions:
    """Which levels are distilled and how they are compared."""
    pairs: Sequence[Union[int, Tuple[int, int]]] = (0, 1, 2, 3)
    weights: Union[float, Sequence[float]] = 1.0
    student_tap: str = 'neck'
    teacher_tap: str = 'neck'
    adapter: Optional[Union[str, dict]] = 'auto'
    teacher_norm: bool = False
    raw_loss_weight: float = 0.0
    raw_loss: Optional[dict] = None
    #: level pairs distilled by the raw loss alone, without a flow (e.g. PKD
    #: on Faster R-CNN's P2, flows on P3-P5), and their weights (default:
    #: ``weights`` when it is one float)
    raw_pairs: Sequence[Union[int, Tuple[int, int]]] = ()
    raw_weights: Optional[Union[float, Sequence[float]]] = None
    dummy_input_shape: Sequence[int] = (3, 128, 128)


@dataclass(frozen=True)
class DeployOptions:
    """What is deployed and how it is evaluated."""
    mode: str = 'flow'
    eval_steps: Optional[int] = None
    theta_loss: Optional[dict] = None
    theta_loss_weight: float = 1.0
    ema_momentum: Optional[float] = None
    ema_warmup: Optional[int] = 2000


@dataclass(frozen=True)
class TeacherOptions:
    """Several teachers: their models, flows and deployed teacher."""
    models: Optional[Sequence[dict]] = None
    flows: str = 'separate'
    deploy: Union[str, int] = 'mean'


@dataclass(frozen=True)
class FlowExtras:
    """The flow group's keys that are not :class:`~fmkt_mm.flow.FlowTransfer`
    arguments."""
    shared_encoder: bool = False
    roundtrip_loss_weight: float = 0.0
    batch_levels: bool = False


@dataclass(frozen=True)
class LevelDistillerOptions:
    """All groups; ``flow`` holds the FlowTransfer arguments only."""
    flow: Dict[str, Any] = field(default_factory=dict)
    flow_extras: FlowExtras = FlowExtras()
    levels: LevelOptions = LevelOptions()
    deploy: DeployOptions = DeployOptions()
    teachers: TeacherOptions = TeacherOptions()


def _group(name: str, value, cls) -> dict:
    """The keys given in group ``name`` (a dict of ``cls``'s fields, or None)."""
    if value is None:
        return dict()
    if not isinstance(value, dict):
        raise TypeError(f'{name} must be a dict of {[f.name for f in fields(cls)]}, got {value!r}')
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise TypeError(f'{name} has unknown keys {unknown}; its keys are {sorted(known)}')
    return dict(value)


def group_options(flow: Optional[dict] = None, levels: Optional[Union[dict, Sequence]] = None,
                  deploy: Optional[dict] = None, teachers: Optional[Union[dict, Sequence[dict]]] = None,
                  defaults: Optional[LevelDistillerOptions] = None,
                  **flat: Any) -> LevelDistillerOptions:
    """The grouped options from a distiller's arguments: groups as dicts
    (``levels`` may also be a sequence of level pairs, ``teachers`` a list
    of teacher dicts, the flat forms) and flat keys (:data:`FLAT_KEYS`)
    over ``defaults``."""
    defaults = defaults or LevelDistillerOptions()
    unknown = sorted(set(flat) - set(FLAT_KEYS))
    if unknown:
        raise TypeError(f'unknown distiller arguments {unknown}; the groups are flow=, levels=, deploy=, '
                        f'teachers=, and the flat keys {sorted(FLAT_KEYS)}')
    if levels is not None and not isinstance(levels, dict):
        levels = dict(pairs=levels)
    if teachers is not None and not isinstance(teachers, dict):
        teachers = dict(models=teachers)
    flow = {k: v for k, v in (flow or {}).items() if not (k == 'channels' and v is None)}
    extras = {f.name: flow.pop(f.name) for f in fields(FlowExtras) if f.name in flow}
    groups = dict(levels=_group('levels', levels, LevelOptions),
                  deploy=_group('deploy', deploy, DeployOptions),
                  teachers=_group('teachers', teachers, TeacherOptions),
                  flow=extras)
    for key, value in flat.items():
        group, name = FLAT_KEYS[key]
        if name in groups[group]:
            raise ValueError(f'{key}= and {group}.{name} are one option given twice; keep one '
                             f'({group}=dict({name}=...) is the grouped form)')
        groups[group][name] = value
    options = LevelDistillerOptions(
        flow=flow, flow_extras=replace(defaults.flow_extras, **groups['flow']),
        levels=replace(defaults.levels, **groups['levels']),
        deploy=replace(defaults.deploy, **groups['deploy']),
        teachers=replace(defaults.teachers, **groups['teachers']))
    check_options(options)
    return options


def check_options(options: LevelDistillerOptions) -> None:
    """The value checks that need no model (``options`` is only read)."""
    deploy = options.deploy
    if deploy.mode not in DEPLOY_MODES:
        raise ValueError(f'unknown deploy_mode {deploy.mode!r} (deploy.mode); choose one of {list(DEPLOY_MODES)}')
    if deploy.ema_momentum is not None and not 0.0 < deploy.ema_momentum <= 1.0:
        raise ValueError(f'ema_momentum must lie in (0, 1] (the weight of the new weights), '
                         f'got {deploy.ema_momentum}')
    if deploy.ema_warmup is not None and not deploy.ema_warmup > 0:
        raise ValueError(f'ema_warmup must be a positive number of updates or None, got {deploy.ema_warmup}')
    if options.levels.raw_loss_weight < 0:
        raise ValueError(f'raw_loss_weight must be >= 0, got {options.levels.raw_loss_weight}')
    if 'channels' in options.flow:
        raise ValueError('flow.channels is inferred per level from the student; remove it')
    if 'head' in options.flow:
        raise ValueError("a level's flow has no head: the distiller maps each level into the teacher's "
                         'shape with its adapter; configure levels.adapter (adapter=) instead')


def check_level_condition(cfg: Optional[Union[str, dict, Sequence, 'nn.Module']]) -> None:
    """A level's flow condition: never a class condition (a level holds many
    objects)."""
    from ..flow.conditions import ClassCondition, names_condition
    if names_condition(cfg, ClassCondition):
        raise ValueError("condition type 'class' conditions a classifier's flow on the image's "
                         "class; a detection level holds many objects: use 'pooled' and/or "
                         "'level'")
