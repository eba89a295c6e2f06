# The class-conditional flow that never guesses: half of the training samples
# read the learned "no class" entry instead of their label, and inference reads
# that entry alone (the label only shapes training, as a dropout of the
# condition).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4_conditional-class.py']
distiller = dict(flow=dict(condition=dict(inference='none', drop_prob=0.5)))
