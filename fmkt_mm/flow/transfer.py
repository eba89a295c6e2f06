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
"""
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import FLOW_PATHS, META_ENCODERS, MODELS
from ..utils import build_from_registry
from .paths import FlowPath


@dataclass
class FlowOutput:
    """What one run of the transfer produced.

    ``estimates``: the endpoint estimates ``Xhat_i`` (first step first), in
    the flow's own space; ``steps``: ``head(Xhat_i)``; ``ensemble``: the mean
    of ``steps``; ``state``: the final state ``Z_0``.
    """
    estimates: List[Tensor]
    steps: List[Tensor]
    ensemble: Tensor
    state: Tensor

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble in the flow's own space (before the head)."""
        return torch.stack(self.estimates).mean(0)


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
                 beta_d: float = 1.0):
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
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            self.encoder = build_from_registry(META_ENCODERS, encoder, 'meta-encoder', channels=channels)
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

    def run(self, x_student: Tensor, num_steps: Optional[int] = None,
            context: Optional[Tensor] = None) -> FlowOutput:
        """Transport ``x_student`` in ``num_steps`` steps (differentiable)."""
        self._check_input(x_student)
        n = self._check_steps(num_steps if num_steps is not None else self.num_steps)
        state = self.path.start_state(x_student)
        estimates, steps = [], []
        for i in range(n, 0, -1):
            t, t_next = i / n, (i - 1) / n
            endpoint, velocity = self.predict_step(state, t, context)
            estimates.append(endpoint)
            steps.append(self.head(endpoint))
            if i > 1:
                state = self.path.step(state, endpoint, velocity, t, t_next, self.update)
            else:
                state = endpoint  # the last step lands on its endpoint estimate
        return FlowOutput(estimates=estimates, steps=steps, ensemble=torch.stack(steps).mean(0), state=state)

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
             context: Optional[Tensor] = None, prefix: str = 'loss_flow'):
        """Run the serial loop and apply the metric loss to every step.

        ``target=None`` is the online variant (OFM-KT): the flow's own detached
        ensemble is the target of every step.

        Returns ``(losses, output)``: ``losses`` maps ``f'{prefix}_step{k}'``
        (k = 1 for the first step) to ``D(step_k, target) / N``; their sum is
        the flow's loss.
        """
        if self.loss_fn is None:
            raise ValueError('FlowTransfer.loss needs a metric loss: build the flow with '
                             "loss=dict(type='KDLoss') (or DKDLoss, DISTLoss, PKDLoss, MSELoss)")
        n = self._check_steps(num_steps) if num_steps is not None else self.draw_num_steps()
        out = self.run(x_student, n, context)
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
        losses: Dict[str, Tensor] = {}
        for k, step_out in enumerate(out.steps, start=1):
            losses[f'{prefix}_step{k}'] = self.loss_fn(step_out, target, labels) / n
        return losses, out
