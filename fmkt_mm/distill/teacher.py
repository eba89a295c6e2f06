"""Building and loading the frozen teachers, and weighing several."""
import copy
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import MODELS as ROOT_MODELS
from torch import Tensor, nn

from ..state_fit import load_weights

if TYPE_CHECKING:
    from ..flow import FlowTransfer


def model_config(config: Union[str, dict, Config], what: str) -> Tuple[dict, Optional[str], Optional[dict]]:
    """``(model_cfg, default_scope, data_preprocessor)`` of a full config (a
    path, ``package::path`` or loaded Config) or of a bare model dict."""
    if isinstance(config, str):
        try:
            # 'mmdet::path' / 'mmpretrain::path': a config shipped inside a package
            config = get_config(config) if '::' in config else Config.fromfile(config)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{what} config not found: {config!r} ({err}). Give a local file '
                                    f"or 'mmdet::...' / 'mmpretrain::...' config path") from None
    config = copy.deepcopy(config)
    if 'model' in config and isinstance(config['model'], (dict, ConfigDict)):
        return dict(config['model']), config.get('default_scope'), config.get('data_preprocessor')
    if 'type' in config:
        return dict(config), None, None
    raise ValueError(f'{what} config must be a full config with a `model` field or a model dict '
                     f'with a `type`, got keys {sorted(config)}')


def build_model(model_cfg: dict, scope: Optional[str]) -> nn.Module:
    model_cfg = dict(model_cfg)
    if scope is not None:
        model_cfg.setdefault('_scope_', scope)
    return ROOT_MODELS.build(model_cfg)


def build_teacher(config: Union[str, dict], checkpoint: Optional[str], strict: bool = True,
                  allow_unsafe_pickle: bool = False, data_preprocessor: Optional[dict] = None,
                  allow_random_init: bool = False) -> nn.Module:
    """Build the teacher from its config and load its checkpoint, then freeze it.

    Loading is strict by default: a checkpoint that does not fit the config
    fails with the missing/unexpected/wrong-shape keys (``strict=False``
    loads what fits and warns). The file is read with ``weights_only=True``;
    ``allow_unsafe_pickle=True`` is the explicit opt-in for files that need
    full unpickling.
    """
    model_cfg, scope, top_level_preprocessor = model_config(config, 'teacher')
    model_cfg.setdefault('data_preprocessor', top_level_preprocessor or data_preprocessor)
    # the teacher's pretrained-backbone init is irrelevant: its checkpoint overrides it
    teacher = build_model(model_cfg, scope)
    if checkpoint is None:
        if not allow_random_init:
            raise ValueError('the teacher needs a checkpoint: set teacher=dict(config=..., '
                             'checkpoint=PATH) (a randomly initialised teacher teaches nothing)')
    else:
        load_weights(teacher, checkpoint, strict=strict, allow_unsafe_pickle=allow_unsafe_pickle,
                     what='teacher checkpoint', role='teacher')
    return freeze(teacher)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


#: the keys of one teacher's config
TEACHER_KEYS = ('config', 'checkpoint', 'strict', 'allow_unsafe_pickle', 'allow_random_init')
#: the further keys of an entry of ``teachers``
ENTRY_KEYS = ('weight', 'tap', 'name')
#: how several teachers are followed: a flow each, or one flow conditioned on the teacher
TEACHER_FLOWS = ('separate', 'shared')


class TeacherSet(nn.ModuleList):
    """Several frozen teachers, in the order of the config's ``teachers``
    (state-dict keys ``teacher.0.*``, ``teacher.1.*``, ...), with each
    one's :attr:`names`, :attr:`weights` (summing to 1) and :attr:`taps`
    (None: the distiller's ``teacher_tap``)."""

    def __init__(self, models: Iterable[nn.Module], names: Iterable[str], weights: Iterable[float],
                 taps: Iterable[Optional[str]]) -> None:
        super().__init__(models)
        self.names, self.weights, self.taps = list(names), list(weights), list(taps)


def build_teachers(entries: Sequence[dict], data_preprocessor: Optional[dict] = None) -> TeacherSet:
    """The :class:`TeacherSet` of a distiller's ``teachers=[dict(config=...,
    checkpoint=..., weight=1.0, tap=None, name=None), ...]``: each loaded
    strictly and safely as :func:`build_teacher` loads one. The weights are
    relative (normalised to sum to 1, so the distillation terms keep the
    scale of one teacher's); ``name`` defaults to the config's file name."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError('teachers must be a non-empty list of dict(config=..., checkpoint=..., '
                         f'weight=1.0), got {entries!r}')
    models, names, weights, taps = [], [], [], []
    for j, entry in enumerate(entries):
        entry = dict(entry) if isinstance(entry, dict) else entry
        if not isinstance(entry, dict) or 'config' not in entry or \
                set(entry) - set(TEACHER_KEYS) - set(ENTRY_KEYS):
            raise ValueError(f'teachers[{j}] must be dict(config=..., checkpoint=..., weight=1.0, '
                             f'tap=None, name=None); got {entry!r}')
        weight = float(entry.pop('weight', 1.0))
        if not weight > 0:
            raise ValueError(f'teachers[{j}] has weight {weight}; weights must be > 0')
        config = entry['config']
        name = entry.pop('name', None) or (
            config.rsplit('/', 1)[-1].rsplit('.', 1)[0] if isinstance(config, str) else f'teacher{j}')
        taps.append(entry.pop('tap', None))
        try:
            models.append(build_teacher(data_preprocessor=data_preprocessor, **entry))
        except Exception as err:  # the same error, naming the teacher
            try:
                named = type(err)(f'teachers[{j}] ({name}): {err}')
            except Exception:
                raise err from None
            raise named from err
        names.append(name)
        weights.append(weight)
    total = sum(weights)
    return TeacherSet(models, names, [w / total for w in weights], taps)


def weighted(values: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``sum_j weights[j] * values[j]``; the value itself for one weight of 1."""
    if len(values) == 1 and weights[0] == 1.0:
        return values[0]
    return sum(w * v for w, v in zip(weights, values))


def stack_for_teachers(flow: 'FlowTransfer', x: Tensor, teachers: Sequence[int],
                       labels: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """The input of one flow shared by several teachers (a ``'teacher'``
    condition): ``x`` stacked once per teacher in ``teachers``
    (``len(teachers) * B`` rows, first teacher first), the labels likewise,
    and the context with each copy's teacher index. Returns ``(stacked,
    stacked labels, context)``."""
    teachers = list(teachers)
    k = len(teachers)
    stacked = x.repeat(k, *([1] * (x.dim() - 1))) if k > 1 else x
    labels = labels.repeat(k) if labels is not None and k > 1 else labels
    index = torch.tensor(teachers, device=x.device).repeat_interleave(x.shape[0])
    return stacked, labels, flow.make_context(stacked, labels, teacher=index)
