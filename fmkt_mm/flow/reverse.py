"""Running a flow backwards: the reverse sampler and the round trip.

Running the flow backwards (:meth:`~fmkt_mm.flow.FlowTransfer.reverse`)
-----------------------------------------------------------------------
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
sampler undoes. :meth:`~fmkt_mm.flow.FlowTransfer.roundtrip` measures how far a flow is
from the ideal.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from torch import Tensor

from .plan import StepPlan, combine


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


def invert_steps(plans: Sequence[StepPlan], step: Callable[[Tensor, int], Tensor], state: Tensor,
                 refine: int = 0) -> Tensor:
    """Undo the steps of ``plans`` from an end state, last step first (see
    the module docstring): ``step(state, k)`` is step ``k``'s output at a
    state; ``refine`` extra fixed-point iterations per step. Returns the
    state before the first step (the start, still scaled)."""
    if refine < 0:
        raise ValueError(f'refine must be >= 0, got {refine}')
    for k in range(len(plans) - 1, -1, -1):  # the forward steps in the opposite order: i = 1 .. n
        plan, target = plans[k], state
        for _ in range(refine + 1):  # Z <- Z_{i-1} + G_i(Z), G_i(Z) = Z - Phi_i(Z)
            moved = combine(state, plan.next_state, step(state, k))
            state = target + (state - moved)
    return state


def roundtrip_errors(forward: Callable[[Tensor], Tensor], backward: Callable[[Tensor], Tensor],
                     x_student: Tensor, x_teacher: Optional[Tensor] = None) -> Dict[str, RoundTrip]:
    """Round-trip errors of a map in both directions: ``'s2t2s'``,
    ``backward(forward(X_S))`` against ``X_S``; ``'t2s2t'``,
    ``forward(backward(Y))`` against ``Y``, where ``Y`` is ``x_teacher`` or,
    when None, the map's own image ``forward(X_S)``."""
    image = forward(x_student)
    back = backward(image)
    errors = dict(s2t2s=RoundTrip.between(back, x_student))
    if x_teacher is None:
        errors['t2s2t'] = RoundTrip.between(forward(back), image)
    else:
        errors['t2s2t'] = RoundTrip.between(forward(backward(x_teacher)), x_teacher)
    return errors
