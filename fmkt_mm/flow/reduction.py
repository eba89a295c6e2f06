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
        moved = self.up((estimates - z).flatten(0, 1)).unflatten(0, estimates.shape[:2])
        return moved + x


__all__ = ['ChannelReduction']
