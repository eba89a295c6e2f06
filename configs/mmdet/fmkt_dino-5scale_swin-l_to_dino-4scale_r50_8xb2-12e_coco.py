# DINO R50 (4 scales) distilled from DINO Swin-L (5 scales) on COCO: FM-KT (the detection default form; see _fmkt_neck_.py).
# Published for DINO: CanKD R101 -> R50 49.0 -> 49.7 (neck levels, the
# student initialised from the teacher). mmdet's model zoo holds no DINO
# R101 weights; its strongest DINO, Swin-L (57.2 mAP, by URL), teaches here.
# Not scored here. The student's 4 levels (strides 8-64) are paired with the
# teacher's levels of the same strides (its first level has stride 4); both
# have 256 channels.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', './_fmkt_neck_.py']
distiller = dict(
    teacher=dict(config='mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py',
                 checkpoint='https://download.openmmlab.com/mmdetection/v3.0/dino/dino-5scale_swin-l_8xb2-12e_coco/dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth'),
    levels=((0, 1), (1, 2), (2, 3), (3, 4)),
    level_weights=0.5)
