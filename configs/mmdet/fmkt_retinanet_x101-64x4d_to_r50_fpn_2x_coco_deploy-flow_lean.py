# The deploy-flow recipe beside this file with lean flows, for a GPU where the
# plain student's batch barely fits: every level's flow runs on a learned
# 64-channel projection of its 256-channel level (flow.width; the level moves by
# a low-rank correction), and one shared MLP meta-encoder, told the level by an
# embedding, carries all four levels in one call per step (flow.batch_levels).
#
# Measured at 1333x800, batch 2, against PKD (docs/benchmarks.md, "Detection at
# COCO's resolution"): 1.12x its operators and 1.15x its peak memory, where the
# recipe beside this file costs 1.23x and 1.23x. On the composed detection set
# the same two switches tie the default recipe (6 paired runs, within about a
# point); COCO accuracy is not measured.
_base_ = ['./fmkt_retinanet_x101-64x4d_to_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(
    flow=dict(width=64, shared_encoder=True, batch_levels=True, condition=dict(type='level')))
