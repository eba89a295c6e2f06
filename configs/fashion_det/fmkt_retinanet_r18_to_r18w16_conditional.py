# FM-KT for RetinaNet with one conditional flow network for all four FPN
# levels: a single meta-encoder (shared_encoder=True) reads, besides state and
# time, a learned embedding of the level it transports and the pooled level
# feature (an image summary). One encoder instead of four.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
distiller = dict(
    flow=dict(condition=[dict(type='level', dim=16), dict(type='pooled')]),
    shared_encoder=True)
