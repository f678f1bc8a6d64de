"""cmr_lib: the tested library behind the cmr-stylize notebooks.

Style-transfer domain adaptation (RAIN, AdaConv) for bSSFP -> LGE cardiac MR segmentation.
Sub-packages by job, lowest first: core, data, models, evaluation, training, report, study (README: Layout).
"""
from cmr_lib.core.errors import CmrError

__all__ = ["CmrError"]
__version__ = "0.1.0"
