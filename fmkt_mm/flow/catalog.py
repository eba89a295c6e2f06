"""Name -> class catalogs of the flow's parts, in plain Python.

``FLOW_PATHS``, ``META_ENCODERS`` and ``CONDITIONS`` hold the built-in parts under
their short names (``'rectified'``, ``'mlp'``, ``'pooled'``, ...); ``LOSSES``
starts empty. A framework adds further *sources* of names to a catalog:
fmkt_mm, in :mod:`fmkt_mm.registry`, adds its MMEngine registries, so that a
meta-encoder registered there, or any of fmkt_mm's metric losses, is found
by name here while this package imports nothing but torch.
"""
import difflib
from typing import Any, Callable, Dict, ItemsView, Iterable, List, Optional, Tuple


class Catalog:
    """Classes by name, plus further sources of names.

    Args:
        what: what the catalog holds, for error messages (``'flow path'``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: Dict[str, type] = {}
        self._sources: List[Tuple[Callable[[str], Optional[type]], Callable[[], Iterable[str]]]] = []

    def register(self, *names: str) -> Callable[[type], type]:
        """Class decorator: catalogue the class under ``names`` (its class
        name when none is given)."""
        def add(cls: type) -> type:
            for name in names or (cls.__name__,):
                if name in self._classes and self._classes[name] is not cls:
                    raise KeyError(f'{self.what} {name!r} is already {self._classes[name].__name__}')
                self._classes[name] = cls
            return cls
        return add

    def add_source(self, get: Callable[[str], Optional[type]], names: Callable[[], Iterable[str]]) -> None:
        """Look names up in ``get`` too (after this catalog's own classes);
        ``names()`` lists them for error messages."""
        self._sources.append((get, names))

    def items(self) -> ItemsView[str, type]:
        """The catalogue's own ``(name, class)`` pairs (not the sources')."""
        return self._classes.items()

    def get(self, name: str) -> Optional[type]:
        cls = self._classes.get(name)
        for get, _ in self._sources:
            if cls is not None:
                break
            cls = get(name)
        return cls

    def names(self) -> List[str]:
        known = set(self._classes)
        for _, names in self._sources:
            known.update(names())
        return sorted(known)

    def build(self, spec: Any, **defaults: Any) -> Any:
        """Build ``spec``: a name, a dict with ``type`` (a name or a class)
        and the arguments, or an object already built (returned as is).
        ``defaults`` fill in the arguments the spec leaves out. An unknown
        name raises a ValueError that lists the known ones."""
        return build_object(spec, self.get, self.names, self.what, **defaults)


def build_object(spec: Any, get: Callable[[str], Optional[type]], names: Callable[[], Iterable[str]],
                 what: str, **defaults: Any) -> Any:
    """:meth:`Catalog.build` over any lookup: ``get(name)`` finds a class
    (None when unknown) and ``names()`` lists the known names."""
    if spec is None or not isinstance(spec, (str, dict)):
        return spec
    spec = dict(type=spec) if isinstance(spec, str) else dict(spec)
    name = spec.pop('type', None)
    if isinstance(name, str):
        cls = get(name)
        if cls is None:
            known = sorted(names())
            close = difflib.get_close_matches(name, known, n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'unknown {what} {name!r}; choose one of {known}.{hint}')
    elif callable(name):
        cls = name
    else:
        raise ValueError(f'{what} config needs a `type`, got {spec!r}')
    for key, value in defaults.items():
        spec.setdefault(key, value)
    return cls(**spec)


#: Interpolation paths of the flow (``rectified``, ``vp``, ``ve``).
FLOW_PATHS = Catalog('flow path')
#: Meta-encoders (``mlp``, ``conv``, ``transformer``).
META_ENCODERS = Catalog('meta-encoder')
#: Conditions of a conditional flow (``pooled``, ``level`` / ``task``, ``class``).
CONDITIONS = Catalog('flow condition')
#: Metric losses applied to every step (none built in: a framework adds its own).
LOSSES = Catalog('loss')
