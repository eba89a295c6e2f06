# The deploy-flow recipe with the authors' 3x3 'conv' meta-encoder (SiLU, 3x3
# conv, GroupNorm, SiLU, 3x3 conv, then a 3x3 output conv) instead of the
# token-wise MLP: about 1.5x the arithmetic of the PKD step at N = 4 on COCO
# sizes, against 1.1x for the MLP.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
distiller = dict(flow=dict(encoder=dict(_delete_=True, type='conv', num_blocks=1)))
