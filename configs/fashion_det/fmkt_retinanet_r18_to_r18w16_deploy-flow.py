# FM-KT on the 4 FPN levels, the paper's setting: a flow per level (4 steps,
# MLP meta-encoder, PKD against the teacher's level, weight 10 as for
# RetinaNet); the student's head reads the flows' ensemble features in
# training and at inference (the deployed model is student + flows).
_base_ = ['./retinanet_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/retinanet_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/retinanet_r18_teacher.pth'),
    # a token-wise (1x1) meta-encoder keeps the CPU demo fast; the COCO configs
    # use the 3x3 'conv' encoder
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1),
              num_steps=4, loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(0, 1, 2, 3),
    level_weights=10.0,
    student_tap='neck',
    teacher_tap='neck',
    deploy_mode='flow')
