"""The FM-KT objective of a flow: the metric loss on every step of a
training run, pair decoupling, the step-count draw, a curriculum mask and
the cycle-consistency loss. It holds no module of its own: the metric loss
is the flow's (``FlowTransfer.loss_fn``), which it reads."""
import functools
import inspect
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .output import FlowOutput
from .plan import check_step_counts


@functools.lru_cache(maxsize=None)
def _takes_scale(loss_type: type) -> bool:
    return 'scale' in inspect.signature(loss_type.forward_steps).parameters


class FMKTObjective:
    """The training objective of one flow (see the module docstring).

    Args:
        loss_fn: the metric loss ``D`` (a module with ``forward_steps``), or
            None for a flow that only transports.
        beta_d: pair decoupling; a fraction ``1 - beta_d`` of the batch gets
            its targets (and labels) permuted within that fraction.
        num_steps_choices: if given, each training run draws ``N`` from it.
    """

    def __init__(self, loss_fn: Optional[nn.Module], beta_d: float = 1.0,
                 num_steps_choices: Optional[Sequence[int]] = None) -> None:
        if not 0.0 <= beta_d <= 1.0:
            raise ValueError(f'beta_d must lie in [0, 1], got {beta_d}')
        self.loss_fn, self.beta_d = loss_fn, beta_d
        self.num_steps_choices = None if num_steps_choices is None else check_step_counts(*num_steps_choices)
        self._configured_choices = self.num_steps_choices

    def limit_choices(self, n: int) -> None:
        """Draw from the configured choices up to ``n`` from now on (``(n,)``
        when none is that small)."""
        if self._configured_choices is not None:
            self.num_steps_choices = tuple(c for c in self._configured_choices if c <= n) or (n, )

    def draw_num_steps(self, num_steps: int) -> int:
        """A training run's ``N``: ``num_steps``, or a draw from the choices."""
        if self.num_steps_choices is None:
            return num_steps
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
        if target.shape != out.steps_shape[1:]:
            raise ValueError(
                f'flow output {tuple(out.steps_shape[1:])} and teacher target {tuple(target.shape)} '
                f'differ in shape; configure an adapter (channels / spatial size) or a head '
                f'that maps the flow to the teacher\'s shape')

    def step_losses(self, out: FlowOutput, target: Optional[Tensor] = None,
                    labels: Optional[Tensor] = None, sample_mask: Optional[Tensor] = None,
                    extra: Optional[Tuple[Tensor, Optional[Tensor]]] = None,
                    training: bool = True) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``(N,)``: ``D(step_k, target) / N`` for every step ``k`` of a run
        (:meth:`~fmkt_mm.flow.FlowTransfer.run`), in one call of the metric
        loss on the stacked steps; its sum is the flow's loss. The one entry
        to the metric loss for every distiller. ``target=None``: the run's
        own detached ensemble (OFM-KT).

        ``extra``: one more ``(output, target)`` pair for the same metric
        (e.g. FM-KT^Theta's plain head against the detached ensemble),
        appended to the same call (a target of None: the run's detached
        ensemble); returns ``(step losses (N,), its loss)``, the latter
        undivided. Not with a sample mask or pair decoupling.

        A reduced-width flow's steps reach a metric loss that reads their
        factors (``forward_factored_steps``, e.g. PKD's) as factors.

        ``sample_mask``: ``(B,)`` booleans, per-sample weights in ``{0, 1}``
        (a curriculum): each step's loss is the metric's mean over the kept
        samples only. With no kept sample the losses are zero (and still
        connected to the graph, so every parameter receives a gradient).
        Pairs are decoupled in ``training`` only.
        """
        self._require_loss()
        if extra is not None:
            return self._with_extra(out, target, labels, sample_mask, extra, training)
        n = out.num_steps
        if target is None:
            target = out.ensemble.detach()
        else:
            self.check_target(target, out)
            target = target.detach() if target.requires_grad else target
        if training and self.beta_d < 1.0:
            target, labels = self.decouple_pairs(target, labels)
        factored = out.factored_steps
        if factored is not None and sample_mask is None and hasattr(self.loss_fn, 'forward_factored_steps'):
            # a reduced flow's steps from their factors, the N full-width estimates never formed
            return self.loss_fn.forward_factored_steps(factored, target, labels, scale=1.0 / n)
        steps = out.steps
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
                    sample_mask: Optional[Tensor], extra: Tuple[Tensor, Optional[Tensor]],
                    training: bool) -> Tuple[Tensor, Tensor]:
        if sample_mask is not None or (training and self.beta_d < 1.0):
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

    @staticmethod
    def roundtrip_loss(back: Tensor, x_student: Tensor) -> Tensor:
        """Cycle consistency: ``||back - X_S||^2 / ||X_S||^2``, mean over the
        batch, for ``back`` the reverse of a run's end state; ``X_S`` is the
        target (detached)."""
        x = x_student.detach().float()
        dims = tuple(range(1, x.dim()))
        err = (back.float() - x).pow(2).sum(dims) / x.pow(2).sum(dims).clamp(min=1e-12)
        return err.mean()
