# FM-KT from two teachers through one shared flow conditioned on the teacher (a
# learned teacher embedding): the parameters of one flow plus the condition,
# whatever the number of teachers. The flow runs once per iteration on the
# batch stacked once per teacher.
_base_ = ['./fmkt_2teachers_resnet18_w16-w8_to_resnet18_w4.py']
distiller = dict(teacher_flows='shared')
