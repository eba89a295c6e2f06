# Flow-guided progressive FM-KT: the transfer grows from simple to complex.
# The flow trains with 2 steps in epochs 0-1, 4 in epochs 2-3 and 8 from
# epoch 4 (validation follows the trained depth); the distillation loss
# first sees the half of each batch the teacher is most confident on, then
# three quarters, then all of it (easy -> hard targets; the label loss always
# sees the whole batch).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
custom_hooks = [
    dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8)),
    dict(type='fmkt_mm.ProgressiveDistillationHook', by_epoch=True,
         num_steps=dict(milestones=[2, 4], values=[2, 4, 8]),
         curriculum=dict(milestones=[1, 3], values=[0.5, 0.75, 1.0])),
]
