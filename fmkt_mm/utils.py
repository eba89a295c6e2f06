"""Small helpers shared by the package."""
from typing import Any, Union

from mmengine.registry import Registry

from .flow.catalog import build_object


def build_from_registry(registry: Registry, cfg: Union[str, dict, Any], what: str, **defaults):
    """Build ``cfg`` (a name, a config dict or an already built object) from
    ``registry``; an unknown name raises a ValueError that lists the names
    that exist (MMEngine's own KeyError does not). Names are looked up in
    ``registry`` directly: building through MMEngine would first switch to
    the config's default scope (mmdet, mmpretrain, ...)."""
    def get(name: str):
        bare = name.split('.', 1)[1] if name.startswith(registry.scope + '.') else name
        return registry.get(bare) if '.' not in bare else None

    return build_object(cfg, get, lambda: registry.module_dict, what, **defaults)
