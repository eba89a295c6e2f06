# FM-KT as in the paper, on the decode head's logits: the segmentor predicts
# from the flow's ensemble of the logit map (the deployed model is student +
# flow); all of CWD's distillation weight (3) is on the flow's terms.
# FlowStepsHook scores the ensemble at N = 1, 2, 4 and 8 steps in one test
# pass (mIoU per count).
_base_ = ['./fmkt_pspnet_r18w32_to_r18w8_deploy-student.py']
distiller = dict(deploy_mode='flow', level_weights=3.0)
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=4, test_steps=(1, 2, 4, 8))]
