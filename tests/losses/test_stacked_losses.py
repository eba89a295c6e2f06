"""The stacked form of every metric loss equals its per-step formula.

``loss.forward_steps(steps, teacher, labels)[k] == loss(steps[k], teacher,
labels)`` on random inputs: the flow applies the loss once to all its steps,
and losses that take statistics over the batch (DIST, PKD) must take them per
step.
"""
import pytest
import torch

from fmkt_mm.losses import DISTLoss, DKDLoss, KDLoss, MSELoss, PKDLoss

N, B, C = 5, 6, 7

CASES = [
    ('kd', lambda: KDLoss(tau=4.0, loss_weight=0.5), (B, C)),
    ('kd-map', lambda: KDLoss(tau=2.0), (B, C, 3, 2)),
    ('dkd', lambda: DKDLoss(alpha=1.0, beta=8.0, tau=4.0), (B, C)),
    ('dist', lambda: DISTLoss(beta=2.0, gamma=2.0, tau=1.0), (B, C)),
    ('dist-map', lambda: DISTLoss(tau=4.0), (B, C, 2, 3)),
    ('pkd', lambda: PKDLoss(loss_weight=3.0), (B, C, 4, 5)),
    ('pkd-vector', lambda: PKDLoss(), (B, C)),
    ('mse', lambda: MSELoss(), (B, C, 3, 3)),
]


@pytest.mark.parametrize('name,make,shape', CASES, ids=[c[0] for c in CASES])
def test_stacked_loss_equals_the_per_step_formula(name, make, shape):
    gen = torch.Generator().manual_seed(0)
    loss = make()
    steps = torch.randn(N, *shape, generator=gen, dtype=torch.float64).float().requires_grad_()
    teacher = torch.randn(*shape, generator=gen) * 3
    labels = torch.randint(C, (B,), generator=gen)
    stacked = loss.forward_steps(steps, teacher, labels)
    assert stacked.shape == (N,)
    per_step = torch.stack([loss(steps[k], teacher, labels) for k in range(N)])
    torch.testing.assert_close(stacked, per_step, rtol=1e-5, atol=1e-6)
    # and the gradients that reach the steps
    weights = torch.arange(1.0, N + 1)
    grad_stacked, = torch.autograd.grad((stacked * weights).sum(), steps)
    grad_per_step, = torch.autograd.grad((per_step * weights).sum(), steps)
    torch.testing.assert_close(grad_stacked, grad_per_step, rtol=1e-4, atol=1e-6)


def test_stacked_pkd_resizes_the_student_per_step():
    gen = torch.Generator().manual_seed(1)
    for resize_student in (True, False):
        loss = PKDLoss(resize_student=resize_student)
        steps = torch.randn(3, 2, 4, 8, 8, generator=gen)
        teacher = torch.randn(2, 4, 4, 4, generator=gen)
        per_step = torch.stack([loss(s, teacher) for s in steps])
        torch.testing.assert_close(loss.forward_steps(steps, teacher), per_step)


