"""FM-KT's flow: a learnable transport from student to teacher
representations and its training loss, put together from parts:

* the parameters: the meta-encoder (:mod:`.encoders`, or any field through
  :class:`~fmkt_mm.flow.field.FieldEncoder`), the condition
  (:mod:`.conditions`), a width reduction (:mod:`.reduction`), the head and
  the metric loss;
* :class:`~fmkt_mm.flow.solver.SerialSolver`, parameter-free: the path, the
  step plan, the serial loop and its reverse;
* :class:`~fmkt_mm.flow.objective.FMKTObjective`: the metric loss on every
  step, pair decoupling, the step-count draw, cycle consistency.

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
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .catalog import LOSSES, META_ENCODERS
from .conditions import build_condition
from .field import FieldEncoder
from .objective import FMKTObjective
from .output import FlowOutput
from .paths import FlowPath
from .plan import check_step_counts
from .reduction import ChannelReduction
from .reverse import RoundTrip, roundtrip_errors
from .solver import SerialSolver

__all__ = ['FlowTransfer', 'recompute_mode']


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


class FlowTransfer(nn.Module):
    """A learnable flow from student to teacher representations (:meth:`run`,
    :meth:`reverse`, :meth:`roundtrip`) and its FM-KT training loss
    (:meth:`step_losses`, :meth:`roundtrip_loss`).

    Args:
        channels: channels ``C`` of the representation (``(B, C)`` or
            ``(B, C, H, W)``); the flow is shape-preserving.
        path, parameterization, update, estimate: the solver's
            (:class:`~fmkt_mm.flow.solver.SerialSolver`): the path
            (``'rectified'``, ``'vp'``, ``'ve'`` or a dict), what the
            meta-encoder predicts (``'velocity'``, or ``'endpoint'``: a
            residual, so an untrained flow is the identity in both), the
            update (``'ddim'`` or ``'euler'``) and what each estimate is
            computed from (``'state'``, or ``'student'``: ``X_S - v_i``, the
            authors' logit mode; the round trip needs ``'state'``).
        encoder: meta-encoder config, ``dict(type='mlp'|'conv'|'transformer',
            ...)`` (``channels`` is filled in), or a built module (one with
            the loop's ``step_inputs`` / ``step``, or any
            ``field(x, t, context)``).
        num_steps: training steps ``N`` (and the default for sampling).
        num_steps_choices: if given, each training run draws ``N`` from it
            (e.g. ``(1, 2, 4, 8, 16)``).
        head: module mapping an endpoint estimate to the compared output
            (a classifier's tail: pool + linear to logits); identity when None.
        condition: a conditional flow network: a condition config
            (``dict(type='pooled' | 'level' | 'class', ...)``, a list of them,
            see :mod:`fmkt_mm.flow.conditions`) or a built condition module.
            The meta-encoder is then built with ``context_dim`` set to the
            condition's ``dim``, and every run computes the context from
            ``X_S`` (and the labels in training) unless one is passed.
        condition_level: the level / task index this flow passes to its
            condition (a ``'level'`` condition shared by several flows).
        loss: metric loss ``D`` (a built module with ``forward_steps``, or
            the config of one found in ``LOSSES``, such as fmkt_mm's
            ``dict(type='PKDLoss')``), applied to every step with weight
            ``1 / N`` times its own ``loss_weight``.
        beta_d: pair decoupling; a fraction ``1 - beta_d`` of the batch gets
            its targets (and labels) permuted within that fraction.
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
        factored: with ``width``, keep a run's estimates as their factors
            (:class:`~fmkt_mm.flow.reduction.FactoredSteps`): a metric loss
            that reads factors (PKD's) computes every step's value from
            moments over the positions, the ensemble comes from the mean
            movement, and the ``N`` full-width estimates are never formed.
            The same values and gradients to rounding; less memory and
            elementwise work where positions are many (Faster R-CNN's P2),
            more operators (about 150 per level).
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
                 width: Optional[Union[int, ChannelReduction]] = None,
                 factored: bool = False,
                 num_steps_choices: Optional[Sequence[int]] = None,
                 loss: Optional[Union[dict, nn.Module]] = None,
                 beta_d: float = 1.0) -> None:
        super().__init__()
        self.channels = channels
        self.num_steps = check_step_counts(num_steps)[0]
        self.solver = SerialSolver(path, parameterization, update, estimate)
        self.condition = build_condition(condition, channels)
        self.condition_level = condition_level
        self.reduction = width if isinstance(width, ChannelReduction) or width is None else \
            ChannelReduction(channels, width)
        if factored and self.reduction is None:
            raise ValueError('factored=True keeps the estimates of a reduced-width flow as their factors; '
                             'set width (e.g. width=64) or drop factored')
        self.factored = bool(factored)
        if self.reduction is not None and self.reduction.channels != channels:
            raise ValueError(f'the shared ChannelReduction maps {self.reduction.channels} channels but this '
                             f'flow carries {channels}')
        self.encoder = self._build_encoder(encoder)
        self.head = head if head is not None else nn.Identity()
        self._head_batch_norms = [m for m in self.head.modules()
                                  if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._compile_options = compile
        self.recompute = recompute_mode(recompute)
        self._compiled_step = None  # built at the first call
        self.loss_fn = LOSSES.build(loss)
        self.objective = FMKTObjective(self.loss_fn, beta_d, num_steps_choices)

    def _build_encoder(self, encoder: Union[str, dict, nn.Module]) -> nn.Module:
        state_channels = self.channels if self.reduction is None else self.reduction.width
        context_dim = None if self.condition is None else self.condition.dim
        if isinstance(encoder, nn.Module):
            # the loop's one interface: step_inputs once per run, step per step
            is_meta = hasattr(encoder, 'step_inputs') and hasattr(encoder, 'step')
            built = encoder if is_meta else FieldEncoder(encoder)
        else:
            extra = {} if context_dim is None else dict(context_dim=context_dim)
            built = META_ENCODERS.build(encoder, channels=state_channels, **extra)
        encoder_context = getattr(built, 'context_dim', context_dim)
        if encoder_context != context_dim:
            raise ValueError(f'the meta-encoder takes context_dim={encoder_context} but the flow\'s '
                             f'condition gives {context_dim}; leave context_dim out of the encoder '
                             f'config (it is set from the condition)')
        return built

    def __getstate__(self):  # a compiled function neither pickles nor deep-copies
        state = dict(super().__getstate__())
        state['_compiled_step'] = None
        return state

    # -- the step ---------------------------------------------------------------
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

    # -- checks -------------------------------------------------------------------
    def _check_steps(self, num_steps: Optional[int]) -> int:
        return check_step_counts(num_steps if num_steps is not None else self.num_steps)[0]

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (2, 4) or x.shape[1] != self.channels:
            raise ValueError(
                f'FlowTransfer(channels={self.channels}) got a student representation of shape '
                f'{tuple(x.shape)}; expected (B, {self.channels}) or (B, {self.channels}, H, W). '
                f'Set channels={x.shape[1] if x.dim() > 1 else "?"} or configure an adapter that maps '
                f'the student to {self.channels} channels.')

    def check_invertible(self, what: str, fix: str = 'drop width to invert the flow',
                         estimate: bool = True) -> None:
        """Refuse what needs the reverse (``what``; ``fix`` says what to
        change): it inverts the serial path in the representation's own
        space, which a reduced-width flow does not move along (and, for the
        round trip and its loss, which ``estimate='student'`` does not
        estimate from). The one check of it, for the flow, the distillers'
        round-trip losses and :class:`~fmkt_mm.hooks.FlowRoundTripHook`."""
        if self.reduction is not None:
            raise ValueError(f'the {what} inverts the serial path in the representation\'s own space; '
                             f'a flow of width={self.reduction.width} moves it by a low-rank correction '
                             f'and has none: {fix}')
        if estimate and self.solver.estimate != 'state':
            raise ValueError(f"the {what} inverts the serial path and needs estimate='state'; "
                             f'this flow estimates from the {self.solver.estimate}')

    # -- the transport ------------------------------------------------------------
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
        n = self._check_steps(num_steps)
        context = self._resolve_context(x_student, context, labels)
        is_vector = x_student.dim() == 2
        x = x_student.reshape(*x_student.shape, 1, 1) if is_vector else x_student
        head = None if isinstance(self.head, nn.Identity) else self.apply_head
        recompute_loop = self.recompute == 'loop' and torch.is_grad_enabled()
        if self.factored and not (is_vector or recompute_loop):
            # the estimates kept as their factors: formed only where read (FlowOutput.factored)
            z = self.reduction.down(x)
            factored = self.reduction.factored(x, z, self._loop(z, n, context))
            return FlowOutput(context=context, head=head, factored=factored)
        if recompute_loop:  # keep no step's activations: rerun them
            estimates = torch.utils.checkpoint.checkpoint(self._transport, x, n, context, use_reentrant=False)
        else:
            estimates = self._transport(x, n, context)
        if is_vector:
            estimates = estimates.flatten(2)
        return FlowOutput(estimates, context=context, head=head)

    def _transport(self, x: Tensor, n: int, context: Optional[Tensor]) -> Tensor:
        """Every step's estimate ``(N, B, C, H, W)`` of a run from ``x``: the
        loop in the flow's own space, the reduced width's when set."""
        if self.reduction is None:
            return self._loop(x, n, context)
        z = self.reduction.down(x)
        return self.reduction.expand(x, z, self._loop(z, n, context))

    def _loop(self, x: Tensor, n: int, context: Optional[Tensor]) -> Tensor:
        conditioning = self.encoder.step_inputs(self.solver.times(n), context, x)
        return self.solver.loop(self._encoder_step, x, conditioning)

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

    # -- backwards (:mod:`fmkt_mm.flow.reverse`) -------------------------------------
    def reverse(self, x_teacher: Tensor, num_steps: Optional[int] = None,
                context: Optional[Tensor] = None, refine: int = 0) -> Tensor:
        """Map a teacher-space state ``Z_0`` back to the student space.

        Inverts :meth:`run` (``run(x).state``) step by step from ``t = 0`` to
        ``t = 1``: ``refine=0`` is the explicit reverse Euler / DDIM sampler,
        one meta-encoder call per step, exact up to an ``O(1/N)``
        discretisation error; ``refine=k`` adds ``k`` fixed-point iterations
        per step (``k N`` more calls), converging to the exact inverse of the
        ``N``-step forward map when ``Lip(v) / N < 1`` and possibly diverging
        otherwise. A conditional flow needs the ``context`` of the sample
        (:meth:`make_context` on its student representation): the inverse is
        taken at a fixed context. ``x_teacher``: ``(B, C)`` or ``(B, C, H,
        W)``; returns the same shape."""
        self.check_invertible('reverse sampler', estimate=False)
        self._check_input(x_teacher)
        n = self._check_steps(num_steps)
        if context is None and self.condition is not None:
            raise ValueError('a conditional flow is inverted at a fixed context: pass '
                             'context=flow.make_context(x_student) of the sample')
        is_vector = x_teacher.dim() == 2
        state = x_teacher[:, :, None, None] if is_vector else x_teacher
        conditioning = self.encoder.step_inputs(self.solver.times(n), context, state)
        state = self.solver.reverse(self._encoder_step, state, conditioning, refine)
        return state.flatten(1) if is_vector else state

    def roundtrip(self, x_student: Tensor, num_steps: Optional[int] = None,
                  x_teacher: Optional[Tensor] = None, refine: int = 0,
                  context: Optional[Tensor] = None,
                  labels: Optional[Tensor] = None) -> Dict[str, RoundTrip]:
        """Round-trip errors of the ``N``-step flow in both directions
        (:func:`~fmkt_mm.flow.reverse.roundtrip_errors`): ``'s2t2s'``
        (``X_S -> run -> reverse``) and ``'t2s2t'`` (``Y -> reverse -> run``,
        ``Y`` the ``x_teacher`` given in the flow's space, else the flow's
        own image ``run(X_S).state``). Both are zero for an exactly
        invertible flow."""
        self.check_invertible('round trip')
        n = self._check_steps(num_steps)
        context = self._resolve_context(x_student, context, labels)
        if x_teacher is not None:
            self._check_input(x_teacher)
        return roundtrip_errors(lambda x: self.run(x, n, context).state,
                                lambda y: self.reverse(y, n, context, refine), x_student, x_teacher)

    # -- the objective (:mod:`fmkt_mm.flow.objective`) --------------------------------
    def set_train_steps(self, n: int) -> None:
        """Train with ``n`` steps from now on. A flow that draws ``N`` from
        ``num_steps_choices`` draws from its configured choices up to ``n``
        (``(n,)`` when none is that small)."""
        self.num_steps = check_step_counts(n)[0]
        self.objective.limit_choices(n)

    def draw_num_steps(self) -> int:
        """A training run's ``N``: ``num_steps``, or drawn from the choices."""
        return self.objective.draw_num_steps(self.num_steps)

    def step_losses(self, out: FlowOutput, target: Optional[Tensor] = None,
                    labels: Optional[Tensor] = None, sample_mask: Optional[Tensor] = None,
                    extra: Optional[Tuple[Tensor, Optional[Tensor]]] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """:meth:`FMKTObjective.step_losses <fmkt_mm.flow.objective.FMKTObjective.step_losses>`
        of a run of this flow (pairs decoupled in training mode)."""
        return self.objective.step_losses(out, target, labels, sample_mask, extra, training=self.training)

    def roundtrip_loss(self, x_student: Tensor, out: FlowOutput) -> Tensor:
        """Cycle consistency of a training run: ``||reverse(Z_0) - X_S||^2 /
        ||X_S||^2`` (mean over the batch), differentiable, with the explicit
        reverse sampler over the same ``N`` steps. Penalising it drives the
        learnt field toward trajectories that the reverse sampler retraces
        (straighter, smaller Lipschitz constant), at the cost of ``N`` extra
        meta-encoder calls per iteration. A conditional flow is reversed at
        the context of ``out``."""
        self.check_invertible('cycle-consistency loss')
        back = self.reverse(out.state, out.num_steps, out.context)
        return self.objective.roundtrip_loss(back, x_student)
