"""The transport of FM-KT: the serial transfer loop and its sampler.

Training (rectified path, velocity parameterisation)::

    Z = X_S
    for i = N .. 1:                         t = i / N
        v_i    = g(Z, t)
        Xhat_i = endpoint(Z, v_i, t)        # = Z - t v_i on the rectified path
        loss  += w / N * D(head(Xhat_i), target)
        Z      = step(Z, Xhat_i, v_i, t -> t - 1/N)   # = Z - v_i / N; never detached
    ensemble = mean_i head(Xhat_i)          # the implicit ensemble

Each step's input is the flow's own previous state, never an interpolation
that contains the teacher, so training and inference run the same loop.

Running the flow backwards (:meth:`FlowTransfer.reverse`)
---------------------------------------------------------
Each forward step is a map ``Z_{i-1} = Phi_i(Z_i) = Z_i - G_i(Z_i)`` (on the
rectified path, with Euler or DDIM updates, ``G_i(Z) = v(Z, t_i) / N``). The
reverse sampler starts from a teacher-space state ``Z_0`` and undoes the
steps in the opposite order, ``t = 0 -> 1``, solving ``Phi_i(Z_i) = Z_{i-1}``
by the fixed-point iteration::

    Z^0 = Z_{i-1};    Z^{k+1} = Z_{i-1} + G_i(Z^k)        (1 + refine iterations)

One iteration (``refine=0``) is the explicit reverse Euler / DDIM step
``Z_i = Z_{i-1} + v(Z_{i-1}, t_i) / N``: the same cost as the forward pass
(``N`` meta-encoder calls, at the times the flow was trained on). It reads the
velocity at the state it starts from, ``Z_{i-1}``, where the forward step read
it at ``Z_i``, so it inverts the forward pass up to a discretisation error
that shrinks as ``O(1 / N)``, even for the exact (oracle) flow. Each extra iteration costs ``N`` more calls
and moves the result toward the exact inverse of the discrete forward map,
which it reaches (geometrically) whenever ``G_i`` is a contraction,
``Lip(v) / N < 1``; that condition also makes every step a bijection
(Banach). So the exact invertibility of the learnt map has a condition:
enough steps for the Lipschitz constant of the learnt velocity. Below it the
iteration can diverge (the explicit reverse is then the better estimate), and
a discrete map can even fold two students onto one teacher state, which no
sampler undoes. :meth:`FlowTransfer.roundtrip` measures how far a flow is
from the ideal.
"""
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .catalog import ENCODERS, PATHS
from .conditions import build_condition
from .paths import FlowPath


@dataclass
class FlowOutput:
    """What one run of the transfer produced.

    ``estimates``: the endpoint estimates ``Xhat_i`` stacked, first step
    first, ``(N, B, ...)`` in the flow's own space; ``steps``: ``head(Xhat_i)``
    stacked, ``(N, B, ...)``; ``context``: the condition's context the run used
    (None for an unconditional flow). Computed when first read (a training
    step that reads neither dispatches neither): ``ensemble``, the mean of
    ``steps``; ``state``, the final state ``Z_0`` (the last estimate).
    """
    estimates: Tensor
    steps: Tensor
    context: Optional[Tensor] = None

    @cached_property
    def ensemble(self) -> Tensor:
        return self.steps.mean(0)

    @cached_property
    def state(self) -> Tensor:
        return self.estimates[-1]  # the last step lands on its estimate

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble in the flow's own space (before the head)."""
        return self.estimates.mean(0)

    def split(self, parts: int) -> List['FlowOutput']:
        """A run on ``parts`` stacked copies of a batch (``parts * B`` rows)
        as one output per copy, first copy first."""
        rows = self.estimates.shape[1]
        if rows % parts:
            raise ValueError(f'a run on {rows} rows does not split into {parts} equal parts')
        b = rows // parts
        out = []
        for j in range(parts):
            rows_j = slice(j * b, (j + 1) * b)
            out.append(FlowOutput(estimates=self.estimates[:, rows_j], steps=self.steps[:, rows_j],
                                  context=None if self.context is None else self.context[rows_j]))
        return out


