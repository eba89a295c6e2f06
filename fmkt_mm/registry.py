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
FLOW_PATHS = Registry('flow path', scope='fmkt_mm')
#: Meta-encoders, by short name (``mlp``, ``conv``, ``transformer``).
META_ENCODERS = Registry('meta-encoder', scope='fmkt_mm')

from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS  # noqa: E402

#: Optimizer wrappers (bf16 autocast on CPU).
OPTIM_WRAPPERS = Registry('optim wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='fmkt_mm',
                          locations=['fmkt_mm.optim'])

from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS  # noqa: E402
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS  # noqa: E402

#: Runners: ``runner_type = 'fmkt_mm.DistillRunner'`` makes the stock
#: launchers (mmdet's and mmpretrain's ``tools/train.py``, ``mim train``) distil.
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope='fmkt_mm', locations=['fmkt_mm.runner'])

#: Log processors (one readable console line for distillation runs).
LOG_PROCESSORS = Registry('log processor', parent=MMENGINE_LOG_PROCESSORS, scope='fmkt_mm',
                          locations=['fmkt_mm.log_processor'])


def _registry_source(registry: Registry, accepts=lambda cls: True):
    """``(get, names)`` of a flow catalog source: the classes of ``registry``
    that ``accepts``, by name, bare or prefixed with the scope
    (``'PKDLoss'``, ``'fmkt_mm.PKDLoss'``)."""
    from .utils import scoped_get

    def wanted(cls) -> bool:
        return isinstance(cls, type) and accepts(cls)

    def get(name: str):
        cls = scoped_get(registry, name)
        return cls if wanted(cls) else None

    def names():
        return [n for n, c in registry.module_dict.items() if wanted(c)]
    return get, names


def _register_flow() -> None:
    """The flow's parts in MMEngine's registries, and MMEngine's registries
    as sources of the flow's catalogs: the one place where the plain-PyTorch
    :mod:`fmkt_mm.flow` meets MMEngine. Afterwards a config names a path, a
    meta-encoder or a condition as ``dict(type='fmkt_mm.<Class>')`` or by
    its short name, and a meta-encoder registered in :data:`META_ENCODERS`
    (or a metric loss in :data:`MODELS`) is found by the flow."""
    from . import flow
    for catalog, registry in ((flow.FLOW_PATHS, FLOW_PATHS), (flow.META_ENCODERS, META_ENCODERS)):
        for name, cls in catalog.items():
            registry.register_module(name=name, module=cls)
    for cls in {cls for _, cls in flow.META_ENCODERS.items()} | {cls for _, cls in flow.CONDITIONS.items()} | {
            flow.FlowTransfer, flow.CompositeCondition}:
        MODELS.register_module(module=cls)
    flow.FLOW_PATHS.add_source(*_registry_source(FLOW_PATHS))
    flow.META_ENCODERS.add_source(*_registry_source(META_ENCODERS))
    flow.CONDITIONS.add_source(*_registry_source(MODELS, lambda cls: issubclass(cls, flow.FlowCondition)))
    # a metric loss is what applies to stacked steps
    flow.LOSSES.add_source(*_registry_source(MODELS, lambda cls: hasattr(cls, 'forward_steps')))


_register_flow()

from mmengine.registry import LOOPS as MMENGINE_LOOPS  # noqa: E402

#: Training loops (an epoch loop that resumes inside an epoch).
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope='fmkt_mm', locations=['fmkt_mm.train_loop'])
