# Fashion-MNIST (Debian's dataset-fashion-mnist, read in place), 10k training
# images, a short cosine schedule: the CPU demo's data and training settings.
default_scope = 'mmpretrain'
# fmkt_mm's runner: the distiller block is applied (and checkpoints kept
# durable) under every launcher, mmpretrain's own tools/train.py and mim included
runner_type = 'fmkt_mm.DistillRunner'
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)

data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)

train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(
        type='FashionMNISTGz', split='train', num_samples=10000, seed=0,
        pipeline=[
            dict(type='RandomCrop', crop_size=28, padding=2),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs'),
        ]),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(type='FashionMNISTGz', split='test', test_mode=True,
                 pipeline=[dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 6
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4,
                                    nesterov=True))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs,
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
