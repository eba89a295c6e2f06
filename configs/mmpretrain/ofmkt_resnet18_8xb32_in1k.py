# OFM-KT: no teacher; label-smoothed cross-entropy on every step and the flow's own
# detached ensemble as the target; the plain head learns from the ensemble.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
model = dict(head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='student', online=True,
    flow=dict(path='rectified', encoder=dict(type='mlp'), num_steps=8,
              loss=dict(type='fmkt_mm.KDLoss', tau=1.0)),
    theta_loss=dict(type='fmkt_mm.KDLoss', tau=1.0),
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
