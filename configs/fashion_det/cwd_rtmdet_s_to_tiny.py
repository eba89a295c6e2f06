# Baseline: the published RTMDet distillation recipe (mmyolo through MMRazor):
# channel-wise distillation (tau 1, weight 1 per level) of the three neck
# levels, the student's 96 channels mapped to the teacher's 128 (an adapter
# per level, built by itself), the teacher's levels standardised per channel
# (BatchNorm without affine parameters or running statistics).
_base_ = ['./rtmdet_tiny_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/rtmdet_s_teacher.py',
                 checkpoint='work_dirs/fashion_det/rtmdet_s_teacher.pth'),
    loss=dict(type='fmkt_mm.CWDLoss', tau=1.0),
    levels=(0, 1, 2),
    level_weights=1.0,
    teacher_norm=True,
    dummy_input_shape=(3, 128, 128))
