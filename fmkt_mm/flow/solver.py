"""The serial solver of FM-KT: a parameter-free loop over a step plan.

Training and inference run the same loop (rectified path, velocity
parameterisation)::

    Z = X_S
    for i = N .. 1:                         t = i / N
        v_i    = g(Z, t)                    # the flow's step: its meta-encoder
        Xhat_i = endpoint(Z, v_i, t)        # = Z - t v_i on the rectified path
        Z      = step(Z, Xhat_i, v_i, t -> t - 1/N)   # = Z - v_i / N; never detached

Each step's input is the flow's own previous state, never an interpolation
that contains the teacher. :class:`SerialSolver` holds the path and the
update rule, and their constants per step count (:mod:`.plan`); the caller
gives it the step, a function of the state and the step's conditioning, so
the solver holds no parameter and knows no encoder. Running the loop
backwards is :meth:`SerialSolver.reverse` (:mod:`.reverse` explains it).
"""
from typing import Callable, Dict, List, Sequence, Union

import torch
from torch import Tensor

from .catalog import FLOW_PATHS
from .paths import FlowPath
from .plan import StepPlan, combine, endpoint_mixing, plan_steps
from .reverse import invert_steps

#: a flow's step: ``step(state, conditioning) -> out``, the meta-encoder's
#: output at the state (a velocity or an endpoint, per the parameterisation)
Step = Callable[[Tensor, object], Tensor]


class _Stack(torch.autograd.Function):
    """``torch.stack(tensors)`` whose backward hands each input its gradient
    with one ``unbind`` (autograd's own stack backward selects ``N`` times)."""

    @staticmethod
    def forward(ctx, *tensors):
        return torch.stack(tensors)

    @staticmethod
    def backward(ctx, grad):
        return grad.unbind(0)


class SerialSolver:
    """The serial loop of a flow, in both directions (see the module docstring).

    Args:
        path: ``'rectified'`` (default), ``'vp'``, ``'ve'``, a dict with
            ``type`` and the path's arguments, or a built path.
        parameterization: ``'velocity'`` (the step predicts ``dZ/dt``) or
            ``'endpoint'`` (it predicts ``X_T - Z``).
        update: ``'ddim'`` (re-interpolate onto the path) or ``'euler'``.
        estimate: ``'state'`` (each estimate from the current state) or
            ``'student'`` (from the student representation itself; the
            state still moves step by step).
    """

    def __init__(self, path: Union[str, dict, FlowPath] = 'rectified', parameterization: str = 'velocity',
                 update: str = 'ddim', estimate: str = 'state') -> None:
        if estimate not in ('state', 'student'):
            raise ValueError(f"estimate must be 'state' or 'student', got {estimate!r}")
        if parameterization not in ('velocity', 'endpoint'):
            raise ValueError(f"parameterization must be 'velocity' or 'endpoint', got {parameterization!r}")
        if update not in ('ddim', 'euler'):
            raise ValueError(f"update must be 'ddim' or 'euler', got {update!r}")
        self.estimate, self.parameterization, self.update = estimate, parameterization, update
        self.path = FLOW_PATHS.build(path)
        #: the start state is ``start_scale * X_S`` (``b(1)``: 1 on the rectified path)
        self.start_scale = float(self.path.b(1.0))
        self._plans: Dict[int, List[StepPlan]] = {}
        self._coefficients: Dict[tuple, tuple] = {}

    def __getstate__(self):  # the coefficient cache is rebuilt on the copy's device
        state = dict(self.__dict__)
        state['_coefficients'] = {}
        return state

    def plan(self, n: int) -> List[StepPlan]:
        """The constants of an ``n``-step run (cached per ``n``)."""
        plans = self._plans.get(n)
        if plans is None:
            plans = self._plans[n] = plan_steps(self.path, n, self.parameterization, self.update)
        return plans

    def times(self, n: int) -> List[float]:
        """The times ``t`` of an ``n``-step run, first step first."""
        return [p.t for p in self.plan(n)]

    @staticmethod
    def scaled(state: Tensor, plan: StepPlan) -> Tensor:
        """A step's input: the state times the plan's input scale."""
        return state if plan.input_scale == 1.0 else state * plan.input_scale

    def loop(self, step: Step, x: Tensor, conditioning: Sequence) -> Tensor:
        """The ``n = len(conditioning)`` serial steps from a ``(B, C, H, W)``
        start ``x``: every step's endpoint estimate, ``(N, B, C, H, W)``.
        Per step only ``step`` and the state update run; every estimate is
        formed at the end in one matrix product (:meth:`endpoints`)."""
        n = len(conditioning)
        plans = self.plan(n)
        state = x if self.start_scale == 1.0 else x * self.start_scale
        outs = []
        for k, plan in enumerate(plans):
            out = step(self.scaled(state, plan), conditioning[k])
            outs.append(out)
            if k < n - 1:
                state = combine(state, plan.next_state, out)
        if n == 1:  # the one estimate directly
            return combine(state, plans[0].endpoint, outs[0])[None]
        return self.endpoints(x, _Stack.apply(*outs), n)

    def endpoints(self, x: Tensor, outs: Tensor, n: int) -> Tensor:
        """Every step's endpoint estimate ``(N, B, ...)`` from the start ``x``
        and the stacked step outputs, in one matrix product
        (:func:`~fmkt_mm.flow.plan.endpoint_mixing`): the serial states are
        not kept, and the backward pass reads the outputs once instead of
        once per step."""
        start, gamma = self._mixing(n, outs)
        flat_x = x.reshape(1, -1)
        base = flat_x if isinstance(start, float) and start == 1.0 else flat_x * start
        return torch.addmm(base, gamma, outs.flatten(1)).view(outs.shape)

    def _mixing(self, n: int, like: Tensor):
        """``(start, gamma)`` of an ``n``-step run: ``start`` a float when
        every step shares it, else an ``(N, 1)`` tensor; ``gamma`` ``(N, N)``.
        Cached per ``n``, device and dtype."""
        key = (n, like.device, like.dtype)
        value = self._coefficients.get(key)
        if value is None:
            start, gamma = endpoint_mixing(self.plan(n), self.start_scale, self.estimate)
            start = start[0] if len(set(start)) == 1 else \
                torch.tensor(start, dtype=torch.float64).view(-1, 1).to(like.device, like.dtype)
            gamma = torch.tensor(gamma, dtype=torch.float64).to(like.device, like.dtype)
            value = self._coefficients[key] = (start, gamma)
        return value

    def reverse(self, step: Step, state: Tensor, conditioning: Sequence, refine: int = 0) -> Tensor:
        """A ``(B, C, H, W)`` end state back to the start of the
        ``len(conditioning)``-step loop (:func:`~fmkt_mm.flow.reverse.invert_steps`)."""
        plans = self.plan(len(conditioning))
        back = invert_steps(plans, lambda s, k: step(self.scaled(s, plans[k]), conditioning[k]), state, refine)
        return back / self.start_scale  # undo the start: Z_1 = b(1) X_S


__all__ = ['SerialSolver', 'Step']