class _Stack(torch.autograd.Function):
    """``torch.stack(tensors)`` whose backward hands each input its gradient
    with one ``unbind`` (autograd's own stack backward selects ``N`` times)."""

    @staticmethod
    def forward(ctx, *tensors):
        return torch.stack(tensors)

    @staticmethod
    def backward(ctx, grad):
        return grad.unbind(0)


@dataclass(frozen=True)
class StepPlan:
    """The constants of one step of an ``N``-step run, as Python floats.

    The meta-encoder's output ``out`` and the state ``Z`` determine
    everything else linearly (velocity or endpoint parameterisation, Euler
    or DDIM update, any path)::

        input    = input_scale * Z
        endpoint = endpoint[0] * Z + endpoint[1] * out
        next     = next_state[0] * Z + next_state[1] * out   (the endpoint on the last step)

    so a step dispatches the encoder call and two fused multiply-adds, and no
    scalar tensor is ever built in the loop.
    """
    t: float
    input_scale: float
    endpoint: Tuple[float, float]
    velocity: Tuple[float, float]
    next_state: Tuple[float, float]


def check_step_counts(*counts) -> Tuple[int, ...]:
    """``counts`` if each is an integer >= 1 (a number of flow steps); the
    one check of step counts, for the flows, the distillers and the hooks."""
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts):
        raise ValueError(f'flow steps must be integers >= 1, got {list(counts)}')
    return counts


def _clean(c: float) -> float:
    """Snap round-off around the exact values 0 and 1 (so that ``1 * Z`` and
    ``0 * out`` are skipped, not computed)."""
    for exact in (0.0, 1.0, -1.0):
        if abs(c - exact) < 1e-12:
            return exact
    return c


def step_coefficients(path: FlowPath, t: float, parameterization: str):
    """``(endpoint, velocity)`` coefficients on ``(Z, out)`` at time ``t``."""
    a, b, da, db = (float(f(t)) for f in (path.a, path.b, path.da, path.db))
    if parameterization == 'velocity':  # out = v;  X_T = (b v - b' Z) / (b a' - a b')
        den = b * da - a * db
        endpoint, velocity = (-db / den, b / den), (0.0, 1.0)
    else:  # out = X_T - Z;  v = a' X_T + b' X_S,  X_S = (Z - a X_T) / b
        endpoint = (1.0, 1.0)
        c_e = da - db * a / b
        velocity = (c_e + db / b, c_e)
    return tuple(map(_clean, endpoint)), tuple(map(_clean, velocity))


def plan_steps(path: FlowPath, n: int, parameterization: str, update: str) -> List[StepPlan]:
    """The :class:`StepPlan` of steps ``i = n .. 1`` (``t = i/n -> (i-1)/n``)
    from the path's ``a, b, a', b'`` (evaluated in float64)."""
    plans = []
    for i in range(n, 0, -1):
        t, t_next = i / n, (i - 1) / n
        a, b = float(path.a(t)), float(path.b(t))
        endpoint, velocity = step_coefficients(path, t, parameterization)
        if i == 1:
            next_state = endpoint
        elif update == 'euler':  # Z - (t - t') v
            dt = t - t_next
            next_state = (1.0 - dt * velocity[0], -dt * velocity[1])
        else:  # ddim: a(t') X_T + b(t') X_S with X_S = (Z - a X_T) / b
            a_next, b_next = float(path.a(t_next)), float(path.b(t_next))
            c_e = a_next - b_next * a / b
            next_state = (c_e * endpoint[0] + b_next / b, c_e * endpoint[1])
        scale = path.input_scale(t)
        plans.append(StepPlan(t=t, input_scale=_clean(float(scale)), endpoint=endpoint,
                              velocity=velocity, next_state=tuple(map(_clean, next_state))))
    return plans


