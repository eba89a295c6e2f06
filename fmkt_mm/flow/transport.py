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

The reverse sampler and the round trip live in :mod:`fmkt_mm.flow.reverse`.
"""
from functools import cached_property
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .catalog import FLOW_PATHS, META_ENCODERS
from .conditions import build_condition
from .paths import FlowPath
from .plan import StepPlan, check_step_counts, combine, endpoint_mixing, plan_steps
from .reduction import ChannelReduction
from .reverse import ReverseSampler


def recompute_mode(recompute: Union[bool, str, None]) -> Optional[str]:
    """``None`` (keep every activation), ``'loop'`` (``True``) or ``'step'``."""
    if recompute in (None, False):
        return None
    if recompute is True or recompute == 'loop':
        return 'loop'
    if recompute == 'step':
        return 'step'
    raise ValueError(f"recompute={recompute!r}: use False, True (or 'loop': the whole loop) or 'step' "
                     f'(each meta-encoder call)')

class FlowOutput:
    """What one run of the transfer produced.

    ``estimates``: the endpoint estimates ``Xhat_i`` stacked, first step
    first, ``(N, B, ...)`` in the flow's own space; ``context``: the
    condition's context the run used (None for an unconditional flow).
    Computed when first read (a step that reads none of them dispatches
    none): ``steps``, the head on every estimate, ``(N, B, ...)`` (the
    estimates themselves without a head); ``ensemble``, the mean of
    ``steps``; ``state``, the final state ``Z_0`` (the last estimate).
    """

    def __init__(self, estimates: Tensor, steps: Optional[Tensor] = None, context: Optional[Tensor] = None,
                 head: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.estimates, self.context, self._head = estimates, context, head
        if steps is not None:
            self.__dict__['steps'] = steps

    @cached_property
    def steps(self) -> Tensor:
        return self.estimates if self._head is None else self._head(self.estimates)

    @cached_property
    def ensemble(self) -> Tensor:
        return self.steps.mean(0)

    @cached_property
    def state(self) -> Tensor:
        return self.estimates[-1]  # the last step lands on its estimate

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble in the flow's own space (before the head)."""
        return self.estimates.mean(0)

    def with_steps(self, steps: Tensor) -> 'FlowOutput':
        """This run with ``steps`` in place of the head's (an owner that maps
        the estimates itself, e.g. by a per-teacher adapter)."""
        return FlowOutput(self.estimates, steps, self.context)

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
            steps = self.__dict__.get('steps')
            out.append(FlowOutput(self.estimates[:, rows_j], None if steps is None else steps[:, rows_j],
                                  None if self.context is None else self.context[rows_j], self._head))
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


