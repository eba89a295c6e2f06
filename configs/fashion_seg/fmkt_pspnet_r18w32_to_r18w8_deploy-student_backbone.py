# FM-KT^Theta on features: a flow carries the student's last backbone stage
# (the decode head's input, 64 channels) toward the teacher's (256 channels,
# through an adapter) in 4 steps, PKD on every step; the raw student stage is
# pulled toward the flow's detached ensemble, so the trained student is a
# plain mmseg PSPNet. The auxiliary head keeps its own loss. CWD's total
# distillation weight (3): 1.5 on the flow, 1.5 on the pull (theta).
# Train the teacher first:  python tools/train.py configs/fashion_seg/pspnet_r18w32_teacher.py
_base_ = ['./pspnet_r18w8_student.py']
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    teacher=dict(config='{{fileDirname}}/pspnet_r18w32_teacher.py',
                 checkpoint='work_dirs/pspnet_r18w32_teacher/epoch_16.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=1.5,
    student_tap='backbone',
    teacher_tap='backbone',
    deploy_mode='student',
    dummy_input_shape=(3, 64, 64))
