"""tensorize: map loop programs onto hardware intrinsics by equality saturation."""

from .pipeline import TensorizeResult, tensorize
from .script import ScriptError, parse, parse_file, show

__all__ = ["ScriptError", "TensorizeResult", "parse", "parse_file", "show", "tensorize"]
