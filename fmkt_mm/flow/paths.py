"""Interpolation paths between the student (t = 1) and the teacher (t = 0).

A path mixes the two endpoints of the transfer::

    Z_t = a(t) * X_T + b(t) * X_S,      a(0) = 1, b(0) = 0,  a(1) ~ 0

so that the velocity along it is ``dZ/dt = a'(t) X_T + b'(t) X_S``. Given a
state ``Z_t`` and a prediction of either the velocity or the teacher endpoint,
the two linear equations above give every other quantity; this module holds
those conversions and the update from one time to the next.

Shapes: ``t`` is a float or a tensor broadcastable against the state (the
transfer loop passes ``(B, 1, ...)``); states are ``(B, C)`` or
``(B, C, H, W)``.
"""
import math
from typing import Union

import torch
from torch import Tensor

from .catalog import FLOW_PATHS

TimeLike = Union[float, Tensor]


class FlowPath:
    """Base class: subclasses define ``a``, ``b`` and their time derivatives."""

    def a(self, t: TimeLike) -> Tensor:
        raise NotImplementedError

    def b(self, t: TimeLike) -> Tensor:
        raise NotImplementedError

    def da(self, t: TimeLike) -> Tensor:
        raise NotImplementedError

    def db(self, t: TimeLike) -> Tensor:
        raise NotImplementedError

    # -- states --------------------------------------------------------------
    def interpolate(self, x_teacher: Tensor, x_student: Tensor, t: TimeLike) -> Tensor:
        """``Z_t = a(t) X_T + b(t) X_S``."""
        return self.a(t) * x_teacher + self.b(t) * x_student

    def start_state(self, x_student: Tensor) -> Tensor:
        """The state the transfer starts from at ``t = 1``: ``b(1) X_S``.

        ``a(1) X_T`` is dropped: it is zero for the rectified and trig-VP
        paths, negligible for linear-beta VP, and for VE it is the price of
        starting from the student alone (the teacher must never leak into the
        input).
        """
        return self.b(1.0) * x_student

    def input_scale(self, t: TimeLike) -> Union[float, Tensor]:
        """Factor applied to the state before the meta-encoder sees it."""
        return 1.0

    def true_velocity(self, x_teacher: Tensor, x_student: Tensor, t: TimeLike) -> Tensor:
        """``dZ/dt = a'(t) X_T + b'(t) X_S`` on the path through both endpoints."""
        return self.da(t) * x_teacher + self.db(t) * x_student

    # -- conversions ---------------------------------------------------------
    def endpoint_from_velocity(self, state: Tensor, velocity: Tensor, t: TimeLike) -> Tensor:
        """Solve ``Z = a X_T + b X_S``, ``v = a' X_T + b' X_S`` for ``X_T``:
        ``X_T = (b v - b' Z) / (b a' - a b')``."""
        a, b, da, db = self.a(t), self.b(t), self.da(t), self.db(t)
        return (b * velocity - db * state) / (b * da - a * db)

    def source_from_endpoint(self, state: Tensor, endpoint: Tensor, t: TimeLike) -> Tensor:
        """``X_S = (Z - a X_T) / b``: the student endpoint implied by a state and
        a teacher estimate (needs ``b(t) != 0``, true for every ``t > 0``)."""
        return (state - self.a(t) * endpoint) / self.b(t)

    def velocity_from_endpoint(self, state: Tensor, endpoint: Tensor, t: TimeLike) -> Tensor:
        """``v = a' X_T + b' X_S`` with ``X_S`` from :meth:`source_from_endpoint`."""
        source = self.source_from_endpoint(state, endpoint, t)
        return self.da(t) * endpoint + self.db(t) * source

    # -- one step of the transfer --------------------------------------------
    def step(self, state: Tensor, endpoint: Tensor, velocity: Tensor,
             t: TimeLike, t_next: TimeLike, update: str = 'ddim') -> Tensor:
        """Move a state from ``t`` to ``t_next < t``.

        ``ddim`` re-interpolates onto the path through the current estimates
        of both endpoints (exact whenever the estimate is); ``euler`` takes
        ``Z - (t - t_next) v``. On the rectified path both equal the authors'
        ``Z - v / N``.
        """
        if update == 'euler':
            return state - (t - t_next) * velocity
        if update == 'ddim':
            source = self.source_from_endpoint(state, endpoint, t)
            return self.interpolate(endpoint, source, t_next)
        raise ValueError(f"update must be 'ddim' or 'euler', got {update!r}")


