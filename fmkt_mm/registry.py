"""MMEngine registries of fmkt_mm, children of MMEngine's root registries.

Being children of the root registries under the scope ``fmkt_mm`` is what lets
any OpenMMLab config, whatever its ``default_scope`` (``mmdet``,
``mmpretrain``, ...), build a component as ``dict(type='fmkt_mm.<Name>')``.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

#: Models, necks, losses and meta-encoders.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='fmkt_mm',
                  locations=['fmkt_mm.flow', 'fmkt_mm.losses', 'fmkt_mm.distill'])
#: Training and evaluation hooks.
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='fmkt_mm',
                 locations=['fmkt_mm.hooks'])
#: Interpolation paths of the flow (``rectified``, ``vp``, ``ve``).
FLOW_PATHS = Registry('flow path', scope='fmkt_mm', locations=['fmkt_mm.flow'])
#: Meta-encoders, by short name (``mlp``, ``conv``, ``transformer``).
META_ENCODERS = Registry('meta-encoder', scope='fmkt_mm', locations=['fmkt_mm.flow'])

from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS  # noqa: E402

#: Optimizer wrappers (bf16 autocast on CPU).
OPTIM_WRAPPERS = Registry('optim wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='fmkt_mm',
                          locations=['fmkt_mm.optim'])

from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS  # noqa: E402

#: Log processors (one readable console line for distillation runs).
LOG_PROCESSORS = Registry('log processor', parent=MMENGINE_LOG_PROCESSORS, scope='fmkt_mm',
                          locations=['fmkt_mm.log_processor'])
