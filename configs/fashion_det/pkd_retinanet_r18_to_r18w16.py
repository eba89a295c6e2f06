# Baseline: PKD (Cao et al., 2022) on the four FPN levels, the detection
# baseline FM-KT is compared with: the student's levels are matched to the
# teacher's by a Pearson-correlation loss (weight 10 per level here, as the
# FM-KT configs use), no flow; the deployed model is the plain student.
_base_ = ['./retinanet_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/retinanet_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/retinanet_r18_teacher.pth'),
    loss=dict(type='fmkt_mm.PKDLoss'),
    levels=(0, 1, 2, 3),
    level_weights=10.0)
