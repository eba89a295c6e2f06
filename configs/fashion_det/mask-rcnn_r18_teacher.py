# Teacher for instance segmentation: Mask R-CNN with a full-width ResNet-18
# (C2-C5) and a 128-channel FPN (5 levels, strides 4-64), as the Faster R-CNN
# teacher plus a mask head. The composed set's masks are the garments' own
# pixels; scored by COCO bbox and segm mAP.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './_base_.py']
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128, num_outs=5),
    rpn_head=dict(in_channels=128, feat_channels=128,
                  anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0],
                                        strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=10),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=128, num_classes=10)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=({{_base_.image_size}}, {{_base_.image_size}}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=({{_base_.image_size}}, {{_base_.image_size}}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
