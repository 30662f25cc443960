"""tensorize: map loop programs onto hardware intrinsics by equality saturation."""

from .script import ScriptError, parse, parse_file, show

__all__ = ["ScriptError", "parse", "parse_file", "show"]