def endpoint_mixing(plans: Sequence[StepPlan], start_scale: float, estimate: str = 'state'):
    """Every step's endpoint estimate as a linear map of the start ``X`` and
    the encoder outputs ``out_j``: ``(start, gamma)`` with

        Xhat_k = start[k] * X + sum_{j <= k} gamma[k][j] * out_j

    (``gamma`` lower-triangular). Every update is linear in the state and
    the output with constant coefficients, so the serial states unroll into
    this form; :meth:`FlowTransport.transport` then gets all ``N`` estimates
    from the stacked outputs in one matrix product. Computed in float64.

    ``estimate='student'`` reads every output as if it were taken at the
    start (``t = 1``, from ``X`` itself): ``Xhat_k = X_S - v_k`` on the
    rectified path, the authors' logit-mode estimate (``gamma`` diagonal)."""
    n = len(plans)
    if estimate == 'student':
        c_z, c_o = plans[0].endpoint  # the t = 1 step
        return [_clean(c_z * start_scale)] * n, [[c_o if j == k else 0.0 for j in range(n)]
                                                 for k in range(n)]
    alpha, row = start_scale, [0.0] * n  # the state Z_k = alpha X + sum_j row[j] out_j
    start, gamma = [], [[0.0] * n for _ in range(n)]
    for k, plan in enumerate(plans):
        c_z, c_o = plan.endpoint
        start.append(_clean(c_z * alpha))
        for j in range(k):
            gamma[k][j] = c_z * row[j]
        gamma[k][k] = c_o
        c_z, c_o = plan.next_state
        alpha, row = c_z * alpha, [c_z * r for r in row]
        row[k] = c_o
    return start, gamma


def combine(state: Tensor, coefficients: Tuple[float, float], out: Tensor) -> Tensor:
    """``c_z * state + c_o * out`` in as few operators as the constants allow."""
    c_z, c_o = coefficients
    if c_z == 0.0:
        return out if c_o == 1.0 else out * c_o
    base = state if c_z == 1.0 else state * c_z
    if c_o == 0.0:
        return base
    return torch.add(base, out, alpha=c_o)


@dataclass
class RoundTrip:
    """A round-trip error summed over samples: ``||x_back - x||^2`` and
    ``||x||^2``; :attr:`relative` is their ratio's square root. Sums add up
    over batches, levels and processes before the ratio is taken."""
    squared_error: Tensor
    squared_norm: Tensor

    @classmethod
    def between(cls, back: Tensor, reference: Tensor) -> 'RoundTrip':
        back, reference = back.detach().double(), reference.detach().double()
        return cls((back - reference).pow(2).sum(), reference.pow(2).sum())

    def __add__(self, other: 'RoundTrip') -> 'RoundTrip':
        return RoundTrip(self.squared_error + other.squared_error, self.squared_norm + other.squared_norm)

    @property
    def relative(self) -> float:
        return float((self.squared_error / self.squared_norm.clamp(min=1e-30)).sqrt())


