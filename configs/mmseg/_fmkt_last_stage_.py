# The FM-KT recipe of the Cityscapes configs, inherited beside mmseg's student
# config: fmkt_mm's runner, and a flow carrying the student's last backbone
# stage (the decode head's input) toward the teacher's, through the automatic
# adapter (R18's 512 channels to R101's 2048), 4 steps, PKD on every step;
# deploy mode 'student': the trained student is a plain mmseg segmentor. Each
# config names its teacher.
# Why this form: on the composed set, at CWD's total distillation weight (3),
# FM-KT on the backbone stage beat CWD on the logits by +7.00 [+4.59, +9.40]
# mIoU, while FM-KT on the logits only tied CWD; the weights are that study's
# (1.5 on the flow, 1.5 on the pull of the raw stage). PKD alone at the same
# stage and weight beat this recipe there (-1.45 [-2.16, -0.74]):
# docs/benchmarks.md#segmentation-fm-kt-against-cwd.
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=1.5,
    student_tap='backbone',
    teacher_tap='backbone',
    deploy_mode='student',
    dummy_input_shape=(3, 512, 1024))
