"""FM-KT for mmseg segmentors (``EncoderDecoder``: any backbone and decode head).

The same flows as :class:`~fmkt_mm.distill.detector.DetectionDistiller`, on a
segmentor's tapped outputs, so nothing here knows a decode head:

* **features** (``student_tap='backbone'``, ``levels=(3, )``): a flow carries
  the backbone stage the decode head reads (PSPNet's and DeepLabV3's
  ``in_index=3``) toward the teacher's; in deploy mode ``'flow'`` the decode
  head reads the flow's ensemble, and the auxiliary head keeps reading its
  own raw stage (``in_index=2``) and its own loss;
* **per-pixel logits** (``student_tap='decode_head.conv_seg'``,
  ``teacher_tap='decode_head.conv_seg'``, ``levels=(0, )``): the flow
  carries the decode head's logit map toward the teacher's (the paper's
  logit mode, applied to every pixel), with a dense metric loss on every
  step (``CWDLoss``, ``PixelKDLoss``). (Tap the head's last convolution:
  mmseg calls ``decode_head.forward`` directly, so a hook on the head itself
  never fires.)

Deploy modes: ``'student'`` (FM-KT^Theta: the raw student is pulled toward
the flow's detached ensemble; the exported model is a plain mmseg segmentor,
zero inference cost) and ``'flow'`` (prediction runs the flow; with
:class:`~fmkt_mm.hooks.FlowStepsHook` each sample also gets
``pred_sem_seg_steps{N}`` and mmseg's ``IoUMetric`` scores every count).
The teacher runs only until its tap; several teachers, adapters for other
widths or sizes, the EMA of the flows, raw-loss and round-trip options are
the detection distiller's.
"""
from typing import Optional, Sequence, Union

from ..registry import MODELS
from .detector import DetectionDistiller
from .levels import LevelSpec


@MODELS.register_module()
class SegmentationDistiller(DetectionDistiller):
    """FM-KT for an mmseg ``EncoderDecoder`` student and teacher (see the
    module docstring); the arguments are :class:`DetectionDistiller`'s, with
    segmentation defaults: the last backbone stage, deploy mode ``'student'``.
    """

    prediction_field = 'pred_sem_seg'

    def __init__(self, student: dict, teacher: Optional[dict] = None, flow: Optional[dict] = None,
                 levels: Sequence[LevelSpec] = (3, ), level_weights: Union[float, Sequence[float]] = 1.0,
                 student_tap: str = 'backbone', teacher_tap: str = 'backbone',
                 deploy_mode: str = 'student', dummy_input_shape: Sequence[int] = (3, 64, 64),
                 **kwargs) -> None:
        super().__init__(student, teacher, flow, levels=levels, level_weights=level_weights,
                         student_tap=student_tap, teacher_tap=teacher_tap, deploy_mode=deploy_mode,
                         dummy_input_shape=dummy_input_shape, **kwargs)

    @classmethod
    def deploy_mode_of(cls, cfg: dict) -> str:
        return cfg.get('deploy_mode', 'student')
