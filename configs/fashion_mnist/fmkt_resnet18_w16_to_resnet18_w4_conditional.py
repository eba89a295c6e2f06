# FM-KT with a conditional flow network: the meta-encoder also reads a context
# vector, here the global-average-pooled student feature map (an image
# summary, layer-normalised), added to its input next to the time embedding.
# Other conditions: dict(type='class') (see the _conditional-class config),
# dict(type='task'), or a list of them (contexts concatenated).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(flow=dict(condition=dict(type='pooled')))
