# As fmkt_retinanet-fcos_r18_to_r18w16_deploy-student.py, with one flow per
# level shared by both teachers and conditioned on the teacher (the parameters
# of one set of flows plus a teacher embedding).
_base_ = ['./fmkt_retinanet-fcos_r18_to_r18w16_deploy-student.py']
distiller = dict(teacher_flows='shared')
