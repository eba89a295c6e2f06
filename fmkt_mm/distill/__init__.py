"""MMEngine models that wrap a student and a frozen teacher."""
from .adapters import FeatureAdapter
from .base import BaseDistiller
from .baselines import FeatureDistiller, LogitDistiller
from .classifier import ClassificationDistiller, ClassifierTail
from .detector import DetectionDistiller
from .level_flow_distiller import LevelFlowDistiller
from .segmentor import SegmentationDistiller
from .taps import get_module, record_outputs, run_until_tapped

__all__ = ['BaseDistiller', 'ClassificationDistiller', 'ClassifierTail', 'DetectionDistiller',
           'FeatureAdapter', 'FeatureDistiller', 'LevelFlowDistiller', 'LogitDistiller', 'SegmentationDistiller',
           'get_module', 'record_outputs', 'run_until_tapped']
