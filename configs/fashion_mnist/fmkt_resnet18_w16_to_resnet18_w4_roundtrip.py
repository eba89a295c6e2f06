# FM-KT with a measured (and trained) invertibility: the flow also learns to
# be retraced by its reverse sampler (cycle consistency, weight 0.1; N more
# meta-encoder calls per iteration), and every validation and test logs the
# round-trip errors student -> teacher -> student and teacher -> student ->
# teacher (val/flow/roundtrip_s2t2s, ..._t2s2t) at N = 1, 2, 4, 8, with the
# explicit reverse sampler (refine=0; raise it for the exact inverse of the
# N-step map, at N meta-encoder calls per iteration of refinement).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(roundtrip_loss_weight=0.1)
custom_hooks = [
    dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8)),
    dict(type='fmkt_mm.FlowRoundTripHook', num_steps=(1, 2, 4, 8), refine=0),
]
