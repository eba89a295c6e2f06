"""FM-KT for mmdet detectors (feature-based, one flow per FPN level).

The flows sit between the student's neck and its heads, so the distiller
works for any detector with a neck (one-stage, two-stage, anchor-free, DETR
family) without knowing its heads::

    student.backbone -> student.neck -> (hook: flows) -> student heads
                                            |
    teacher.backbone -> teacher.neck  ------+  (teacher's forward stops here)

Everything but the task lives in
:class:`~fmkt_mm.distill.level_flow_distiller.LevelFlowDistiller`: the task
losses keep their mmdet names and ``predict`` returns mmdet
``DetDataSample`` s with ``pred_instances``.
"""
from ..registry import MODELS
from .level_flow_distiller import LevelFlowDistiller


@MODELS.register_module()
class DetectionDistiller(LevelFlowDistiller):
    """Distils an mmdet detector with FM-KT, one flow per FPN level; the
    arguments are :class:`LevelFlowDistiller`'s (the levels of the
    ``neck`` by default, the first four, deploy mode ``'flow'``)."""

    prediction_field = 'pred_instances'
