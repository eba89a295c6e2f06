# FM-KT with zero inference cost (FM-KT^Theta) for semantic segmentation: a
# flow carries the student's last backbone stage (the decode head's input,
# 64 channels) toward the teacher's (256 channels, through an adapter) in 4
# steps, PKD on every step; the raw student stage is pulled toward the flow's
# detached ensemble, so the trained student is a plain mmseg PSPNet
# (tools/export_student.py). The auxiliary head keeps its own loss.
# Train the teacher first:  python tools/train.py configs/fashion_seg/pspnet_r18w32_teacher.py
_base_ = ['./pspnet_r18w8_student.py']
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    teacher=dict(config='{{fileDirname}}/pspnet_r18w32_teacher.py',
                 checkpoint='work_dirs/pspnet_r18w32_teacher/epoch_8.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=5.0,
    student_tap='backbone',
    teacher_tap='backbone',
    adapter=dict(type='FeatureAdapter'),
    deploy_mode='student',
    dummy_input_shape=(3, 64, 64))
