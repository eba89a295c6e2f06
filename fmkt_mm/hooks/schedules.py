"""The schedules of the hooks, in one language.

A schedule maps the current iteration (or epoch) to a value:

* ``dict(milestones=[m1, ..., mk], values=[v0, ..., vk])`` (or with
  ``type='step'``, and ``factors`` for ``values``): ``v0`` before ``m1``,
  ``vj`` from ``mj`` on (:class:`Schedule`; any values, lists included);
* ``dict(type='linear' | 'cosine', begin, end, start_factor, end_factor)``:
  a ramp of a multiplier; ``dict(type='constant', factor)``
  (:func:`schedule_factor`).
"""
import bisect
import math
from typing import Optional, Sequence, Union


class Schedule:
    """A piecewise-constant schedule: ``values[j]`` from ``milestones[j - 1]``
    on (``values[0]`` before the first milestone); the ``step`` schedule.
    ``name`` names the setting in error messages."""

    def __init__(self, name: str, milestones: Sequence[int], values: Sequence) -> None:
        milestones, values = list(milestones), list(values)
        if len(values) != len(milestones) + 1:
            raise ValueError(f'schedule of {name}: {len(milestones)} milestones need '
                             f'{len(milestones) + 1} values (one before the first milestone and one '
                             f'after each), got {len(values)}')
        if any(not isinstance(m, int) or m < 0 for m in milestones) or milestones != sorted(set(milestones)):
            raise ValueError(f'schedule of {name}: milestones must be increasing integers >= 0, '
                             f'got {milestones}')
        self.name, self.milestones, self.values = name, milestones, values

    @classmethod
    def build(cls, name: str, cfg: Optional[Union[dict, 'Schedule']]) -> Optional['Schedule']:
        """From ``dict(milestones=..., values=...)`` (``type='step'`` and
        ``factors`` for ``values`` accepted); None stays None."""
        if cfg is None or isinstance(cfg, Schedule):
            return cfg
        if isinstance(cfg, dict) and cfg.get('type', 'step') == 'step':
            spec = {k: v for k, v in cfg.items() if k != 'type'}
            if 'factors' in spec and 'values' not in spec:
                spec['values'] = spec.pop('factors')
            if set(spec) == {'milestones', 'values'}:
                return cls(name, spec['milestones'], spec['values'])
        raise ValueError(f'schedule of {name} must be dict(milestones=[...], values=[...]), got {cfg!r}')

    def __call__(self, point: int):
        return self.values[bisect.bisect_right(self.milestones, point)]


def schedule_factor(spec: dict, iteration: int) -> float:
    """The multiplier a schedule gives at ``iteration`` (0-based).

    * ``dict(type='linear', begin=0, end=1000, start_factor=0.0, end_factor=1.0)``
    * ``dict(type='cosine', begin=..., end=..., start_factor=..., end_factor=...)``:
      half a cosine from ``start_factor`` to ``end_factor``;
    * ``dict(type='step', milestones=[m1, m2], factors=[f0, f1, f2])``
      (a :class:`Schedule`; ``values`` for ``factors`` too): ``f0`` before
      ``m1``, ``f1`` from ``m1``, ``f2`` from ``m2``;
    * ``dict(type='constant', factor=...)``.

    Before ``begin`` a ramp holds ``start_factor``, after ``end`` ``end_factor``.
    """
    kind = spec.get('type', 'linear')
    if kind in ('linear', 'cosine'):
        begin, end = int(spec.get('begin', 0)), int(spec['end'])
        start, stop = float(spec.get('start_factor', 0.0)), float(spec.get('end_factor', 1.0))
        if iteration <= begin:
            return start
        if iteration >= end:
            return stop
        progress = (iteration - begin) / (end - begin)
        if kind == 'cosine':
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return start + (stop - start) * progress
    if kind == 'step':
        return float(Schedule.build('step', spec)(iteration))
    if kind == 'constant':
        return float(spec['factor'])
    raise ValueError(f"unknown schedule type {kind!r}; use 'linear', 'cosine', 'step' or 'constant'")


def check_schedule(name: str, spec: dict) -> None:
    """Fail early, naming ``name``, on a schedule :func:`schedule_factor` cannot evaluate."""
    kind = spec.get('type', 'linear')
    if kind in ('linear', 'cosine'):
        if 'end' not in spec or int(spec['end']) <= int(spec.get('begin', 0)):
            raise ValueError(f'schedule of {name!r}: a {kind} ramp needs end > begin, got {spec}')
    elif kind == 'step':
        Schedule.build(repr(name), spec)
    elif kind == 'constant':
        if 'factor' not in spec:
            raise ValueError(f'schedule of {name!r}: a constant schedule needs factor, got {spec}')
    schedule_factor(spec, 0)  # unknown types fail here
