# The paper's RetinaNet recipe: a flow of the level's full 256 channels per
# FPN level, each with its own meta-encoder, one call per level and step.
# The deploy-flow config beside this file runs lean flows instead (64
# channels, levels batched): cheaper, and a tie on the composed set.
_base_ = ['./fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(flow=dict(width=None, shared_encoder=False, batch_levels=False, condition=None))
