# Your own data, step 2: the student config plus a distiller block.
#   python tools/train.py configs/trees/retinanet_r50_trees.py          # the teacher
#   python tools/train.py configs/trees/fmkt_retinanet_r50_to_r18_trees.py \
#       --cfg-options distiller.teacher.checkpoint=work_dirs/retinanet_r50_trees/epoch_24.pth
#   python tools/test.py configs/trees/fmkt_retinanet_r50_to_r18_trees.py \
#       work_dirs/fmkt_retinanet_r50_to_r18_trees/epoch_24.pth        # no teacher file needed
#   python tools/export_student.py configs/trees/fmkt_retinanet_r50_to_r18_trees.py \
#       work_dirs/fmkt_retinanet_r50_to_r18_trees/epoch_24.pth student.pth
# -> student.pth + student_config.py: a plain RetinaNet R18 that labels boxes 'tree'.
_base_ = ['./retinanet_r18_trees.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='configs/trees/retinanet_r50_trees.py',
                 checkpoint='work_dirs/retinanet_r50_trees/epoch_24.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1),
              num_steps=4, loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(0, 1, 2, 3),
    level_weights=10.0,
    # 'student': the deployed model is the plain R18 RetinaNet (zero inference cost);
    # 'flow' predicts with student + flows (then keep ema_momentum=0.0002: it warms up)
    deploy_mode='student',
    dummy_input_shape=(3, 320, 320))
