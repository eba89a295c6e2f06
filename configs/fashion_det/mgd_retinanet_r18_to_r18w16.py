# Baseline: MGD (Yang et al., ECCV 2022) on the four FPN levels: a random 65 %
# of each student level's positions is masked and a small generation block
# (3x3 conv, ReLU, 3x3 conv, one per level, trained with the student) must
# rebuild the teacher's level from the rest; no flow, and the deployed model is
# the plain student. alpha_mgd=2e-5 and lambda_mgd=0.65 are the authors'
# RetinaNet values; the loss sums the squared error over channels and
# positions (averaged over the batch only), so at this config's 128 px input
# the term is smaller than on COCO. The distiller fills each level's
# student_channels / teacher_channels (128 on both sides here: no align conv).
_base_ = ['./retinanet_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/retinanet_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/retinanet_r18_teacher.pth'),
    loss=dict(type='fmkt_mm.MGDLoss', alpha_mgd=2e-5, lambda_mgd=0.65),
    levels=(0, 1, 2, 3),
    level_weights=1.0)
