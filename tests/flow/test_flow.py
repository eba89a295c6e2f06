"""The flow core: paths, meta-encoders and the serial transfer loop."""
import pytest
import torch
from flow_steps import step_losses  # noqa: E402
from torch import nn

from fmkt_mm.flow import FlowTransfer, RectifiedPath, VEPath, VPPath
from fmkt_mm.registry import FLOW_PATHS, META_ENCODERS, MODELS

PATH_OBJECTS = {
    'rectified': RectifiedPath(),
    'vp-linear': VPPath('linear'),
    'vp-trig': VPPath('trig'),
    've': VEPath(),
}


class OracleEncoder(nn.Module):
    """Returns the exact velocity (or endpoint residual) toward a known teacher."""

    def __init__(self, path, x_teacher, parameterization):
        super().__init__()
        self.path, self.x_teacher, self.parameterization = path, x_teacher, parameterization
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, scaled_state, t, context=None):
        t = t[0].double()
        state = scaled_state / self.path.input_scale(t)  # undo the input scaling
        if self.parameterization == 'endpoint':
            return self.x_teacher - state
        return self.path.velocity_from_endpoint(state, self.x_teacher, t)


@pytest.mark.parametrize('path_name', sorted(PATH_OBJECTS))
def test_conversions_are_inverse(path_name):
    path = PATH_OBJECTS[path_name]
    torch.manual_seed(0)
    x_t, x_s = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for t in (0.05, 0.3, 0.5, 0.9, 1.0):
        t = torch.tensor(t, dtype=torch.float64)
        z = path.interpolate(x_t, x_s, t)
        v = path.true_velocity(x_t, x_s, t)
        torch.testing.assert_close(path.endpoint_from_velocity(z, v, t), x_t)
        torch.testing.assert_close(path.source_from_endpoint(z, x_t, t), x_s)
        torch.testing.assert_close(path.velocity_from_endpoint(z, x_t, t), v)