class FieldEncoder(nn.Module):
    """Any module ``field(state, t, context) -> velocity`` (an oracle, a
    hand-written field) in the loop's encoder interface (``step_inputs`` /
    ``step``, as :class:`~fmkt_mm.flow.MetaEncoder`). ``t`` is a ``(B,)``
    tensor (float32 or wider); states of one position, ``(B, C)`` vectors and
    ``1 x 1`` maps, reach it as ``(B, C)`` vectors."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def step_inputs(self, times: Sequence[float], context: Optional[Tensor], like: Tensor) -> list:
        dtype = torch.promote_types(like.dtype, torch.float32)  # never embed time in half precision
        return [(torch.full((like.shape[0],), t, device=like.device, dtype=dtype), context) for t in times]

    def forward(self, x: Tensor, t: Optional[Tensor] = None, context: Optional[Tensor] = None, *,
                conditioning: Optional[Tuple[Tensor, Optional[Tensor]]] = None) -> Tensor:
        """``field(x, t, context)``, or one step of the loop with one entry
        of :meth:`step_inputs` as ``conditioning``."""
        if conditioning is not None:
            return self.step(x, conditioning)
        return self.field(x, t, context)

    def step(self, x: Tensor, conditioning: Tuple[Tensor, Optional[Tensor]]) -> Tensor:
        t, context = conditioning
        if x.shape[2] == x.shape[3] == 1:
            return self.field(x.flatten(1), t, context)[:, :, None, None]
        return self.field(x, t, context)


class FlowTransport(ReverseSampler, nn.Module):
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
        recompute: activation checkpointing, values and gradients the
            same: ``True`` (or ``'loop'``) checkpoints the whole loop
            (training keeps none of the ``N`` steps' encoder activations
            and reruns the loop in backward: less kept, but the rerun
            holds every step's activations at once); ``'step'`` checkpoints
            each meta-encoder call (one step's activations at a time in
            backward: the lower peak). Either costs about a third more flow
            compute.
        width: run the flow on a learned ``width``-channel projection of the
            representation (``width < channels``; or a built
            :class:`~fmkt_mm.flow.reduction.ChannelReduction` shared by
            several flows): the meta-encoder works on ``width`` channels and
            each estimate is the representation plus the flow's movement
            mapped back (:mod:`fmkt_mm.flow.reduction`). Training keeps the
            encoder's activations at ``width`` channels; no reverse sampler.
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
                 compile: Union[bool, dict] = False,
                 recompute: Union[bool, str] = False,
                 width: Optional[Union[int, ChannelReduction]] = None) -> None:
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
        self.path = FLOW_PATHS.build(path)
        self.condition = build_condition(condition, channels)
        self.condition_level = condition_level
        self.reduction = width if isinstance(width, ChannelReduction) or width is None else \
            ChannelReduction(channels, width)
        if self.reduction is not None and self.reduction.channels != channels:
            raise ValueError(f'the shared ChannelReduction maps {self.reduction.channels} channels but this '
                             f'flow carries {channels}')
        state_channels = channels if self.reduction is None else self.reduction.width
        context_dim = None if self.condition is None else self.condition.dim
        if isinstance(encoder, nn.Module):
            # the loop's one interface: step_inputs once per run, step per step
            is_meta = hasattr(encoder, 'step_inputs') and hasattr(encoder, 'step')
            self.encoder = encoder if is_meta else FieldEncoder(encoder)
        else:
            extra = {} if context_dim is None else dict(context_dim=context_dim)
            self.encoder = META_ENCODERS.build(encoder, channels=state_channels, **extra)
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
        self._compile_options = compile
        self.recompute = recompute_mode(recompute)
        self._compiled_step = None  # built at the first call

    def _encoder_step(self, state: Tensor, conditioning) -> Tensor:
        """The meta-encoder on a ``(B, C, H, W)`` state at one step (its
        activations rerun in backward with ``recompute='step'``)."""
        if self.recompute == 'step' and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._encoder_call, state, conditioning, use_reentrant=False)
        return self._encoder_call(state, conditioning)

    def _encoder_call(self, state: Tensor, conditioning) -> Tensor:
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
    def _check_input(self, x: Tensor) -> None:
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

    def _check_invertible(self, what: str) -> None:
        if self.reduction is not None:
            raise ValueError(f'the {what} inverts the serial path in the representation\'s own space; '
                             f'a flow of width={self.reduction.width} moves it by a low-rank correction '
                             f'and has none: drop width to invert the flow')

    def _check_serial(self, what: str) -> None:
        self._check_invertible(what)
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
        """Transport ``x_student`` in ``num_steps`` steps (differentiable):
        the one entry to the loop.

        Per step, only the meta-encoder call and the state update run; the
        encoder's conditioning is computed once for the run, every endpoint
        estimate at the end in one matrix product, and the head (when the
        output's ``steps`` are read) once on the stacked estimates (``N * B``
        rows; step by step when the head holds BatchNorm in training mode,
        whose statistics must not mix steps). A conditional flow computes its
        context from ``x_student`` (and ``labels`` in training) unless
        ``context`` is given."""
        self._check_input(x_student)
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        context = self._resolve_context(x_student, context, labels)
        is_vector = x_student.dim() == 2
        x = x_student.reshape(*x_student.shape, 1, 1) if is_vector else x_student
        if self.recompute == 'loop' and torch.is_grad_enabled():  # keep no step's activations: rerun them
            estimates = torch.utils.checkpoint.checkpoint(self._transport, x, n, context, use_reentrant=False)
        else:
            estimates = self._transport(x, n, context)
        if is_vector:
            estimates = estimates.flatten(2)
        return FlowOutput(estimates, context=context, head=self.apply_head)

    def _transport(self, x: Tensor, n: int, context: Optional[Tensor]) -> Tensor:
        """Every step's estimate ``(N, B, C, H, W)`` of a run from ``x``: the
        loop in the flow's own space, the reduced width's when set."""
        if self.reduction is None:
            return self._loop(x, n, context)
        z = self.reduction.down(x)
        return self.reduction.expand(x, z, self._loop(z, n, context))

    def _loop(self, x: Tensor, n: int, context: Optional[Tensor]) -> Tensor:
        """The ``n`` serial steps from a ``(B, C, H, W)`` start: every
        step's endpoint estimate, ``(N, B, C, H, W)``."""
        plans = self.plan(n)
        conditioning = self.encoder.step_inputs([p.t for p in plans], context, x)
        state = x if self._start_scale == 1.0 else x * self._start_scale
        outs = []
        for k, plan in enumerate(plans):  # per step: the meta-encoder and the state update only
            out = self._encoder_step(self._scaled(state, plan), conditioning[k])
            outs.append(out)
            if k < n - 1:
                state = combine(state, plan.next_state, out)
        if n == 1:  # the one estimate directly
            return combine(state, plans[0].endpoint, outs[0])[None]
        return self._endpoints(x, _Stack.apply(*outs), n)

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

    def forward(self, x_student: Tensor, num_steps: Optional[int] = None,
                context: Optional[Tensor] = None) -> Tensor:
        """Inference: the implicit ensemble of :meth:`run` (its ``ensemble``)."""
        return self.run(x_student, num_steps, context).ensemble
