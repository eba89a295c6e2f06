# Baseline: classic logit KD (Hinton et al.), tau 4, from the same teacher to
# the same student as the FM-KT configs: one teacher forward and one student
# forward/backward per iteration.
_base_ = ['./student_resnet18_w4.py']
distiller = dict(
    type='fmkt_mm.LogitDistiller',
    teacher=dict(config='{{fileDirname}}/teacher_resnet18_w16.py',
                 checkpoint='work_dirs/fashion_mnist/teacher.pth'),
    loss=dict(type='fmkt_mm.KDLoss', tau=4.0, loss_weight=1.0))
