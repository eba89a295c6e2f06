# The FM-KT recipe of the Cityscapes configs, inherited beside mmseg's student
# config: fmkt_mm's runner, and a flow carrying the student's last backbone
# stage (the decode head's input) toward the teacher's, through an adapter
# (R18's 512 channels to R101's 2048), 4 steps, PKD on every step; deploy
# mode 'student': the trained student is a plain mmseg segmentor. Each config
# names its teacher.
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=5.0,
    student_tap='backbone',
    teacher_tap='backbone',
    adapter=dict(type='FeatureAdapter'),
    deploy_mode='student',
    dummy_input_shape=(3, 512, 1024))
