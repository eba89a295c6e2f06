"""The plan of an ``N``-step run: every step's constants, as Python floats.

Every quantity of a step is linear in the state ``Z`` and the meta-encoder's
output ``out`` (velocity or endpoint parameterisation, Euler or DDIM update,
any path), so a step is fully described by the coefficients of a few linear
maps. They are read off the path's own conversions
(:meth:`~fmkt_mm.flow.paths.FlowPath.endpoint_from_velocity`,
:meth:`~fmkt_mm.flow.paths.FlowPath.velocity_from_endpoint`,
:meth:`~fmkt_mm.flow.paths.FlowPath.step`) by evaluating them at ``(Z, out)
= (1, 0)`` and ``(0, 1)`` in float64, once per step count: the loop then
dispatches the encoder call and fused multiply-adds, and builds no scalar
tensor.
"""
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor

from .paths import FlowPath

Coefficients = Tuple[float, float]
#: a map ``(Z, out) -> c_z Z + c_o out``
LinearMap = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class StepPlan:
    """The constants of one step of an ``N``-step run::

        input    = input_scale * Z
        endpoint = endpoint[0] * Z + endpoint[1] * out
        velocity = velocity[0] * Z + velocity[1] * out
        next     = next_state[0] * Z + next_state[1] * out   (the endpoint on the last step)
    """
    t: float
    input_scale: float
    endpoint: Coefficients
    velocity: Coefficients
    next_state: Coefficients


def check_step_counts(*counts: int) -> Tuple[int, ...]:
    """``counts`` if each is an integer >= 1 (a number of flow steps); the
    one check of step counts, for the flows, the distillers and the hooks."""
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts):
        raise ValueError(f'flow steps must be integers >= 1, got {list(counts)}')
    return counts


def clean(c: float) -> float:
    """Snap round-off around the exact values 0 and +-1 (so that ``1 * Z``
    and ``0 * out`` are skipped, not computed)."""
    for exact in (0.0, 1.0, -1.0):
        if abs(c - exact) < 1e-12:
            return exact
    return c


def coefficients_of(linear_map: LinearMap) -> Coefficients:
    """``(c_z, c_o)`` of a map ``(Z, out) -> c_z Z + c_o out``, read off at
    the unit inputs in float64."""
    one = torch.ones((), dtype=torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    return clean(float(linear_map(one, zero))), clean(float(linear_map(zero, one)))


def step_maps(path: FlowPath, t: float, parameterization: str) -> Tuple[LinearMap, LinearMap]:
    """``(endpoint, velocity)``: the step's estimates of ``X_T`` and of
    ``dZ/dt`` as maps of ``(Z, out)``, from the path's conversions."""
    if parameterization == 'velocity':  # out = v
        def endpoint(z, out):
            return path.endpoint_from_velocity(z, out, t)

        def velocity(z, out):
            return out
    else:  # out = X_T - Z
        def endpoint(z, out):
            return z + out

        def velocity(z, out):
            return path.velocity_from_endpoint(z, z + out, t)
    return endpoint, velocity


def step_coefficients(path: FlowPath, t: float, parameterization: str) -> Tuple[Coefficients, Coefficients]:
    """``(endpoint, velocity)`` coefficients on ``(Z, out)`` at time ``t``."""
    endpoint, velocity = step_maps(path, t, parameterization)
    return coefficients_of(endpoint), coefficients_of(velocity)


def plan_steps(path: FlowPath, n: int, parameterization: str, update: str) -> List[StepPlan]:
    """The :class:`StepPlan` of steps ``i = n .. 1`` (``t = i/n -> (i-1)/n``)."""
    plans = []
    for i in range(n, 0, -1):
        t, t_next = i / n, (i - 1) / n
        endpoint, velocity = step_maps(path, t, parameterization)
        if i == 1:  # the last step lands on its estimate
            next_state = coefficients_of(endpoint)
        else:
            next_state = coefficients_of(lambda z, out: path.step(
                z, endpoint(z, out), velocity(z, out), t, t_next, update))
        plans.append(StepPlan(t=t, input_scale=clean(float(path.input_scale(t))),
                              endpoint=coefficients_of(endpoint), velocity=coefficients_of(velocity),
                              next_state=next_state))
    return plans


def endpoint_mixing(plans: Sequence[StepPlan], start_scale: float,
                    estimate: str = 'state') -> Tuple[List[float], List[List[float]]]:
    """Every step's endpoint estimate as a linear map of the start ``X`` and
    the encoder outputs ``out_j``: ``(start, gamma)`` with

        Xhat_k = start[k] * X + sum_{j <= k} gamma[k][j] * out_j

    (``gamma`` lower-triangular). Every update is linear in the state and
    the output with constant coefficients, so the serial states unroll into
    this form, and the transport gets all ``N`` estimates from the stacked
    outputs in one matrix product. Computed in float64.

    ``estimate='student'`` reads every output as if it were taken at the
    start (``t = 1``, from ``X`` itself): ``Xhat_k = X_S - v_k`` on the
    rectified path, the authors' logit-mode estimate (``gamma`` diagonal)."""
    n = len(plans)
    if estimate == 'student':
        c_z, c_o = plans[0].endpoint  # the t = 1 step
        return [clean(c_z * start_scale)] * n, [[c_o if j == k else 0.0 for j in range(n)]
                                                for k in range(n)]
    alpha, row = start_scale, [0.0] * n  # the state Z_k = alpha X + sum_j row[j] out_j
    start, gamma = [], [[0.0] * n for _ in range(n)]
    for k, plan in enumerate(plans):
        c_z, c_o = plan.endpoint
        start.append(clean(c_z * alpha))
        for j in range(k):
            gamma[k][j] = c_z * row[j]
        gamma[k][k] = c_o
        c_z, c_o = plan.next_state
        alpha, row = c_z * alpha, [c_z * r for r in row]
        row[k] = c_o
    return start, gamma


def combine(state: Tensor, coefficients: Coefficients, out: Tensor) -> Tensor:
    """``c_z * state + c_o * out`` in as few operators as the constants allow."""
    c_z, c_o = coefficients
    if c_z == 0.0:
        return out if c_o == 1.0 else out * c_o
    base = state if c_z == 1.0 else state * c_z
    if c_o == 0.0:
        return base
    return torch.add(base, out, alpha=c_o)
