# A student of another shape: the quarter-width ResNet-18 with a 64-channel
# FPN (the teacher's has 128). Distilling it needs an adapter
# (see fmkt_retinanet_r18_to_r18w16-fpn64_deploy-student.py).
_base_ = ['./retinanet_r18w16_student.py']
model = dict(neck=dict(out_channels=64), bbox_head=dict(in_channels=64))
