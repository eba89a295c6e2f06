"""The FM-KT objective on top of the transport: the metric loss on every
step of a training run, pair decoupling, the step-count draw, a curriculum
mask and the cycle-consistency loss."""
import functools
import inspect
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .catalog import LOSSES
from .transport import FlowOutput


@functools.lru_cache(maxsize=None)
def _takes_scale(loss_type: type) -> bool:
    return 'scale' in inspect.signature(loss_type.forward_steps).parameters


class FMKTObjective:
    """The training side of :class:`~fmkt_mm.flow.FlowTransfer` (a mixin of
    a :class:`~fmkt_mm.flow.transport.FlowTransport`): ``loss_fn``,
    ``beta_d`` and the step choices are set by :meth:`init_objective`."""

    def init_objective(self, loss: Optional[Union[dict, nn.Module]], beta_d: float,
                       num_steps_choices: Optional[Sequence[int]]) -> None:
        if not 0.0 <= beta_d <= 1.0:
            raise ValueError(f'beta_d must lie in [0, 1], got {beta_d}')
        self.beta_d = beta_d
        self.num_steps_choices = None if num_steps_choices is None else \
            tuple(self._check_steps(n) for n in num_steps_choices)
        self._configured_choices = self.num_steps_choices
        self.loss_fn = LOSSES.build(loss)

    def set_train_steps(self, n: int) -> None:
        """Train with ``n`` steps from now on. A flow that draws ``N`` from
        ``num_steps_choices`` draws from its configured choices up to ``n``
        (``(n,)`` when none is that small)."""
        self.num_steps = self._check_steps(n)
        if self._configured_choices is not None:
            self.num_steps_choices = tuple(c for c in self._configured_choices if c <= n) or (n, )

    def draw_num_steps(self) -> int:
        if self.num_steps_choices is None:
            return self.num_steps
        # torch's generator, so that runs seeded through MMEngine repeat exactly
        return self.num_steps_choices[int(torch.randint(len(self.num_steps_choices), ()).item())]

    def decouple_pairs(self, target: Tensor, labels: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
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

    def _require_loss(self) -> None:
        if self.loss_fn is None:
            raise ValueError('the flow\'s step losses need a metric loss: build the flow with '
                             "loss=dict(type='KDLoss') (or DKDLoss, DISTLoss, PKDLoss, MSELoss)")

    @staticmethod
    def check_target(target: Tensor, out: FlowOutput) -> None:
        if target.shape != out.steps.shape[1:]:
            raise ValueError(
                f'flow output {tuple(out.steps.shape[1:])} and teacher target {tuple(target.shape)} '
                f'differ in shape; configure an adapter (channels / spatial size) or a head '
                f'that maps the flow to the teacher\'s shape')

    def step_losses(self, out: FlowOutput, target: Optional[Tensor] = None,
                    labels: Optional[Tensor] = None, sample_mask: Optional[Tensor] = None,
                    extra: Optional[Tuple[Tensor, Optional[Tensor]]] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``(N,)``: ``D(step_k, target) / N`` for every step ``k`` of a run
        (:meth:`~fmkt_mm.flow.FlowTransport.run`), in one call of the metric
        loss on the stacked steps; its sum is the flow's loss. The one entry
        to the metric loss for every distiller. ``target=None``: the run's
        own detached ensemble (OFM-KT).

        ``extra``: one more ``(output, target)`` pair for the same metric
        (e.g. FM-KT^Theta's plain head against the detached ensemble),
        appended to the same call (a target of None: the run's detached
        ensemble); returns ``(step losses (N,), its loss)``, the latter
        undivided. Not with a sample mask or pair decoupling.

        ``sample_mask``: ``(B,)`` booleans, per-sample weights in ``{0, 1}``
        (a curriculum): each step's loss is the metric's mean over the kept
        samples only. With no kept sample the losses are zero (and still
        connected to the graph, so every parameter receives a gradient).
        """
        self._require_loss()
        if extra is not None:
            return self._with_extra(out, target, labels, sample_mask, extra)
        steps = out.steps
        n = steps.shape[0]
        if target is None:
            target = out.ensemble.detach()
        else:
            self.check_target(target, out)
            target = target.detach() if target.requires_grad else target
        if self.training and self.beta_d < 1.0:
            target, labels = self.decouple_pairs(target, labels)
        if sample_mask is not None:
            sample_mask = sample_mask.reshape(-1).bool()
            if sample_mask.shape[0] != target.shape[0]:
                raise ValueError(f'sample_mask has {sample_mask.shape[0]} entries for a batch of '
                                 f'{target.shape[0]}')
            if not bool(sample_mask.any()):
                return 0.0 * steps.flatten(1).sum(1)
            target, steps = target[sample_mask], steps[:, sample_mask]
            labels = labels[sample_mask] if labels is not None else None
        return self.scaled_step_losses(steps, target, labels, 1.0 / n)

    def _with_extra(self, out: FlowOutput, target: Optional[Tensor], labels: Optional[Tensor],
                    sample_mask: Optional[Tensor], extra: Tuple[Tensor, Optional[Tensor]]) -> Tuple[Tensor, Tensor]:
        if sample_mask is not None or (self.training and self.beta_d < 1.0):
            raise ValueError('step_losses(extra=...) shares one metric call between the steps and '
                             'another output; it cannot mask samples or decouple pairs')
        n = out.steps.shape[0]
        output, extra_target = extra
        ensemble = out.ensemble.detach()
        outputs = torch.cat([out.steps, output[None]])
        if target is None and extra_target is None:  # OFM-KT: the ensemble is every row's target
            targets = ensemble
        else:
            if target is None:
                target = ensemble
            else:
                self.check_target(target, out)
            extra_target = ensemble if extra_target is None else extra_target
            targets = torch.cat([target.detach().expand_as(out.steps), extra_target[None]])
        values = self.loss_fn.forward_steps(outputs, targets, labels)
        return values[:n] / n, values[n]

    def scaled_step_losses(self, steps: Tensor, target: Tensor, labels: Optional[Tensor],
                           scale: float) -> Tensor:
        """``scale * loss_fn.forward_steps(steps, target, labels)``; folded
        into the loss's own weight when its ``forward_steps`` takes ``scale``
        (the package's losses do), so that no operator is spent on it."""
        if scale == 1.0:
            return self.loss_fn.forward_steps(steps, target, labels)
        if _takes_scale(type(self.loss_fn)):
            return self.loss_fn.forward_steps(steps, target, labels, scale=scale)
        return self.loss_fn.forward_steps(steps, target, labels) * scale

    def roundtrip_loss(self, x_student: Tensor, out: FlowOutput) -> Tensor:
        """Cycle consistency of a training run: ``||reverse(Z_0) - X_S||^2 /
        ||X_S||^2`` (mean over the batch), differentiable, with the explicit
        reverse sampler over the same ``N`` steps. Penalising it drives the
        learnt field toward trajectories that the reverse sampler retraces
        (straighter, smaller Lipschitz constant), at the cost of ``N`` extra
        meta-encoder calls per iteration. ``X_S`` is the target (detached);
        a conditional flow is reversed at the context of ``out``."""
        self._check_serial('cycle-consistency loss')
        back = self.reverse(out.state, out.steps.shape[0], out.context)
        x = x_student.detach().float()
        dims = tuple(range(1, x.dim()))
        err = (back.float() - x).pow(2).sum(dims) / x.pow(2).sum(dims).clamp(min=1e-12)
        return err.mean()
