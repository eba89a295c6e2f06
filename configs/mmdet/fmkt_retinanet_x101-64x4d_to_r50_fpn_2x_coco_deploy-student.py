# As fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py (the same
# model-zoo teacher, by URL), with
# zero inference cost: the head reads the raw student FPN levels, which are
# pulled toward the flows' detached ensemble; the trained student is a plain
# RetinaNet R50 (DetectionDistiller.student_state_dict()).
_base_ = ['./fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(deploy_mode='student', ema_momentum=None)
