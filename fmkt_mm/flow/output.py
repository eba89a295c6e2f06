"""What one run of a flow produced: :class:`FlowOutput`."""
from functools import cached_property
from typing import TYPE_CHECKING, Callable, List, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .reduction import FactoredSteps


class FlowOutput:
    """What one run of the transfer produced.

    ``estimates``: the endpoint estimates ``Xhat_i`` stacked, first step
    first, ``(N, B, ...)`` in the flow's own space; ``context``: the
    condition's context the run used (None for an unconditional flow).
    Computed when first read (a step that reads none of them dispatches
    none): ``steps``, the head on every estimate, ``(N, B, ...)`` (the
    estimates themselves without a head); ``ensemble``, the mean of
    ``steps``; ``state``, the final state ``Z_0`` (the last estimate).

    A reduced-width flow built with ``factored=True`` gives ``factored`` instead
    (:class:`~fmkt_mm.flow.reduction.FactoredSteps`): the estimates are
    formed only when read, the implicit ensemble and the last state from the
    factors (one full-width map each), and a loss that reads factors takes
    :attr:`factored_steps`.
    """

    def __init__(self, estimates: Optional[Tensor] = None, steps: Optional[Tensor] = None,
                 context: Optional[Tensor] = None, head: Optional[Callable[[Tensor], Tensor]] = None,
                 factored: Optional['FactoredSteps'] = None) -> None:
        if (estimates is None) == (factored is None):
            raise ValueError('a FlowOutput holds its estimates or their factors, one of the two')
        self.context, self._head, self.factored = context, head, factored
        if estimates is not None:
            self.__dict__['estimates'] = estimates
        if steps is not None:
            self.__dict__['steps'] = steps

    @cached_property
    def estimates(self) -> Tensor:
        return self.factored.materialise()

    @cached_property
    def steps(self) -> Tensor:
        return self.estimates if self._head is None else self._head(self.estimates)

    @property
    def factored_steps(self) -> Optional['FactoredSteps']:
        """The steps as factors: a reduced flow's run without a head whose
        steps were not replaced (:meth:`with_steps`); else None."""
        if self.factored is None or self._head is not None or 'steps' in self.__dict__:
            return None
        return self.factored

    @property
    def num_steps(self) -> int:
        return self.factored.moved.shape[0] if self.factored is not None else self.estimates.shape[0]

    @property
    def steps_shape(self) -> torch.Size:
        """``steps``' shape, without forming them where they are factors."""
        factored = self.factored_steps
        return factored.shape if factored is not None else self.steps.shape

    @cached_property
    def ensemble(self) -> Tensor:
        factored = self.factored_steps
        return factored.mean() if factored is not None else self.steps.mean(0)

    @cached_property
    def state(self) -> Tensor:
        return self.factored.last() if self.factored is not None else self.estimates[-1]

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble in the flow's own space (before the head)."""
        return self.factored.mean() if self.factored is not None else self.estimates.mean(0)

    def with_steps(self, steps: Tensor) -> 'FlowOutput':
        """This run with ``steps`` in place of the head's (an owner that maps
        the estimates itself, e.g. by a per-teacher adapter)."""
        if self.factored is not None:
            return FlowOutput(steps=steps, context=self.context, factored=self.factored)
        return FlowOutput(self.estimates, steps, self.context)

    def split(self, parts: int) -> List['FlowOutput']:
        """A run on ``parts`` stacked copies of a batch (``parts * B`` rows)
        as one output per copy, first copy first."""
        rows = self.factored.base.shape[0] if self.factored is not None else self.estimates.shape[1]
        if rows % parts:
            raise ValueError(f'a run on {rows} rows does not split into {parts} equal parts')
        b = rows // parts
        out = []
        for j in range(parts):
            rows_j = slice(j * b, (j + 1) * b)
            steps = self.__dict__.get('steps')
            context = None if self.context is None else self.context[rows_j]
            steps = None if steps is None else steps[:, rows_j]
            if self.factored is not None:
                out.append(FlowOutput(steps=steps, context=context, head=self._head,
                                      factored=self.factored.rows(rows_j)))
            else:
                out.append(FlowOutput(self.estimates[:, rows_j], steps, context, self._head))
        return out
