"""cmr_lib: the tested library behind the cmr-stylize notebooks.

Style-transfer domain adaptation (RAIN, AdaConv) for bSSFP -> LGE cardiac MR segmentation.
Modules hold one concept each; notebooks call `params`, `data`, `experiment` and `plots`.
"""
from cmr_lib.core.errors import CmrError

__all__ = ["CmrError"]
__version__ = "0.1.0"
