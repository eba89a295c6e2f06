# FM-KT as in the paper: the decode head reads the flow's ensemble (the
# deployed model is student + flow); FlowStepsHook scores the ensemble at
# N = 1, 2, 4 and 8 steps in one test pass (mIoU per count).
_base_ = ['./fmkt_pspnet_r18w32_to_r18w8_deploy-student.py']
distiller = dict(deploy_mode='flow')
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=4, test_steps=(1, 2, 4, 8))]
