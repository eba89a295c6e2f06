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