class FlowTransport(nn.Module):
    """The transport: a learnable flow from student to teacher
    representations (:meth:`run`, :meth:`reverse`, :meth:`roundtrip`);
    :class:`~fmkt_mm.flow.FlowTransfer` adds the FM-KT objective.

    Args:
        channels: channels ``C`` of the representation (``(B, C)`` or
            ``(B, C, H, W)``); the flow is shape-preserving.
        path: ``'rectified'`` (default), ``'vp'``, ``'ve'`` or a dict with
            ``type`` and the path's arguments.
        encoder: meta-encoder config, ``dict(type='mlp'|'conv'|'transformer',
            ...)``; ``channels`` is filled in.
        num_steps: training steps ``N`` (and the default for sampling).
        parameterization: ``'velocity'`` (the meta-encoder predicts
            ``dZ/dt``) or ``'endpoint'`` (it predicts ``X_T - Z``, a residual
            so that an untrained flow is the identity in both).
        update: ``'ddim'`` (re-interpolate onto the path) or ``'euler'``.
        head: module mapping an endpoint estimate to the compared output
            (e.g. pool + linear for logits); identity when None.
        condition: a conditional flow network: a condition config
            (``dict(type='pooled' | 'level' | 'class', ...)``, a list of them,
            see :mod:`fmkt_mm.flow.conditions`) or a built condition module.
            The meta-encoder is then built with ``context_dim`` set to the
            condition's ``dim``, and every run computes the context from
            ``X_S`` (and the labels in training) unless one is passed.
        condition_level: the level / task index this flow passes to its
            condition (a ``'level'`` condition shared by several flows).
        estimate: what each step's estimate of the teacher is computed from:
            ``'state'`` (default), the path's endpoint from the flow's current
            state ``Z_i`` (``Z_i - t v_i`` on the rectified path); or
            ``'student'``, from the student representation itself
            (``X_S - v_i``, the authors' logit mode; the state still moves
            step by step, and the round trip, which inverts the serial
            path, needs ``'state'``).
        compile: compile the meta-encoder's step with ``torch.compile``
            (``True``, or a dict of ``torch.compile`` arguments such as
            ``dict(mode='reduce-overhead')``, which on a GPU also captures
            CUDA graphs). Numerically the eager step within float
            tolerance; never needed for the loop's efficiency.
    """

    def __init__(self,
                 channels: int,
                 path: Union[str, dict, FlowPath] = 'rectified',
                 encoder: Union[str, dict, nn.Module] = 'mlp',
                 num_steps: int = 8,
                 parameterization: str = 'velocity',
                 update: str = 'ddim',
                 head: Optional[nn.Module] = None,
                 condition: Optional[Union[str, dict, list, nn.Module]] = None,
                 condition_level: int = 0,
                 estimate: str = 'state',
                 compile: Union[bool, dict] = False):
        super().__init__()
        if estimate not in ('state', 'student'):
            raise ValueError(f"estimate must be 'state' or 'student', got {estimate!r}")
        self.estimate = estimate
        self.channels = channels
        self.num_steps = self._check_steps(num_steps)
        if parameterization not in ('velocity', 'endpoint'):
            raise ValueError(f"parameterization must be 'velocity' or 'endpoint', got {parameterization!r}")
        if update not in ('ddim', 'euler'):
            raise ValueError(f"update must be 'ddim' or 'euler', got {update!r}")
        self.parameterization, self.update = parameterization, update
        self.path = PATHS.build(path)
        self.condition = build_condition(condition, channels)
        self.condition_level = condition_level
        context_dim = None if self.condition is None else self.condition.dim
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            extra = {} if context_dim is None else dict(context_dim=context_dim)
            self.encoder = ENCODERS.build(encoder, channels=channels, **extra)
        encoder_context = getattr(self.encoder, 'context_dim', context_dim)
        if encoder_context != context_dim:
            raise ValueError(f'the meta-encoder takes context_dim={encoder_context} but the flow\'s '
                             f'condition gives {context_dim}; leave context_dim out of the encoder '
                             f'config (it is set from the condition)')
        self.head = head if head is not None else nn.Identity()
        self._head_batch_norms = [m for m in self.head.modules()
                                  if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._start_scale = float(self.path.b(1.0))
        self._plans: Dict[int, List[StepPlan]] = {}
        self._coefficients: Dict[tuple, Tensor] = {}
        # MetaEncoders take their time conditioning once per run; any other
        # module is called as encoder(state, t, context) at every step
        self._fast_encoder = hasattr(self.encoder, 'conditioning') and hasattr(self.encoder, 'step')
        if compile and not self._fast_encoder:
            raise ValueError('compile=True compiles a MetaEncoder\'s step; this flow\'s encoder '
                             f'{type(self.encoder).__name__} has no conditioning/step methods')
        self._compile_options = compile
        self._compiled_step = None  # built at the first call

    def _encoder_step(self, state: Tensor, conditioning: Tensor) -> Tensor:
        if not self._compile_options:
            return self.encoder(state, conditioning=conditioning)
        if self._compiled_step is None:
            options = {} if self._compile_options is True else dict(self._compile_options)
            options.setdefault('dynamic', False)
            self._compiled_step = torch.compile(self.encoder.step, **options)
        return self._compiled_step(state, conditioning)

    def __getstate__(self):  # a compiled function neither pickles nor deep-copies
        state = dict(super().__getstate__())
        state['_compiled_step'] = None
        state['_coefficients'] = {}
        return state

    @staticmethod
    def _check_steps(n) -> int:
        return check_step_counts(n)[0]

    # -- the loop --------------------------------------------------------------
    def _check_input(self, x: Tensor):
        if x.dim() not in (2, 4) or x.shape[1] != self.channels:
            raise ValueError(
                f'FlowTransfer(channels={self.channels}) got a student representation of shape '
                f'{tuple(x.shape)}; expected (B, {self.channels}) or (B, {self.channels}, H, W). '
                f'Set channels={x.shape[1] if x.dim() > 1 else "?"} or configure an adapter that maps '
                f'the student to {self.channels} channels.')

    def plan(self, n: int) -> List[StepPlan]:
        """The constants of an ``n``-step run (cached per ``n``)."""
        plans = self._plans.get(n)
        if plans is None:
            plans = self._plans[n] = plan_steps(self.path, n, self.parameterization, self.update)
        return plans

    def conditioning(self, plans: Sequence[StepPlan], context: Optional[Tensor], like: Tensor,
                     is_vector: bool = False):
        """What the meta-encoder takes at each step of a run besides the
        state (its conditioning; :meth:`MetaEncoder.step_inputs`), one
        entry per step, computed once per run. ``like``: a ``(B, C, H,
        W)`` state of the run (``is_vector``: a ``(B, C)`` one seen as 1x1)."""
        if self._fast_encoder:
            return self.encoder.step_inputs([p.t for p in plans], context, like)
        time_dtype = torch.promote_types(like.dtype, torch.float32)  # never embed time in half precision
        return [(torch.full((like.shape[0],), p.t, device=like.device, dtype=time_dtype), context,
                 is_vector) for p in plans]

    def _encoder_call(self, state: Tensor, conditioning) -> Tensor:
        """The meta-encoder on a ``(B, C, H, W)`` state at one step."""
        if self._fast_encoder:
            return self._encoder_step(state, conditioning)
        t, context, as_vector = conditioning  # such encoders see vectors as vectors
        if as_vector:
            return self.encoder(state.flatten(1), t, context)[:, :, None, None]
        return self.encoder(state, t, context)

    def _check_serial(self, what: str) -> None:
        if self.estimate != 'state':
            raise ValueError(f"the {what} inverts the serial path and needs estimate='state'; "
                             f'this flow estimates from the {self.estimate}')

    @staticmethod
    def _scaled(state: Tensor, plan: StepPlan) -> Tensor:
        return state if plan.input_scale == 1.0 else state * plan.input_scale

    def make_context(self, x_student: Tensor, labels: Optional[Tensor] = None,
                     teacher: Optional[Tensor] = None) -> Optional[Tensor]:
        """The condition's context ``(B, dim)`` for ``X_S`` (None for an
        unconditional flow). Labels are read in training only; ``teacher``
        is the ``(B,)`` teacher index of a ``'teacher'`` condition."""
        if self.condition is None:
            return None
        extra = {} if teacher is None else dict(teacher=teacher)  # older conditions lack it
        return self.condition(x_student, level=self.condition_level, labels=labels, head=self.head,
                              **extra)

    def _resolve_context(self, x_student, context, labels):
        if context is None and self.condition is not None:
            return self.make_context(x_student, labels)
        return context

    def run(self, x_student: Tensor, num_steps: Optional[int] = None,
            context: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> FlowOutput:
        """Transport ``x_student`` in ``num_steps`` steps (differentiable).

        Per step, only the meta-encoder call and the state update run; the
        time conditioning is computed once for the run and the head once on
        the stacked estimates (``N * B`` rows; step by step when the head
        holds BatchNorm in training mode, whose statistics must not mix
        steps). A conditional flow computes its context from ``x_student``
        (and ``labels`` in training) unless ``context`` is given."""
        estimates, context = self._transport(x_student, num_steps, context, labels)
        return FlowOutput(estimates=estimates, steps=self.apply_head(estimates), context=context)

    def transport(self, x_student: Tensor, num_steps: Optional[int] = None,
                  context: Optional[Tensor] = None, labels: Optional[Tensor] = None):
        """The loop of :meth:`run` without the head: ``(estimates (N, B, ...),
        final state, context)``."""
        estimates, context = self._transport(x_student, num_steps, context, labels)
        return estimates, estimates[-1], context  # the last step lands on its estimate

    def _transport(self, x_student: Tensor, num_steps: Optional[int], context: Optional[Tensor],
                   labels: Optional[Tensor]):
        self._check_input(x_student)
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        context = self._resolve_context(x_student, context, labels)
        is_vector = x_student.dim() == 2
        x = x_student.reshape(*x_student.shape, 1, 1) if is_vector else x_student
        plans = self.plan(n)
        conditioning = self.conditioning(plans, context, x, is_vector)
        state = x if self._start_scale == 1.0 else x * self._start_scale
        outs = []
        for k, plan in enumerate(plans):  # per step: the meta-encoder and the state update only
            out = self._encoder_call(self._scaled(state, plan), conditioning[k])
            outs.append(out)
            if k < n - 1:
                state = combine(state, plan.next_state, out)
        if n == 1:  # the one estimate directly
            estimates = combine(state, plans[0].endpoint, outs[0])[None]
        else:
            estimates = self._endpoints(x, _Stack.apply(*outs), n)
        if is_vector:
            estimates = estimates.flatten(2)
        return estimates, context

    def _endpoints(self, x: Tensor, outs: Tensor, n: int) -> Tensor:
        """Every step's endpoint estimate ``(N, B, ...)`` from the start ``x``
        and the stacked outputs, in one matrix product (:func:`endpoint_mixing`):
        the serial states are not kept, and the backward pass reads the
        outputs once instead of once per step."""
        start, gamma = self._mixing(n, outs)
        flat_x = x.reshape(1, -1)
        base = flat_x if isinstance(start, float) and start == 1.0 else flat_x * start
        return torch.addmm(base, gamma, outs.flatten(1)).view(outs.shape)

    def _mixing(self, n: int, like: Tensor):
        """:func:`endpoint_mixing` of an ``n``-step run as ``(start, gamma)``:
        ``start`` a float when every step shares it, else an ``(N, 1)``
        tensor; ``gamma`` ``(N, N)``. Cached per ``n``, device and dtype."""
        key = (n, like.device, like.dtype)
        value = self._coefficients.get(key)
        if value is None:
            start, gamma = endpoint_mixing(self.plan(n), self._start_scale, self.estimate)
            start = start[0] if len(set(start)) == 1 else \
                torch.tensor(start, dtype=torch.float64).view(-1, 1).to(like.device, like.dtype)
            gamma = torch.tensor(gamma, dtype=torch.float64).to(like.device, like.dtype)
            value = self._coefficients[key] = (start, gamma)
        return value

    def apply_head(self, estimates: Tensor) -> Tensor:
        """``head`` on stacked estimates ``(N, B, ...)`` -> ``(N, B, ...)``."""
        if isinstance(self.head, nn.Identity):
            return estimates
        if any(norm.training for norm in self._head_batch_norms):
            return torch.stack([self.head(e) for e in estimates])
        n, b = estimates.shape[:2]
        return self.head(estimates.flatten(0, 1)).unflatten(0, (n, b))

    def reverse(self, x_teacher: Tensor, num_steps: Optional[int] = None,
                context: Optional[Tensor] = None, refine: int = 0) -> Tensor:
        """Map a teacher-space state ``Z_0`` back to the student space.

        Inverts :meth:`run` (``run(x).state``) step by step from ``t = 0`` to
        ``t = 1`` (see the module docstring): ``refine=0`` is the explicit
        reverse Euler / DDIM sampler, one meta-encoder call per step, exact
        up to an ``O(1/N)`` discretisation error; ``refine=k`` adds ``k``
        fixed-point iterations per step (``k N`` more calls), converging to
        the exact inverse of the ``N``-step forward map when
        ``Lip(v) / N < 1`` and possibly diverging otherwise. A conditional flow needs the ``context`` of the
        sample (:meth:`make_context` on its student representation): the
        inverse is taken at a fixed context.

        Shapes: ``x_teacher`` as the flow's states, ``(B, C)`` or
        ``(B, C, H, W)``; returns the same shape.
        """
        self._check_input(x_teacher)
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        if refine < 0:
            raise ValueError(f'refine must be >= 0, got {refine}')
        if context is None and self.condition is not None:
            raise ValueError('a conditional flow is inverted at a fixed context: pass '
                             'context=flow.make_context(x_student) of the sample')
        is_vector = x_teacher.dim() == 2
        state = x_teacher[:, :, None, None] if is_vector else x_teacher
        plans = self.plan(n)
        conditioning = self.conditioning(plans, context, state, is_vector)
        for k in range(n - 1, -1, -1):  # the forward steps in the opposite order: i = 1 .. n
            plan, target = plans[k], state
            for _ in range(refine + 1):  # Z <- Z_{i-1} + G_i(Z), G_i(Z) = Z - Phi_i(Z)
                out = self._encoder_call(self._scaled(state, plan), conditioning[k])
                moved = combine(state, plan.next_state, out)
                state = target + (state - moved)
        state = state / self._start_scale  # undo start_state: Z_1 = b(1) X_S
        return state.flatten(1) if is_vector else state

    def roundtrip(self, x_student: Tensor, num_steps: Optional[int] = None,
                  x_teacher: Optional[Tensor] = None, refine: int = 0,
                  context: Optional[Tensor] = None,
                  labels: Optional[Tensor] = None) -> Dict[str, RoundTrip]:
        """Round-trip errors of the ``N``-step flow in both directions.

        * ``'s2t2s'``: ``X_S -> run -> reverse`` against ``X_S``;
        * ``'t2s2t'``: ``Y -> reverse -> run`` against ``Y``, where ``Y`` is
          ``x_teacher`` (a teacher representation in the flow's space) or,
          when None, the flow's own image ``run(X_S).state`` (the teacher
          space as the flow reaches it; one forward pass more).

        Both are zero for an exactly invertible flow. Returns
        :class:`RoundTrip` sums (``.relative`` is the relative L2 error).
        """
        self._check_serial('round trip')
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        context = self._resolve_context(x_student, context, labels)
        image = self.run(x_student, n, context).state
        back = self.reverse(image, n, context, refine)
        errors = dict(s2t2s=RoundTrip.between(back, x_student))
        if x_teacher is None:
            errors['t2s2t'] = RoundTrip.between(self.run(back, n, context).state, image)
        else:
            self._check_input(x_teacher)
            there = self.reverse(x_teacher, n, context, refine)
            errors['t2s2t'] = RoundTrip.between(self.run(there, n, context).state, x_teacher)
        return errors

    def sample(self, x_student: Tensor, num_steps: Optional[int] = None,
               context: Optional[Tensor] = None, return_steps: bool = False):
        """Inference: the implicit ensemble (and, if asked, every step's output)."""
        out = self.run(x_student, num_steps, context)
        return (out.ensemble, out.steps) if return_steps else out.ensemble

    forward = sample
