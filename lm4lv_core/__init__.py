"""LM4LV: a frozen LLM for low-level vision (restoration and spatial tasks) through a ViT-MAE and linear adapters."""

from .errors import CheckpointError, InputError, LM4LVError
from .model import LM4LV
from .restore import Result
from .tasks import TASKS

__all__ = ["LM4LV", "Result", "TASKS", "LM4LVError", "InputError", "CheckpointError"]
