# FM-KT for RetinaNet with measured invertibility: each level's flow also
# learns to be retraced by its reverse sampler (cycle consistency, weight
# 0.1), and validation and test log the round-trip errors per level
# (val/flow/roundtrip_s2t2s_l0, ...) and over all levels
# (val/flow/roundtrip_s2t2s, val/flow/roundtrip_t2s2t). The teacher's FPN
# levels live in the student flows' space here (same shapes), so
# teacher -> student -> teacher starts from the teacher's real features.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
distiller = dict(roundtrip_loss_weight=0.1)
custom_hooks = [dict(type='fmkt_mm.FlowRoundTripHook', refine=0)]
