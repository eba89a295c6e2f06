"""Small helpers shared by the package."""
import difflib
from typing import Any, Union

from mmengine.registry import Registry


def build_from_registry(registry: Registry, cfg: Union[str, dict, Any], what: str, **defaults):
    """Build ``cfg`` (a name, a config dict or an already built object) from
    ``registry``; an unknown name raises a ValueError that lists the names
    that exist (MMEngine's own KeyError does not)."""
    if cfg is None or not isinstance(cfg, (str, dict)):
        return cfg
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    name = cfg.pop('type', None)
    if isinstance(name, str):
        bare = name.split('.', 1)[1] if name.startswith(registry.scope + '.') else name
        # look up in this registry directly: building through MMEngine would
        # first switch to the config's default scope (mmdet, mmpretrain, ...)
        obj_cls = registry.get(bare) if '.' not in bare else None
        if obj_cls is None:
            known = sorted(registry.module_dict)
            close = difflib.get_close_matches(bare, known, n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'unknown {what} {name!r}; choose one of {known}.{hint}')
    elif callable(name):
        obj_cls = name
    else:
        raise ValueError(f'{what} config needs a `type`, got {cfg!r}')
    for key, value in defaults.items():
        cfg.setdefault(key, value)
    return obj_cls(**cfg)
