# FM-KT with a class-conditional flow: in training the meta-encoder reads an
# embedding of the ground-truth label (dropped to a learned "no class" entry
# for 10% of the samples); at inference, where there is no label, it reads
# the embedding of the class the student itself predicts (the flow's head on
# the untransported feature). inference='soft' averages the embeddings under
# the predicted probabilities; inference='none' uses the "no class" entry.
# Measured on this pair (README, FlowDistill): this setting falls to 27.7% top-1
# (the flow follows the student's wrong guesses); the "-none" config, which is
# also ClassCondition's default (inference='none', drop_prob=0.5), reaches 71.8%.
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(flow=dict(condition=dict(type='class', dim=16, inference='predicted',
                                          drop_prob=0.1)))
