# FM-KT for vision transformers: DeiT-Small -> DeiT-Tiny. The flow runs on the class
# token (a (B, 192) vector) with a transformer meta-encoder; the student's head reads
# every step. Needs checkpoints/deit-small_4xb256_in1k.pth.
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    variant='fmkt',
    teacher=dict(config='mmpretrain::deit/deit-small_4xb256_in1k.py',
                 checkpoint='checkpoints/deit-small_4xb256_in1k.pth'),
    flow=dict(encoder=dict(type='transformer', num_heads=4), num_steps=8,
              loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0)),
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
