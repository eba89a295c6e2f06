"""What a config entry's ``type`` is, whichever way the config names it.

An old-style config names types as strings (``'CheckpointHook'``,
``'mmengine.CheckpointHook'``, ``'fmkt_mm.DurableCheckpointHook'``); a
new-style (pure-Python, lazy-import) config names them as the classes
themselves. Config preparation asks "is this MMEngine's stock checkpoint
hook?" through :func:`resolve_type`, which reads both forms through the
registries, so both forms get the same treatment.
"""
from typing import Any, Optional

from mmengine.registry import Registry


def resolve_type(spec_type: Any, registry: Registry) -> Optional[type]:
    """The class a config's ``type`` names: itself when it is a class (or a
    lazy import of one), else looked up in ``registry`` and its parents;
    None when nothing is registered under the name."""
    if spec_type is None:
        return None
    if not isinstance(spec_type, (str, type)) and hasattr(spec_type, 'build'):
        spec_type = spec_type.build()  # mmengine's LazyObject of a new-style config
    if isinstance(spec_type, type):
        return spec_type
    if not isinstance(spec_type, str):
        return None
    try:
        found = registry.get(spec_type)
    except Exception:  # a scope whose package is not installed
        return None
    return found if isinstance(found, type) else None


def is_type(spec_type: Any, registry: Registry, *classes: type, subclasses: bool = False) -> bool:
    """Whether ``spec_type`` names one of ``classes`` (or, with
    ``subclasses``, a subclass of one)."""
    cls = resolve_type(spec_type, registry)
    if cls is None:
        return False
    return issubclass(cls, classes) if subclasses else cls in classes


def type_name(spec_type: Any) -> str:
    """A config ``type`` for messages: the string, or the class's name."""
    return spec_type if isinstance(spec_type, str) else getattr(spec_type, '__name__', repr(spec_type))
