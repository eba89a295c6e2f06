"""Small helpers shared by the package."""
from typing import Any, Optional, Union

from mmengine.registry import Registry

from .flow.catalog import build_object


def scoped_get(registry: Registry, name: str) -> Optional[type]:
    """The class registered in ``registry`` under ``name``, bare or prefixed
    with the registry's scope (``'PKDLoss'``, ``'fmkt_mm.PKDLoss'``); None
    for an unknown or other-scope name. Looked up in ``registry`` directly:
    building through MMEngine would first switch to the config's default
    scope (mmdet, mmpretrain, ...)."""
    prefix = registry.scope + '.'
    bare = name[len(prefix):] if name.startswith(prefix) else name
    return registry.get(bare) if '.' not in bare else None


def build_from_registry(registry: Registry, cfg: Union[str, dict, Any], what: str, **defaults: Any) -> Any:
    """Build ``cfg`` (a name, a config dict or an already built object) from
    ``registry``; an unknown name raises a ValueError that lists the names
    that exist (MMEngine's own KeyError does not)."""
    return build_object(cfg, lambda name: scoped_get(registry, name), lambda: registry.module_dict,
                        what, **defaults)
