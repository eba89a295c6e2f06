# Student: the teacher's Mask R-CNN with a quarter-width ResNet-18 (C2-C5:
# 16/32/64/128 channels). The FPN keeps 128 channels and 5 levels.
_base_ = ['./mask-rcnn_r18_teacher.py']
model = dict(
    backbone=dict(base_channels=16, stem_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128]),
    roi_head=dict(bbox_head=dict(fc_out_channels=128), mask_head=dict(conv_out_channels=64)))
