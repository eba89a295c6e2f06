# Baseline: PKD on the four FPN levels of Faster R-CNN (P2-P5, weight 6 per
# level, as the FM-KT configs), no flow; the deployed model is the plain student.
_base_ = ['./faster-rcnn_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/faster-rcnn_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/faster-rcnn_r18_teacher.pth'),
    loss=dict(type='fmkt_mm.PKDLoss'),
    levels=(0, 1, 2, 3),
    level_weights=6.0)
