# The student: the same PSPNet at base width 8 (16x fewer weights than the
# teacher's in the backbone), trained alone: the reference every distillation is measured from.
_base_ = ['./pspnet_r18w32_teacher.py']
width = 8
max_epochs = 8  # the teacher's 16 back to the base schedule
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         convert_to_iter_based=True),
]
model = dict(
    backbone=dict(stem_channels=width, base_channels=width),
    decode_head=dict(in_channels=8 * width, channels=2 * width),
    auxiliary_head=dict(in_channels=4 * width, channels=width))
