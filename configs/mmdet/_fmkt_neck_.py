# The FM-KT part of the modern-detector configs (RTMDet, YOLOX, DINO,
# Deformable DETR): a leaf config inherits the stock student config and this
# file, and names the teacher. The detection default's form: one flow per
# neck level (mlp meta-encoder, 4 rectified steps, PKD on every step), the
# raw student levels pulled toward the flows' detached ensemble and toward
# the teacher's levels by PKD (deploy mode 'student': the trained student is
# the plain stock detector, FM-KT^Theta). Where the student's and teacher's
# levels differ in width (RTMDet-tiny 96 vs RTMDet-s 128) an adapter per
# level is built by itself (adapter='auto', logged).
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    student_tap='neck',
    teacher_tap='neck',
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    raw_loss_weight=1.0,
    deploy_mode='student',
    dummy_input_shape=(3, 256, 256))
