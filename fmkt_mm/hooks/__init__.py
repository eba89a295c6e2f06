"""MMEngine hooks of fmkt_mm."""
from .checkpoint import SafeCheckpointHook
from .flow_steps import FlowStepsHook, LossScheduleHook
from .ops import (ExportStudentHook, LossWeightScheduleHook, RandomStateHook, StopDistillationHook,
                  TeacherEvalHook)
from .progressive import ProgressiveDistillationHook
from .roundtrip import FlowRoundTripHook

__all__ = ['FlowStepsHook', 'LossScheduleHook', 'SafeCheckpointHook', 'ProgressiveDistillationHook',
           'FlowRoundTripHook',
           'ExportStudentHook', 'LossWeightScheduleHook', 'RandomStateHook', 'StopDistillationHook',
           'TeacherEvalHook']