@pytest.mark.parametrize('path_name', sorted(PATH_OBJECTS))
def test_path_derivatives_match_finite_differences(path_name):
    path = PATH_OBJECTS[path_name]
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    h = 1e-6
    torch.testing.assert_close(path.da(t), (path.a(t + h) - path.a(t - h)) / (2 * h), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(path.db(t), (path.b(t + h) - path.b(t - h)) / (2 * h), rtol=1e-5, atol=1e-5)
    # at t = 0 every path is the pure teacher
    assert float(path.a(0.0)) == pytest.approx(1.0)
    if path_name != 've':
        assert float(path.b(0.0)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('path_name', sorted(PATH_OBJECTS))
@pytest.mark.parametrize('num_steps', [1, 2, 4, 8])
@pytest.mark.parametrize('parameterization', ['velocity', 'endpoint'])
@pytest.mark.parametrize('shape', [(4, 6), (2, 3, 5, 5)])
def test_oracle_sampling_lands_on_teacher(path_name, num_steps, parameterization, shape):
    path = PATH_OBJECTS[path_name]
    torch.manual_seed(1)
    x_s, x_t = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    flow = FlowTransfer(shape[1], path=path, encoder=OracleEncoder(path, x_t, parameterization),
                        num_steps=num_steps, parameterization=parameterization)
    out = flow.run(x_s)
    ensemble, steps = out.ensemble, out.steps
    assert len(steps) == num_steps
    for step in steps:  # every step's estimate is the teacher
        torch.testing.assert_close(step, x_t)
    torch.testing.assert_close(ensemble, x_t)
    torch.testing.assert_close(flow.run(x_s).state, x_t)


@pytest.mark.parametrize('num_steps', [1, 2, 4, 8])
def test_euler_with_constant_true_velocity_is_exact_on_rectified_path(num_steps):
    """The authors' update ``Z <- Z - v / N`` with ``v = X_S - X_T``."""
    torch.manual_seed(2)
    x_s, x_t = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)

    class ConstantVelocity(nn.Module):
        def forward(self, state, t, context=None):
            return x_s - x_t

    flow = FlowTransfer(4, encoder=ConstantVelocity(), num_steps=num_steps, update='euler')
    out = flow.run(x_s)
    torch.testing.assert_close(out.state, x_t)
    torch.testing.assert_close(out.ensemble, x_t)


@pytest.mark.parametrize('encoder', ['mlp', 'conv', 'transformer'])
@pytest.mark.parametrize('shape', [(3, 8), (2, 8, 14, 14), (2, 8, 5, 6)])
def test_encoders_preserve_shape_and_start_as_identity(encoder, shape):
    flow = FlowTransfer(8, encoder=dict(type=encoder), num_steps=4, loss=dict(type='MSELoss'))
    x = torch.randn(shape)
    out = flow.run(x)
    ensemble, steps = out.ensemble, out.steps
    assert ensemble.shape == x.shape and all(s.shape == x.shape for s in steps)
    torch.testing.assert_close(ensemble, x)  # zero-initialised output: no velocity yet


def test_transformer_shifted_window_mask_blocks_wrapped_regions():
    torch.manual_seed(0)
    enc = META_ENCODERS.build(dict(type='transformer', channels=8, num_heads=2, window=4))
    block = enc.blocks[0]
    assert block.shift
    mask = block._shift_mask(8, 8, 4, 2, torch.device('cpu'))
    assert mask.shape == (4, 16, 16)
    assert mask[0].all()  # the top-left window holds one region only
    assert not mask[-1].all()  # the bottom-right window mixes wrapped regions


def reference_window_block(block, x):
    """A window-attention block written out in full: always padded,
    partitioned window by window, the shift mask rebuilt on every call."""
    import torch.nn.functional as F
    b, c, h, w = x.shape
    tokens = x.permute(0, 2, 3, 1)
    ws = block._window_size(h, w)
    pad_h, pad_w = (-h) % ws, (-w) % ws
    y = F.pad(block.norm1(tokens), (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    s = ws // 2 if block.shift and ws > 1 and min(hp, wp) > ws else 0
    y = torch.roll(y, (-s, -s), dims=(1, 2))
    windows = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    qkv = block.qkv(windows).view(windows.shape[0], -1, 3, block.num_heads, c // block.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    mask = block._shift_mask(hp, wp, ws, s, x.device).repeat(b, 1, 1)[:, None] if s else None
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    attn = block.proj(attn.transpose(1, 2).reshape(windows.shape[0], -1, c))
    attn = attn.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    attn = torch.roll(attn, (s, s), dims=(1, 2))
    tokens = tokens + attn[:, :h, :w]
    tokens = tokens + block.ffn(block.norm2(tokens))
    return tokens.permute(0, 3, 1, 2)


@pytest.mark.parametrize('shape,window', [((2, 8, 7, 7), None), ((2, 8, 8, 8), 4), ((3, 8, 5, 6), 4),
                                          ((2, 8, 14, 14), None)])
def test_window_attention_skips_only_work_that_changes_nothing(shape, window):
    """One window needs no partition, no padding needs no pad or crop, and
    the shift mask of a geometry is built once: outputs and gradients are
    those of the block written out in full, on repeated calls too."""
    torch.manual_seed(4)
    enc = META_ENCODERS.build(dict(type='transformer', channels=8, num_heads=2, window=window,
                                   num_blocks=2))
    for block in enc.blocks:
        x = torch.randn(shape, requires_grad=True)
        for _ in range(2):  # the second call reads the cached mask
            ours, ref = block(x), reference_window_block(block, x)
            torch.testing.assert_close(ours, ref)
            weights = torch.randn(ours.shape)
            params = [x, *block.parameters()]
            for g, r in zip(torch.autograd.grad((ours * weights).sum(), params),
                            torch.autograd.grad((ref * weights).sum(), params)):
                torch.testing.assert_close(g, r)
    assert 'mask_cache' not in ''.join(enc.state_dict())


def test_time_and_context_change_the_output():
    torch.manual_seed(0)
    enc = META_ENCODERS.build(dict(type='mlp', channels=6, context_dim=3))
    nn.init.normal_(enc.output.weight)
    x = torch.randn(4, 6)
    ctx = torch.randn(4, 3, requires_grad=True)
    t1, t2 = torch.full((4,), 0.25), torch.full((4,), 0.75)
    assert not torch.allclose(enc(x, t1, ctx), enc(x, t2, ctx))
    assert not torch.allclose(enc(x, t1, ctx), enc(x, t1, torch.randn(4, 3)))
    enc(x, t1, ctx).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='context'):
        enc(x, t1)  # a conditional encoder needs its context
    with pytest.raises(ValueError, match='context_dim'):
        META_ENCODERS.build(dict(type='mlp', channels=6))(x, t1, ctx)


@pytest.mark.parametrize('encoder', ['mlp', 'conv'])
def test_training_a_real_encoder_lowers_the_loss(encoder):
    """A toy student -> teacher map (fixed random nonlinear transform) is learnt."""
    torch.manual_seed(0)
    c = 8
    mix = torch.randn(c, c) / c ** 0.5
    flow = FlowTransfer(c, encoder=dict(type=encoder, channels=c), num_steps=4, loss=dict(type='MSELoss'))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)

    def batch():
        x_s = torch.randn(32, c, 2, 2)
        x_t = torch.tanh(torch.einsum('dc,bchw->bdhw', mix, x_s)) + 0.5
        return x_s, x_t

    def total(losses):
        return sum(losses.values())

    torch.manual_seed(1)
    x_eval, t_eval = batch()
    with torch.no_grad():
        before = float(total(step_losses(flow, x_eval, t_eval)[0]))
    for _ in range(250):
        x_s, x_t = batch()
        loss = total(step_losses(flow, x_s, x_t)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(total(step_losses(flow, x_eval, t_eval)[0]))
        ensemble = flow(x_eval)
    assert after < 0.2 * before, (before, after)
    assert ensemble.shape == t_eval.shape


def test_gradients_reach_the_student_through_every_step():
    torch.manual_seed(0)
    flow = FlowTransfer(6, encoder='mlp', num_steps=4, loss=dict(type='MSELoss'))
    nn.init.normal_(flow.encoder.output.weight, std=0.1)
    calls = []

    def keep_output(module, inputs, output):
        output.retain_grad()
        calls.append(output)

    flow.encoder.register_forward_hook(keep_output)
    x_s = torch.randn(5, 6, requires_grad=True)
    losses, out = step_losses(flow, x_s, torch.randn(5, 6))
    assert sorted(losses) == [f'loss_flow_step{k}' for k in range(1, 5)]
    # every step's loss alone reaches the student
    for key in losses:
        (grad,) = torch.autograd.grad(losses[key], x_s, retain_graph=True)
        assert grad.abs().sum() > 0, key
    # the last step depends on the first step's prediction: states are not detached
    losses['loss_flow_step4'].backward()
    assert calls[0].grad is not None and calls[0].grad.abs().sum() > 0


def test_online_variant_uses_detached_ensemble():
    torch.manual_seed(0)
    flow = FlowTransfer(5, encoder='mlp', num_steps=3, loss=dict(type='MSELoss'))
    nn.init.normal_(flow.encoder.output.weight, std=0.3)
    x_s = torch.randn(4, 5)
    losses, out = step_losses(flow, x_s, None)
    expected = [((s - out.ensemble) ** 2).mean() / 3 for s in out.steps]
    torch.testing.assert_close(torch.stack(list(losses.values())), torch.stack(expected).detach())


def test_random_steps_and_pair_decoupling():
    torch.manual_seed(0)
    flow = FlowTransfer(4, num_steps=8, num_steps_choices=(1, 2, 4), loss=dict(type='MSELoss'), beta_d=0.5)
    seen = {len(step_losses(flow, torch.randn(2, 4), torch.randn(2, 4))[0]) for _ in range(30)}
    assert seen == {1, 2, 4}
    target = torch.arange(8.0)[:, None].repeat(1, 4)
    labels = torch.arange(8)
    shuffled, shuffled_labels = flow.objective.decouple_pairs(target, labels)
    moved = (shuffled[:, 0] != target[:, 0]).sum()
    assert 0 < moved <= 4  # only half of the batch may move
    assert torch.equal(shuffled[:, 0].long(), shuffled_labels)  # pairs stay consistent
    assert sorted(shuffled[:, 0].tolist()) == target[:, 0].tolist()


def test_bad_input_says_what_to_change():
    flow = FlowTransfer(8, loss=dict(type='MSELoss'))
    with pytest.raises(ValueError, match=r'\(2, 4, 3, 3\).*channels=4.*adapter'):
        flow(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match='>= 1'):
        FlowTransfer(8, num_steps=0)
    with pytest.raises(ValueError, match='>= 1'):
        flow(torch.randn(2, 8), num_steps=0)
    with pytest.raises(ValueError, match=r"unknown flow path 'rectifed'.*'rectified'"):
        FlowTransfer(8, path='rectifed')
    with pytest.raises(ValueError, match=r"unknown meta-encoder 'unet'.*\['conv', 'mlp', 'transformer'\]"):
        FlowTransfer(8, encoder='unet')
    with pytest.raises(ValueError, match=r'\(2, 8\).*\(2, 10\).*adapter'):
        step_losses(flow, torch.randn(2, 8), torch.randn(2, 10))


def test_every_flow_name_builds_from_a_config_dict():
    for name in FLOW_PATHS.module_dict:
        FLOW_PATHS.build(dict(type=name))
    for name in META_ENCODERS.module_dict:
        assert META_ENCODERS.build(dict(type=name, channels=8)).channels == 8
    flow = MODELS.build(dict(type='FlowTransfer', channels=8, path=dict(type='vp', schedule='trig'),
                             encoder=dict(type='transformer', num_heads=2), loss=dict(type='KDLoss')))
    assert isinstance(flow.solver.path, VPPath) and flow.solver.path.schedule == 'trig'
