# Baseline: channel-wise distillation (Shu et al., 2021) on the decode head's
# logits, tau 1, weight 3 (MMRazor's PSPNet recipe); no flow, the deployed
# model is the plain student.
_base_ = ['./pspnet_r18w8_student.py']
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    teacher=dict(config='{{fileDirname}}/pspnet_r18w32_teacher.py',
                 checkpoint='work_dirs/pspnet_r18w32_teacher/epoch_16.pth'),
    loss=dict(type='fmkt_mm.CWDLoss', tau=1.0),
    levels=(0, ),
    level_weights=3.0,
    student_tap='decode_head.conv_seg',  # the logits (mmseg calls decode_head.forward directly: no hook fires on it)
    teacher_tap='decode_head.conv_seg',
    dummy_input_shape=(3, 64, 64))
