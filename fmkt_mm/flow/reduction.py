"""Flows on a channel-reduced projection of the representation.

A flow carries its state through ``N`` meta-encoder calls, and training
keeps every call's activations: on an FPN level of ``C = 256`` channels the
encoder's hidden maps are what fills the memory. With ``width=r`` the flow
runs in a learned ``r``-channel projection instead and moves the
representation by a low-rank correction::

    z       = down(X_S)                      # (B, r, H, W), a 1x1 convolution
    zhat_i  = the N-step flow's estimates from z, in r channels
    Xhat_i  = X_S + up(zhat_i - z)           # back in the student's C channels

Every estimate keeps the student's representation and adds what the flow
moved within the subspace, so an untrained flow (zero output layer) is still
the identity and the heads of deploy mode ``'flow'`` read all ``C`` channels.
``up`` is linear, so the implicit ensemble commutes with it. The map
``X_S -> Xhat`` is no longer the path's serial transport in the student's
space, so a reduced flow has no reverse sampler (round trips are refused).
"""
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn


class ChannelReduction(nn.Module):
    """``down`` (``C -> r``) and ``up`` (``r -> C``) 1x1 convolutions around a
    flow of width ``r`` (see the module docstring). A flow builds its own
    from ``width=r``; one built module can be shared by several flows (the
    levels of a shared meta-encoder)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        if not 1 <= width < channels:
            raise ValueError(f'width={width} must lie in [1, {channels}) for a flow on {channels} channels '
                             f'(the flow runs in a width-channel projection); drop width to run it on '
                             f'all {channels}')
        self.channels, self.width = channels, width
        self.down = nn.Conv2d(channels, width, 1)
        self.up = nn.Conv2d(width, channels, 1, bias=False)

    def expand(self, x: Tensor, z: Tensor, estimates: Tensor) -> Tensor:
        """``x + up(estimates - z)``: stacked estimates ``(N, B, r, H, W)`` of
        the reduced flow started at ``z = down(x)``, back in ``x``'s
        ``(N, B, C, H, W)`` space (one convolution on ``N * B`` rows)."""
        return self.factored(x, z, estimates).materialise()

    def factored(self, x: Tensor, z: Tensor, estimates: Tensor) -> 'FactoredSteps':
        """The same estimates kept factored: ``x`` and the movements
        ``estimates - z`` (:class:`FactoredSteps`)."""
        return FactoredSteps(x, estimates - z, self)


class FactoredSteps(NamedTuple):
    """The stacked estimates ``base + up(moved)`` of a reduced flow, kept as
    their factors: ``base`` ``(B, C, *S)`` (the representation), ``moved``
    ``(N, B, r, *S)`` (what the flow moved, in its ``r`` channels) and the
    reduction whose ``up`` maps ``r`` channels to ``C``. A loss that reads
    the factors (:meth:`PKDLoss.forward_factored_steps
    <fmkt_mm.losses.PKDLoss.forward_factored_steps>`) never forms the ``N``
    full-width estimates; :meth:`materialise` forms them."""
    base: Tensor
    moved: Tensor
    reduction: ChannelReduction

    @property
    def shape(self) -> torch.Size:
        """The estimates' shape, ``(N, B, C, *S)``."""
        return torch.Size((self.moved.shape[0], *self.base.shape))

    @property
    def up_weight(self) -> Tensor:
        """``up``'s ``(C, r)`` matrix."""
        return self.reduction.up.weight.flatten(1)

    def materialise(self) -> Tensor:
        """The stacked estimates ``(N, B, C, *S)`` (one convolution on ``N * B`` rows)."""
        moved = self.moved
        return self.reduction.up(moved.flatten(0, 1)).unflatten(0, moved.shape[:2]) + self.base

    def mean(self) -> Tensor:
        """The estimates' mean over the steps, ``base + up(mean(moved))`` (``up`` is linear)."""
        return self.reduction.up(self.moved.mean(0)) + self.base

    def last(self) -> Tensor:
        """The last step's estimate."""
        return self.reduction.up(self.moved[-1]) + self.base

    def rows(self, rows: slice) -> 'FactoredSteps':
        """The factors of batch rows ``rows``."""
        return FactoredSteps(self.base[rows], self.moved[:, rows], self.reduction)

    def positions(self, start: int, stop: int, shape: Sequence[int]) -> 'FactoredSteps':
        """The factors of flattened positions ``start:stop`` of a ``(.., 1, P)``
        token map, reshaped to the spatial ``shape``."""
        base, moved = self.base[..., start:stop], self.moved[..., start:stop]
        return FactoredSteps(base.reshape(*base.shape[:2], *shape), moved.reshape(*moved.shape[:3], *shape),
                             self.reduction)


__all__ = ['ChannelReduction', 'FactoredSteps']
