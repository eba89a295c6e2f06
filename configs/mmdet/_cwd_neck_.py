# The CWD baseline of the modern-detector configs: the published RTMDet
# distillation recipe (mmyolo through MMRazor): channel-wise distillation
# (tau 1, weight 1 per level) of the neck levels, an adapter per level where
# the widths differ (built by itself), the teacher's levels standardised per
# channel (a BatchNorm without affine parameters or running statistics).
runner_type = 'fmkt_mm.DistillRunner'
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.FeatureDistiller',
    loss=dict(type='fmkt_mm.CWDLoss', tau=1.0),
    student_tap='neck',
    teacher_tap='neck',
    level_weights=1.0,
    teacher_norm=True,
    dummy_input_shape=(3, 256, 256))
