"""Running a flow backwards: the reverse sampler and the round trip.

Running the flow backwards (:meth:`ReverseSampler.reverse`)
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
sampler undoes. :meth:`ReverseSampler.roundtrip` measures how far a flow is
from the ideal.
"""
from dataclasses import dataclass
from typing import Dict, Optional

from torch import Tensor

from .plan import combine


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


class ReverseSampler:
    """The backward direction of :class:`~fmkt_mm.flow.FlowTransport` (a
    mixin: it uses the transport's plan, encoder step and checks)."""

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
        self._check_invertible('reverse sampler')
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
        conditioning = self.encoder.step_inputs([p.t for p in plans], context, state)
        for k in range(n - 1, -1, -1):  # the forward steps in the opposite order: i = 1 .. n
            plan, target = plans[k], state
            for _ in range(refine + 1):  # Z <- Z_{i-1} + G_i(Z), G_i(Z) = Z - Phi_i(Z)
                out = self._encoder_step(self._scaled(state, plan), conditioning[k])
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
