# As fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py (same model-zoo teacher, by URL), with
# lean flows on P2-P5: each level's flow on a learned 64-channel projection of its 256 channels
# (flow.width), one shared MLP meta-encoder told the level by an embedding carrying all four levels in
# one call per step (batch_levels), and PKD's step losses computed from the estimates' factors
# (flow.factored: the N full-width estimates at P2 are never formed; the same values to rounding).
# Cheaper at COCO's resolution than the paper's full-width flows; on the composed set its accuracy
# against them is not settled (docs/benchmarks.md, "Faster R-CNN: which levels the flows must
# cover"), so the deploy-flow config keeps the paper's recipe.
_base_ = ['./fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(
    flow=dict(width=64, shared_encoder=True, batch_levels=True, condition=dict(type='level'), factored=True))
