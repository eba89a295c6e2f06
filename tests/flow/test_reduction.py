"""Flows on a channel-reduced projection (``width=r``): the written-out
formula ``X_S + up(zhat_i - down(X_S))``, the identity at initialisation,
recompute, memory kept for backward, and the refusals."""
import pytest
import torch
from test_transfer_loop import random_encoder, saved_bytes

from fmkt_mm.flow import FlowTransfer
from fmkt_mm.flow.reduction import ChannelReduction


@pytest.mark.parametrize('shape', [(3, 16), (2, 16, 5, 4)])
@pytest.mark.parametrize('path', ['rectified', 've'])
def test_reduced_flow_is_the_written_out_formula(shape, path):
    """Every estimate is ``x + up(zhat_i - z)`` with ``z = down(x)`` and
    ``zhat_i`` the estimates of the same flow run on ``z`` in ``r``
    channels; values and gradients."""
    torch.manual_seed(0)
    reduced = FlowTransfer(16, encoder=dict(type='mlp'), num_steps=3, path=path, width=4,
                           loss=dict(type='MSELoss'))
    assert reduced.encoder.channels == 4
    random_encoder(reduced)
    inner = FlowTransfer(4, encoder=reduced.encoder, num_steps=3, path=path)
    x = torch.randn(*shape, requires_grad=True)
    out = reduced.run(x)
    x4 = x if x.dim() == 4 else x[:, :, None, None]
    z = reduced.reduction.down(x4)
    zhat = inner.run(z).estimates
    moved = torch.stack([reduced.reduction.up(e - z) for e in zhat]) + x4
    expected = moved if x.dim() == 4 else moved.flatten(2)
    assert out.estimates.shape == (3, *shape)
    torch.testing.assert_close(out.estimates, expected, rtol=1e-5, atol=1e-6)
    params = [x] + list(reduced.parameters())
    got = torch.autograd.grad(out.estimates.square().sum(), params)
    want = torch.autograd.grad(expected.square().sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_untrained_reduced_flow_is_the_identity():
    """The meta-encoder's zero output layer moves nothing in the subspace,
    so every estimate is the student's representation itself, and the
    ensemble the heads of deploy mode 'flow' read keeps all channels."""
    flow = FlowTransfer(16, encoder=dict(type='mlp'), num_steps=4, width=4)
    x = torch.randn(2, 16, 3, 3)
    out = flow.run(x)
    for estimate in out.estimates:
        torch.testing.assert_close(estimate, x, rtol=0, atol=1e-6)


def test_recompute_of_a_reduced_flow_changes_nothing_and_keeps_less():
    """Recomputing covers the projections too (the same values and
    gradients), and a reduced flow keeps less for backward than the flow on
    all channels."""
    torch.manual_seed(0)
    kwargs = dict(encoder=dict(type='mlp'), num_steps=4, loss=dict(type='MSELoss'))
    full = FlowTransfer(32, **kwargs)
    plain, recomputed = FlowTransfer(32, width=8, **kwargs), FlowTransfer(32, width=8, recompute=True, **kwargs)
    random_encoder(plain)
    recomputed.load_state_dict(plain.state_dict())
    x, target = torch.randn(2, 32, 6, 6), torch.randn(2, 32, 6, 6)
    kept, losses, grads = [], [], []
    for flow in (full, plain, recomputed):
        xs = x.clone().requires_grad_()
        bytes_kept, loss = saved_bytes(lambda: flow.step_losses(flow.run(xs), target).sum())
        kept.append(bytes_kept)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, [xs] + list(flow.parameters())))
    assert torch.equal(losses[1], losses[2])
    for a, b in zip(grads[1], grads[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert kept[1] < 0.75 * kept[0] and kept[2] < kept[1], kept


def test_reduced_flows_refuse_what_they_cannot_do():
    flow = FlowTransfer(16, encoder=dict(type='mlp'), num_steps=2, width=4)
    x = torch.randn(2, 16)
    with pytest.raises(ValueError, match='width=4 moves it by a low-rank correction.*drop width'):
        flow.reverse(x)
    with pytest.raises(ValueError, match='round trip.*width=4'):
        flow.roundtrip(x)
    for width in (0, 16, 20):
        with pytest.raises(ValueError, match=rf'width={width} must lie in \[1, 16\)'):
            FlowTransfer(16, width=width)
    with pytest.raises(ValueError, match='shared ChannelReduction maps 8 channels but this flow carries 16'):
        FlowTransfer(16, width=ChannelReduction(8, 4))


def test_the_roundtrip_hook_refuses_reduced_flows_before_the_run():
    from types import SimpleNamespace

    from fmkt_mm.hooks import FlowRoundTripHook
    hook = FlowRoundTripHook()
    hook.before_run(SimpleNamespace(model=torch.nn.ModuleList([FlowTransfer(16, encoder=dict(type='mlp'))])))
    reduced = SimpleNamespace(model=torch.nn.ModuleList([FlowTransfer(16, encoder=dict(type='mlp'), width=4)]))
    with pytest.raises(ValueError, match='FlowRoundTripHook inverts.*width=4.*has none: remove the hook.*drop '
                                         'flow.width'):
        hook.before_run(reduced)


def test_a_shared_reduction_is_one_module():
    shared = ChannelReduction(16, 4)
    flows = [FlowTransfer(16, encoder=dict(type='mlp'), width=shared) for _ in range(2)]
    assert flows[0].reduction is flows[1].reduction is shared


def kept_storage_bytes(fn):
    """Bytes of the storages autograd keeps for backward while ``fn`` runs,
    each storage once."""
    kept = {}

    def pack(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return sum(kept.values()), out


@pytest.mark.parametrize('path', ['rectified', 've'])
def test_factored_steps_give_the_formed_steps_losses_and_keep_less(path):
    """``factored=True``: PKD's step losses from the factors equal those of
    the formed estimates (float32 rounding; the formula in float64 to 1e-12),
    with their gradients, the ensemble and the last state; the ``N``
    full-width estimates are never formed, so backward keeps less. A loss
    without a factored form, and a sample mask, read the formed steps."""
    from fmkt_mm.losses import PKDLoss
    from fmkt_mm.losses.pkd import EPS, biased_standardize, factored_standardised_mean_square
    torch.manual_seed(0)
    kwargs = dict(encoder=dict(type='mlp'), num_steps=4, path=path, width=8, loss=dict(type='PKDLoss', loss_weight=2.0))
    formed, factored = FlowTransfer(64, **kwargs), FlowTransfer(64, factored=True, **kwargs)
    random_encoder(formed)
    factored.load_state_dict(formed.state_dict())
    x, target = torch.randn(2, 64, 12, 12) * 2 + 1, torch.randn(2, 64, 12, 12)
    results = []
    for flow in (formed, factored):
        xs = x.clone().requires_grad_()
        out = flow.run(xs)
        assert (out.factored_steps is not None) == flow.factored
        kept, loss = kept_storage_bytes(lambda: (flow.step_losses(flow.run(xs), target) * torch.arange(1.0, 5.0)).sum())
        grads = torch.autograd.grad(loss, [xs] + list(flow.parameters()))
        results.append((loss, grads, out.ensemble, out.state, kept))
    (loss_a, grads_a, ens_a, state_a, kept_a), (loss_b, grads_b, ens_b, state_b, kept_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=0)
    for a, b in zip(grads_a, grads_b):
        assert float((b - a).norm()) <= 1e-4 * float(a.norm()) + 1e-8
    torch.testing.assert_close(ens_b, ens_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state_b, state_a, rtol=1e-5, atol=1e-5)
    assert kept_b < 0.8 * kept_a, (kept_a, kept_b)  # the steps' 4 maps against 2 (x, target) and 1 of N r channels

    # the formula itself, in float64
    out = factored.double().run(x.double())
    steps = out.factored_steps.materialise()
    count = 2 * 12 * 12
    eps = (count - 1) / count * EPS**2
    want = PKDLoss().compute_steps(steps, target.double()) / ((count - 1) / count / 2)
    got = factored_standardised_mean_square(x.double().flatten(2), out.factored.moved.flatten(3),
                                            out.factored.up_weight, biased_standardize(target.double(), eps).flatten(2),
                                            eps)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    factored.float()

    mse = FlowTransfer(64, factored=True, **dict(kwargs, loss=dict(type='MSELoss')))
    out = mse.run(x)
    torch.testing.assert_close(mse.step_losses(out, target), mse.loss_fn.forward_steps(out.estimates, target) / 4)
    mask = torch.tensor([True, False])
    out = factored.run(x)
    torch.testing.assert_close(factored.step_losses(out, target, sample_mask=mask),
                               formed.step_losses(formed.run(x), target, sample_mask=mask), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match='factored=True keeps the estimates of a reduced-width flow.*set width'):
        FlowTransfer(64, factored=True)
