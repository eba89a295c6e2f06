# Baseline: decoupled KD (Zhao et al., 2022) with its CIFAR recipe (alpha 1,
# beta 8, tau 4, a linear warm-up of the loss over the first iterations).
_base_ = ['./kd_resnet18_w16_to_resnet18_w4.py']
distiller = dict(loss=dict(_delete_=True, type='fmkt_mm.DKDLoss', alpha=1.0, beta=8.0, tau=4.0,
                           warmup_iters=100))
custom_hooks = [dict(type='fmkt_mm.LossScheduleHook')]