def _as_tensor(t: TimeLike) -> Tensor:
    # python floats in double precision: a 0-dim tensor never up-casts a float32 state
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


@FLOW_PATHS.register('rectified')
class RectifiedPath(FlowPath):
    """Rectified flow: ``a = 1 - t``, ``b = t``; the exact velocity is the
    constant ``X_S - X_T``."""

    def a(self, t: TimeLike) -> Tensor:
        return 1 - _as_tensor(t)

    def b(self, t: TimeLike) -> Tensor:
        return _as_tensor(t) * 1

    def da(self, t: TimeLike) -> Tensor:
        return torch.full_like(_as_tensor(t), -1.0)

    def db(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_as_tensor(t))


@FLOW_PATHS.register('vp')
class VPPath(FlowPath):
    """Variance-preserving ODE path: ``a(t)^2 + b(t)^2 = 1``.

    ``schedule='linear'``: the linear-beta VP-SDE schedule,
    ``a(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2)``;
    ``schedule='trig'``: ``a = cos(pi t / 2)``, ``b = sin(pi t / 2)``.
    """

    def __init__(self, schedule: str = 'linear', beta_min: float = 0.1,
                 beta_max: float = 20.0) -> None:
        if schedule not in ('linear', 'trig'):
            raise ValueError(f"VPPath schedule must be 'linear' or 'trig', got {schedule!r}")
        self.schedule, self.beta_min, self.beta_max = schedule, beta_min, beta_max

    def _log_a(self, t):
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def a(self, t: TimeLike) -> Tensor:
        t = _as_tensor(t)
        if self.schedule == 'trig':
            return torch.cos(0.5 * math.pi * t)
        return torch.exp(self._log_a(t))

    def b(self, t: TimeLike) -> Tensor:
        t = _as_tensor(t)
        if self.schedule == 'trig':
            return torch.sin(0.5 * math.pi * t)
        return torch.sqrt(-torch.expm1(2 * self._log_a(t)))  # sqrt(1 - a^2), accurate near t = 0

    def da(self, t: TimeLike) -> Tensor:
        t = _as_tensor(t)
        if self.schedule == 'trig':
            return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)
        return self.a(t) * (-0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min)

    def db(self, t: TimeLike) -> Tensor:
        t = _as_tensor(t)
        if self.schedule == 'trig':
            return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)
        return -self.a(t) * self.da(t) / self.b(t)  # from a^2 + b^2 = 1


@FLOW_PATHS.register('ve')
class VEPath(FlowPath):
    """Variance-exploding ODE path: ``a = 1``, ``b = sigma(t)`` growing
    geometrically, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``.

    The transfer starts from ``sigma_max X_S``; the meta-encoder sees the
    state scaled by ``1 / sqrt(1 + sigma^2)`` so its input stays O(1). The last
    step returns the endpoint estimate, so the residual ``sigma_min X_S`` of
    the path at ``t = 0`` never reaches the output.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f'VEPath needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}')
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def a(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def b(self, t: TimeLike) -> Tensor:
        return self.sigma_min * torch.exp(_as_tensor(t) * self._log_ratio)

    def da(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_as_tensor(t))

    def db(self, t: TimeLike) -> Tensor:
        return self.b(t) * self._log_ratio

    def input_scale(self, t: TimeLike) -> Tensor:
        return torch.rsqrt(1 + self.b(t) ** 2)
