# FM-KT from two teachers of different widths (ResNet-18 w16 and w8), one flow
# per teacher: each flow carries the student toward its teacher's logits, the
# flow losses are weighed by the teachers' weights (relative, normalised to
# sum to 1), and prediction is the weighted mean of the flows' ensembles
# (deploy_teacher=0 or 'resnet18_w8' predicts with one teacher's flow).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(
    _delete_=True,
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='flow',
    teachers=[
        dict(config='{{fileDirname}}/teacher_resnet18_w16.py',
             checkpoint='work_dirs/fashion_mnist/teacher.pth', weight=1.0, name='resnet18_w16'),
        dict(config='{{fileDirname}}/teacher_resnet18_w8.py',
             checkpoint='work_dirs/fashion_mnist/teacher_w8.pth', weight=1.0, name='resnet18_w8'),
    ],
    teacher_flows='separate',
    deploy_teacher='mean',
    flow=dict(path='ve', encoder=dict(type='mlp', hidden_ratio=2.0), num_steps=8,
              loss=dict(type='fmkt_mm.KDLoss', tau=4.0)),
    student_tap='backbone',
    teacher_tap='head',
    dummy_input_shape=(1, 28, 28))
