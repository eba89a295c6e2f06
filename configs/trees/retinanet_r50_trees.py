# Your own data, step 1: a stock mmdet RetinaNet (R50 FPN) trained on a
# one-class COCO folder of real RGB images, here the aerial tree tiles of
#   python tools/data/deepforest_to_coco.py --out data/trees
# Every line below is something a user must set for their own set.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']

data_root = 'data/trees/'                      # the COCO folder: train/, val/, annotations/
metainfo = dict(classes=('tree', ), palette=[(0, 160, 0)])   # class names, in category-id order
image_size = (320, 320)                        # the tiles' size (resize target)

model = dict(
    # no pretrained backbone can be downloaded offline: train from scratch
    # (with network access, keep the stock torchvision init instead)
    backbone=dict(init_cfg=None),
    # RGB normalisation: the stock ImageNet mean/std with BGR->RGB (to_rgb=True)
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    bbox_head=dict(
        num_classes=1,                         # = len(metainfo['classes'])
        # crowns are 10-60 px: anchors of 2 * stride * 2^(k/3) start at 16 px on P3
        anchor_generator=dict(octave_base_scale=2)),
    test_cfg=dict(max_per_img=300))            # up to a few hundred trees per tile

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# a short from-scratch schedule (AdamW is more forgiving than SGD without pretraining)
train_cfg = dict(max_epochs=24, val_interval=24)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=24, T_max=24,
         convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=24, max_keep_ckpts=1))
