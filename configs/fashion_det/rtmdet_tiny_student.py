# Student: RTMDet-tiny (deepen 0.167 / widen 0.375, a 96-channel neck), the
# published pair's student. Its levels have 96 channels where the teacher's
# have 128: the distillers build an adapter per level by themselves.
_base_ = ['./rtmdet_s_teacher.py']
model = dict(
    backbone=dict(deepen_factor=0.167, widen_factor=0.375),
    neck=dict(in_channels=[96, 192, 384], out_channels=96, num_csp_blocks=1),
    bbox_head=dict(in_channels=96, feat_channels=96))
