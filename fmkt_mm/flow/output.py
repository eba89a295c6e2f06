"""What one run of a flow produced: :class:`FlowOutput`."""
from functools import cached_property
from typing import Callable, List, Optional

from torch import Tensor


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