def test_stacked_dkd_warmup_scales_every_step():
    loss = DKDLoss(warmup_iters=10)
    loss.set_iter(5)
    steps, teacher = torch.randn(3, 4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    per_step = torch.stack([loss(s, teacher, labels) for s in steps])
    torch.testing.assert_close(loss.forward_steps(steps, teacher, labels), per_step)


def test_stacked_losses_name_both_shapes_on_a_mismatch():
    with pytest.raises(ValueError, match=r'\(4, 5\).*\(4, 6\)'):
        KDLoss().forward_steps(torch.randn(2, 4, 5), torch.randn(4, 6))
    with pytest.raises(ValueError, match='N outputs shaped like the teacher'):
        DISTLoss().forward_steps(torch.randn(4, 5), torch.randn(2, 4, 5))


def test_a_custom_loss_without_a_stacked_form_loops_over_the_steps():
    from fmkt_mm.losses import MetricLoss

    class L1(MetricLoss):
        def compute(self, student, teacher, labels=None):
            return (student - teacher).abs().mean()

    steps, teacher = torch.randn(3, 2, 4), torch.randn(2, 4)
    torch.testing.assert_close(L1(loss_weight=2.0).forward_steps(steps, teacher),
                               torch.stack([L1(loss_weight=2.0)(s, teacher) for s in steps]))


@pytest.mark.parametrize('name,make,shape', CASES, ids=[c[0] for c in CASES])
def test_stacked_loss_takes_one_target_per_step(name, make, shape):
    gen = torch.Generator().manual_seed(2)
    loss = make()
    steps = torch.randn(N, *shape, generator=gen)
    targets = torch.randn(N, *shape, generator=gen) * 2
    labels = torch.randint(C, (B,), generator=gen)
    per_step = torch.stack([loss(steps[k], targets[k], labels) for k in range(N)])
    torch.testing.assert_close(loss.forward_steps(steps, targets, labels), per_step, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='per-step targets'):
        loss.forward_steps(steps, targets[:2], labels)


def standardise_and_subtract(steps, teacher):
    """PKD's stacked steps by its definition: each step and the teacher
    standardised per channel over batch and positions, then the halved mean
    square of their difference (the unbiased factor and eps as PKDLoss's)."""
    from fmkt_mm.losses.pkd import EPS, biased_standardize
    n, b, c = steps.shape[:3]
    count = teacher.numel() // c
    c2 = (count - 1) / count
    student = biased_standardize(steps.transpose(0, 1).reshape(b, n * c, *steps.shape[3:]), c2 * EPS**2)
    diff = student.view(b, n, c, *steps.shape[3:]) - biased_standardize(teacher, c2 * EPS**2)[:, None]
    return diff.pow(2).mean((0, *range(2, diff.dim()))) * (c2 / 2)


@pytest.mark.parametrize('shape', [(B, C, 4, 5), (B, C)], ids=['map', 'vector'])
@pytest.mark.parametrize('near', [False, True], ids=['random', 'near-the-teacher'])
def test_pkd_steps_equal_standardise_and_subtract_and_keep_one_copy(shape, near):
    """PKD's stacked form (backward from the steps and their moments)
    equals the definition in values and gradients, in float64 to rounding
    and in float32 also where the steps are near the teacher (the loss
    small); backward keeps the steps once and the teacher-sized target,
    where the definition keeps two copies of the steps."""
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(*shape, generator=gen, dtype=torch.float64) * 3
    steps = teacher * 1.5 + (0.01 if near else 1.0) * torch.randn(N, *shape, generator=gen, dtype=torch.float64)
    for dtype, tol in ((torch.float64, dict(rtol=1e-10, atol=1e-12)), (torch.float32, dict(rtol=1e-4, atol=1e-7))):
        x = steps.to(dtype).requires_grad_()
        lean, direct = PKDLoss().compute_steps(x, teacher.to(dtype)), standardise_and_subtract(x, teacher.to(dtype))
        torch.testing.assert_close(lean, direct, **tol)
        weights = torch.arange(1.0, N + 1, dtype=dtype)
        grad_lean, = torch.autograd.grad((lean * weights).sum(), x)
        grad_direct, = torch.autograd.grad((direct * weights).sum(), x)
        torch.testing.assert_close(grad_lean, grad_direct, rtol=tol['rtol'], atol=tol['atol'] * 10)

    if len(shape) == 2:
        return
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    x, target = torch.randn(N, B, C, 16, 16, generator=gen).requires_grad_(), torch.randn(B, C, 16, 16, generator=gen)
    copies = {}
    for name, form in (('lean', PKDLoss().compute_steps), ('direct', standardise_and_subtract)):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            form(x, target)
        copies[name] = sum(saved.values()) / (x.numel() * 4)
    assert copies['lean'] < 1 + 1 / N + 0.01 and copies['direct'] > 2, copies  # the steps, the target


def test_pkd_of_levels_side_by_side_equals_one_call_per_level():
    """``PKDLoss.forward_levels``: levels of different sizes, their
    positions side by side (a batched run's tokens), each standardised on its
    own: the weighted per-level losses and their gradients of one call per
    level, a level of one value per channel included (0, finite gradient),
    in the same number of operators for 2 levels as for 5."""
    from fmkt_mm.studies import count_operators
    gen = torch.Generator().manual_seed(2)
    sizes = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]
    levels = [torch.randn(2, C, h, w, generator=gen) * 3 + 1 for h, w in sizes]
    targets = [torch.randn(2, C, h, w, generator=gen) for h, w in sizes]
    single = [torch.randn(1, C, 1, 1, generator=gen)]  # one value per channel
    levels, targets = levels + single, targets + [torch.randn_like(single[0])]
    scale = [10.0, 10.0, 6.0, 2.0, 1.0, 3.0]
    loss = PKDLoss(loss_weight=0.7)
    tol = dict(rtol=1e-5, atol=1e-6)  # float32 (the losses' precision) summed in another order
    for part in (slice(0, 5), slice(5, 6)):  # one batch size per call: the levels of one batch
        per_level = [x.clone().requires_grad_() for x in levels[part]]
        expected = torch.stack([w * loss(x, t) for w, x, t in zip(scale[part], per_level, targets[part])])
        side_by_side = [x.clone().requires_grad_() for x in levels[part]]
        counts = [x.shape[2] * x.shape[3] for x in side_by_side]
        got = loss.forward_levels(torch.cat([x.flatten(2) for x in side_by_side], 2),
                                  torch.cat([t.flatten(2) for t in targets[part]], 2), counts, scale[part])
        torch.testing.assert_close(got, expected, **tol)
        weights = torch.arange(1.0, len(counts) + 1)
        (expected * weights).sum().backward()
        (got * weights).sum().backward()
        for a, b in zip(per_level, side_by_side):
            assert torch.isfinite(b.grad).all()
            torch.testing.assert_close(b.grad, a.grad, **tol)

    def ops(k):
        x = torch.cat([t.flatten(2) for t in levels[:k]], 2).requires_grad_()
        target = torch.cat([t.flatten(2) for t in targets[:k]], 2)
        counts = [t.shape[2] * t.shape[3] for t in levels[:k]]
        loss.forward_levels(x, target, counts, scale[:k])  # the level maps cached, as in training
        return count_operators(lambda: loss.forward_levels(x, target, counts, scale[:k]).sum().backward())
    assert ops(2) == ops(5)
    with pytest.raises(ValueError, match=r'P = sum\(counts\) = 7'):
        loss.forward_levels(torch.zeros(2, C, 8), torch.zeros(2, C, 8), [3, 4], [1.0, 1.0])


def test_pkd_of_levels_and_of_factored_steps_stay_float32_under_autocast():
    """Their moments are matrix products over the positions: under autocast
    (bfloat16 on the CPU) they still run in float32 and give the values of
    the run without autocast."""
    from fmkt_mm.flow.reduction import ChannelReduction
    gen = torch.Generator().manual_seed(3)
    x, target = torch.randn(2, C, 30, generator=gen) * 3 + 1, torch.randn(2, C, 30, generator=gen)
    reduction = ChannelReduction(C, 2)
    with torch.no_grad():
        factored = reduction.factored(x[..., None], reduction.down(x[..., None]),
                                      torch.randn(3, 2, 2, 30, 1, generator=gen))
    loss = PKDLoss()
    plain = [loss.forward_levels(x, target, [20, 10], [1.0, 2.0]),
             loss.forward_factored_steps(factored, target[..., None])]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = [loss.forward_levels(x, target, [20, 10], [1.0, 2.0]),
                 loss.forward_factored_steps(factored, target[..., None])]
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a)
