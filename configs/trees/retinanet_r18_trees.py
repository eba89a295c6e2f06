# The student: the same detector with a ResNet-18 backbone (its FPN has the
# teacher's 256 channels and 5 levels, so the distilled levels need no adapter).
_base_ = ['./retinanet_r50_trees.py']
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
