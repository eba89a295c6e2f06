"""The serial transfer loop of FM-KT and its sampler.

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
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import FLOW_PATHS, META_ENCODERS, MODELS
from ..utils import build_from_registry
from .conditions import build_condition
from .paths import FlowPath


@dataclass
class FlowOutput:
    """What one run of the transfer produced.

    ``estimates``: the endpoint estimates ``Xhat_i`` (first step first), in
    the flow's own space; ``steps``: ``head(Xhat_i)``; ``ensemble``: the mean
    of ``steps``; ``state``: the final state ``Z_0``; ``context``: the
    condition's context the run used (None for an unconditional flow).
    """
    estimates: List[Tensor]
    steps: List[Tensor]
    ensemble: Tensor
    state: Tensor
    context: Optional[Tensor] = None

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble in the flow's own space (before the head)."""
        return torch.stack(self.estimates).mean(0)


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


@MODELS.register_module()
class FlowTransfer(nn.Module):
    """A learnable flow from student to teacher representations.

    Args:
        channels: channels ``C`` of the representation (``(B, C)`` or
            ``(B, C, H, W)``); the flow is shape-preserving.
        path: ``'rectified'`` (default), ``'vp'``, ``'ve'`` or a dict with
            ``type`` and the path's arguments.
        encoder: meta-encoder config, ``dict(type='mlp'|'conv'|'transformer',
            ...)``; ``channels`` is filled in.
        num_steps: training steps ``N`` (and the default for sampling).
        num_steps_choices: if given, each training call draws ``N`` from it
            (e.g. ``(1, 2, 4, 8, 16)``).
        parameterization: ``'velocity'`` (the meta-encoder predicts
            ``dZ/dt``) or ``'endpoint'`` (it predicts ``X_T - Z``, a residual
            so that an untrained flow is the identity in both).
        update: ``'ddim'`` (re-interpolate onto the path) or ``'euler'``.
        loss: metric loss ``D`` (a config of a registered loss such as
            ``dict(type='PKDLoss')``), applied to every step with weight
            ``1 / N`` times its own ``loss_weight``.
        head: module mapping an endpoint estimate to the compared output
            (e.g. pool + linear for logits); identity when None.
        beta_d: pair decoupling; a fraction ``1 - beta_d`` of the batch gets
            its targets (and labels) permuted within that fraction.
        condition: a conditional flow network: a condition config
            (``dict(type='pooled' | 'level' | 'class', ...)``, a list of them,
            see :mod:`fmkt_mm.flow.conditions`) or a built condition module.
            The meta-encoder is then built with ``context_dim`` set to the
            condition's ``dim``, and every run computes the context from
            ``X_S`` (and the labels in training) unless one is passed.
        condition_level: the level / task index this flow passes to its
            condition (a ``'level'`` condition shared by several flows).
    """

    def __init__(self,
                 channels: int,
                 path: Union[str, dict, FlowPath] = 'rectified',
                 encoder: Union[str, dict, nn.Module] = 'mlp',
                 num_steps: int = 8,
                 num_steps_choices: Optional[Sequence[int]] = None,
                 parameterization: str = 'velocity',
                 update: str = 'ddim',
                 loss: Optional[Union[dict, nn.Module]] = None,
                 head: Optional[nn.Module] = None,
                 beta_d: float = 1.0,
                 condition: Optional[Union[str, dict, list, nn.Module]] = None,
                 condition_level: int = 0):
        super().__init__()
        self.channels = channels
        self.num_steps = self._check_steps(num_steps)
        self.num_steps_choices = None if num_steps_choices is None else \
            tuple(self._check_steps(n) for n in num_steps_choices)
        if parameterization not in ('velocity', 'endpoint'):
            raise ValueError(f"parameterization must be 'velocity' or 'endpoint', got {parameterization!r}")
        if update not in ('ddim', 'euler'):
            raise ValueError(f"update must be 'ddim' or 'euler', got {update!r}")
        if not 0.0 <= beta_d <= 1.0:
            raise ValueError(f'beta_d must lie in [0, 1], got {beta_d}')
        self.parameterization, self.update, self.beta_d = parameterization, update, beta_d
        self.path = build_from_registry(FLOW_PATHS, path, 'flow path')
        self.condition = build_condition(condition, channels)
        self.condition_level = condition_level
        context_dim = None if self.condition is None else self.condition.dim
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            extra = {} if context_dim is None else dict(context_dim=context_dim)
            self.encoder = build_from_registry(META_ENCODERS, encoder, 'meta-encoder', channels=channels,
                                               **extra)
        encoder_context = getattr(self.encoder, 'context_dim', context_dim)
        if encoder_context != context_dim:
            raise ValueError(f'the meta-encoder takes context_dim={encoder_context} but the flow\'s '
                             f'condition gives {context_dim}; leave context_dim out of the encoder '
                             f'config (it is set from the condition)')
        self.loss_fn = build_from_registry(MODELS, loss, 'loss') if loss is not None else None
        self.head = head if head is not None else nn.Identity()

    @staticmethod
    def _check_steps(n) -> int:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f'the number of flow steps must be an integer >= 1, got {n!r}')
        return n

    # -- the loop --------------------------------------------------------------
    def _check_input(self, x: Tensor):
        if x.dim() not in (2, 4) or x.shape[1] != self.channels:
            raise ValueError(
                f'FlowTransfer(channels={self.channels}) got a student representation of shape '
                f'{tuple(x.shape)}; expected (B, {self.channels}) or (B, {self.channels}, H, W). '
                f'Set channels={x.shape[1] if x.dim() > 1 else "?"} or configure an adapter that maps '
                f'the student to {self.channels} channels.')

    def predict_step(self, state: Tensor, t: float, context: Optional[Tensor] = None):
        """One meta-encoder call at time ``t``: returns ``(endpoint, velocity)``."""
        time_dtype = torch.promote_types(state.dtype, torch.float32)  # never embed time in half precision
        t_batch = torch.full((state.shape[0],), t, device=state.device, dtype=time_dtype)
        t = torch.tensor(t, device=state.device, dtype=time_dtype)
        out = self.encoder(state * self.path.input_scale(t), t_batch, context)
        if self.parameterization == 'velocity':
            return self.path.endpoint_from_velocity(state, out, t), out
        endpoint = state + out
        return endpoint, self.path.velocity_from_endpoint(state, endpoint, t)

    def make_context(self, x_student: Tensor, labels: Optional[Tensor] = None) -> Optional[Tensor]:
        """The condition's context ``(B, dim)`` for ``X_S`` (None for an
        unconditional flow). Labels are read in training only."""
        if self.condition is None:
            return None
        return self.condition(x_student, level=self.condition_level, labels=labels, head=self.head)

    def _resolve_context(self, x_student, context, labels):
        if context is None and self.condition is not None:
            return self.make_context(x_student, labels)
        return context

    def forward_step(self, state: Tensor, i: int, n: int, context: Optional[Tensor] = None):
        """Step ``i`` of ``n`` (``t = i/n -> (i-1)/n``): returns ``(next_state,
        endpoint, velocity)``. The last step (``i = 1``) lands on its endpoint
        estimate."""
        t, t_next = i / n, (i - 1) / n
        endpoint, velocity = self.predict_step(state, t, context)
        if i > 1:
            return self.path.step(state, endpoint, velocity, t, t_next, self.update), endpoint, velocity
        return endpoint, endpoint, velocity

    def run(self, x_student: Tensor, num_steps: Optional[int] = None,
            context: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> FlowOutput:
        """Transport ``x_student`` in ``num_steps`` steps (differentiable).

        A conditional flow computes its context from ``x_student`` (and
        ``labels`` in training) unless ``context`` is given."""
        self._check_input(x_student)
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        context = self._resolve_context(x_student, context, labels)
        state = self.path.start_state(x_student)
        estimates, steps = [], []
        for i in range(n, 0, -1):
            state, endpoint, _ = self.forward_step(state, i, n, context)
            estimates.append(endpoint)
            steps.append(self.head(endpoint))
        return FlowOutput(estimates=estimates, steps=steps, ensemble=torch.stack(steps).mean(0), state=state,
                          context=context)

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
        state = x_teacher
        for i in range(1, n + 1):
            target = state
            for _ in range(refine + 1):  # Z <- Z_{i-1} + G_i(Z), G_i(Z) = Z - Phi_i(Z)
                moved, _, _ = self.forward_step(state, i, n, context)
                state = target + (state - moved)
        return state / self.path.b(1.0).to(state.dtype)  # undo start_state: Z_1 = b(1) X_S

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

    # -- training --------------------------------------------------------------
    def draw_num_steps(self) -> int:
        if self.num_steps_choices is None:
            return self.num_steps
        # torch's generator, so that runs seeded through MMEngine repeat exactly
        return self.num_steps_choices[int(torch.randint(len(self.num_steps_choices), ()).item())]

    def decouple_pairs(self, target: Tensor, labels: Optional[Tensor]):
        """Permute the targets of a random ``1 - beta_d`` fraction of the batch."""
        b = target.shape[0]
        n_shuffled = int(round((1.0 - self.beta_d) * b))
        if n_shuffled < 2:
            return target, labels
        chosen = torch.randperm(b, device=target.device)[:n_shuffled]
        permuted = chosen[torch.randperm(n_shuffled, device=target.device)]
        index = torch.arange(b, device=target.device)
        index[chosen] = permuted
        return target[index], (labels[index] if labels is not None else None)

    def loss(self, x_student: Tensor, target: Optional[Tensor] = None,
             labels: Optional[Tensor] = None, num_steps: Optional[int] = None,
             context: Optional[Tensor] = None, prefix: str = 'loss_flow',
             sample_mask: Optional[Tensor] = None):
        """Run the serial loop and apply the metric loss to every step.

        ``target=None`` is the online variant (OFM-KT): the flow's own detached
        ensemble is the target of every step. ``labels`` also feed a class
        condition in training.

        Returns ``(losses, output)``: ``losses`` maps ``f'{prefix}_step{k}'``
        (k = 1 for the first step) to ``D(step_k, target) / N``; their sum is
        the flow's loss. ``sample_mask``: see :meth:`step_losses`.
        """
        n = self._check_steps(num_steps) if num_steps is not None else self.draw_num_steps()
        self._require_loss()
        out = self.run(x_student, n, context, labels)
        return self.step_losses(out, target, labels, prefix, sample_mask), out

    def _require_loss(self):
        if self.loss_fn is None:
            raise ValueError('FlowTransfer.loss needs a metric loss: build the flow with '
                             "loss=dict(type='KDLoss') (or DKDLoss, DISTLoss, PKDLoss, MSELoss)")

    def step_losses(self, out: Optional[FlowOutput], target: Optional[Tensor] = None,
                    labels: Optional[Tensor] = None, prefix: str = 'loss_flow',
                    sample_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The metric loss of every step of a run (see :meth:`loss`).

        ``sample_mask``: ``(B,)`` booleans, per-sample weights in ``{0, 1}``
        (a curriculum): each step's loss is the metric's mean over the kept
        samples only. With no kept sample the losses are zero (and still
        connected to the graph, so every parameter receives a gradient).
        """
        self._require_loss()
        n = len(out.steps)
        if target is None:
            target = out.ensemble.detach()
        else:
            target = target.detach()
            if target.shape != out.ensemble.shape:
                raise ValueError(
                    f'flow output {tuple(out.ensemble.shape)} and teacher target {tuple(target.shape)} '
                    f'differ in shape; configure an adapter (channels / spatial size) or a head '
                    f'that maps the flow to the teacher\'s shape')
        if self.training and self.beta_d < 1.0:
            target, labels = self.decouple_pairs(target, labels)
        steps = out.steps
        if sample_mask is not None:
            sample_mask = sample_mask.reshape(-1).bool()
            if sample_mask.shape[0] != target.shape[0]:
                raise ValueError(f'sample_mask has {sample_mask.shape[0]} entries for a batch of '
                                 f'{target.shape[0]}')
            if not bool(sample_mask.any()):
                return {f'{prefix}_step{k}': 0.0 * s.sum() for k, s in enumerate(steps, start=1)}
            target, steps = target[sample_mask], [s[sample_mask] for s in steps]
            labels = labels[sample_mask] if labels is not None else None
        losses: Dict[str, Tensor] = {}
        for k, step_out in enumerate(steps, start=1):
            losses[f'{prefix}_step{k}'] = self.loss_fn(step_out, target, labels) / n
        return losses

    def roundtrip_loss(self, x_student: Tensor, out: FlowOutput) -> Tensor:
        """Cycle consistency of a training run: ``||reverse(Z_0) - X_S||^2 /
        ||X_S||^2`` (mean over the batch), differentiable, with the explicit
        reverse sampler over the same ``N`` steps. Penalising it drives the
        learnt field toward trajectories that the reverse sampler retraces
        (straighter, smaller Lipschitz constant), at the cost of ``N`` extra
        meta-encoder calls per iteration. ``X_S`` is the target (detached);
        a conditional flow is reversed at the context of ``out``."""
        back = self.reverse(out.state, len(out.steps), out.context)
        x = x_student.detach().float()
        dims = tuple(range(1, x.dim()))
        err = (back.float() - x).pow(2).sum(dims) / x.pow(2).sum(dims).clamp(min=1e-12)
        return err.mean()
