# Student: the teacher's detector with a quarter-width ResNet-18
# (base/stem channels 16: C3-C5 have 32/64/128 channels) and a 64-channel
# head. Its FPN keeps the teacher's 128 channels and 4 levels, so the
# distilled levels need no adapter.
_base_ = ['./retinanet_r18_teacher.py']
model = dict(
    backbone=dict(base_channels=16, stem_channels=16),
    neck=dict(in_channels=[32, 64, 128]),
    bbox_head=dict(feat_channels=64))
