"""MMEngine hooks of fmkt_mm."""
from .checkpoint import SafeCheckpointHook
from .flow_steps import FlowStepsHook, LossScheduleHook
from .ops import (ExportStudentHook, LossWeightScheduleHook, RandomStateHook, StopDistillationHook,
                  TeacherEvalHook)

__all__ = ['FlowStepsHook', 'LossScheduleHook', 'SafeCheckpointHook',
           'ExportStudentHook', 'LossWeightScheduleHook', 'RandomStateHook', 'StopDistillationHook',
           'TeacherEvalHook']
