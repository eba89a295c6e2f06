# Flow-guided progressive FM-KT for RetinaNet: coarse to fine and shallow to
# deep. The distillation loss starts on the two coarsest distilled FPN levels
# (P5, P6), adds P4 from epoch 2 and P3 from epoch 4; the flows train with 1
# step, then 2 (epoch 2), then 4 (epoch 4). Levels whose multiplier is 0 still
# run their flow (the head reads it), they are only not pulled to the teacher.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
custom_hooks = [
    dict(type='fmkt_mm.ProgressiveDistillationHook', by_epoch=True,
         num_steps=dict(milestones=[2, 4], values=[1, 2, 4]),
         level_weights=dict(milestones=[2, 4],
                            values=[[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])),
]
