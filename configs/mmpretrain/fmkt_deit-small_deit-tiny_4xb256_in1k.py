# FM-KT for vision transformers: DeiT-Small -> DeiT-Tiny. The flow runs on the class
# token (a (B, 192) vector) with a transformer meta-encoder; the student's head reads
# every step. The teacher is mmpretrain's model-zoo DeiT-S (by URL).
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='flow',
    teacher=dict(config='mmpretrain::deit/deit-small_4xb256_in1k.py',
                 checkpoint='https://download.openmmlab.com/mmclassification/v0/deit/deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth'),
    flow=dict(encoder=dict(type='transformer', num_heads=4), num_steps=8,
              loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0)),
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
