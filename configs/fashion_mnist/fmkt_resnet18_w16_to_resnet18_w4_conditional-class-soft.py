# The class-conditional flow with a soft guess at inference: the meta-encoder
# reads the embeddings averaged under the probabilities the flow's head gives
# the untransported feature, instead of the embedding of its argmax.
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4_conditional-class.py']
distiller = dict(flow=dict(condition=dict(inference='soft')))
