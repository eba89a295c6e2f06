# Control: PKD (Cao et al., 2022) between the student's last backbone stage
# (the decode head's input, through the automatic adapter to the teacher's
# 256 channels) and the teacher's, at CWD's weight (3), no flow: what the
# backbone-stage FM-KT row adds beyond its metric at the same place and
# weight. The deployed model is the plain student.
_base_ = ['./pspnet_r18w8_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/pspnet_r18w32_teacher.py',
                 checkpoint='work_dirs/pspnet_r18w32_teacher/epoch_16.pth'),
    loss=dict(type='fmkt_mm.PKDLoss'),
    levels=(3, ),
    level_weights=3.0,
    student_tap='backbone',
    teacher_tap='backbone',
    dummy_input_shape=(3, 64, 64))
