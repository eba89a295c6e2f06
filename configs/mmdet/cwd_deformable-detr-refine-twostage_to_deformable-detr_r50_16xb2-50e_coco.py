# Deformable DETR R50 distilled from two-stage Deformable DETR R50 with box
# refinement on COCO: the CWD baseline of the published RTMDet recipe (see _cwd_neck_.py).
# Published for Deformable DETR: DETRDistill R101 -> R50 44.1 -> 46.6. mmdet's
# model zoo holds no Deformable DETR R101 weights; its strongest Deformable
# DETR, two-stage with refinement (47.0 mAP, by URL), teaches the plain one
# (44.3). Not scored here. Four ChannelMapper levels of 256 channels each.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py', './_cwd_neck_.py']
distiller = dict(
    teacher=dict(config='mmdet::deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',
                 checkpoint='https://download.openmmlab.com/mmdetection/v3.0/deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco/deformable-detr-refine-twostage_r50_16xb2-50e_coco_20221021_184714-acc8a5ff.pth'),
    levels=(0, 1, 2, 3),
    level_weights=1.0)
