_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
model = dict(head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
distiller = dict(type='fmkt_mm.ClassificationDistiller', deploy_mode='student', online=True,
                 flow=dict(encoder=dict(type='mlp'), num_steps=8, loss=dict(type='fmkt_mm.KDLoss')),
                 dummy_input_shape=(3, 224, 224))
