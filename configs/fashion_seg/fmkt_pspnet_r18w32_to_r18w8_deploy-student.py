# FM-KT with zero inference cost (FM-KT^Theta) on the decode head's logits:
# a flow carries the student's logit map (11 classes, 8 x 8 positions) toward
# the teacher's in 4 steps, with CWD (Shu et al., 2021; tau 1, the CWD
# baseline's metric) on every step; the raw student logits are pulled toward
# the flow's detached ensemble (CWD again), so the trained student is a plain
# mmseg PSPNet (tools/export_student.py). The distillation weight is CWD's
# (3): 1.5 on the flow's terms and 1.5 on the pull of the raw logits.
# Train the teacher first:  python tools/train.py configs/fashion_seg/pspnet_r18w32_teacher.py
_base_ = ['./pspnet_r18w8_student.py']
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    teacher=dict(config='{{fileDirname}}/pspnet_r18w32_teacher.py',
                 checkpoint='work_dirs/pspnet_r18w32_teacher/epoch_16.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=2.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.CWDLoss', tau=1.0)),
    levels=(0, ),
    level_weights=1.5,
    # the logits (mmseg calls decode_head.forward directly: no hook fires on the head itself)
    student_tap='decode_head.conv_seg',
    teacher_tap='decode_head.conv_seg',
    deploy_mode='student',
    dummy_input_shape=(3, 64, 64))
