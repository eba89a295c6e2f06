# The student: the same PSPNet at base width 8 (16x fewer weights than the
# teacher's in the backbone), trained alone: the reference every distillation is measured from.
_base_ = ['./pspnet_r18w32_teacher.py']
width = 8
model = dict(
    backbone=dict(stem_channels=width, base_channels=width),
    decode_head=dict(in_channels=8 * width, channels=2 * width),
    auxiliary_head=dict(in_channels=4 * width, channels=width))
