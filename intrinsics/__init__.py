"""Hardware intrinsics: declaring them (meaning as script + how to emit), the built-in
library, one instruction set per file, and intrinsics compiled on their own. Importing the
package registers the built-ins (the parser also finds them without it, through the
``tensorize.intrinsics`` entry point).

    import intrinsics
    intrinsics.library("host")                 # what this CPU runs natively
    impl = intrinsics.compile_intrinsic("x86.fma.f32x8")
    impl(c=c, a=a, b=b)                        # numpy arrays, any strides
"""

from .base import (TARGETS, Intrinsic, IntrinsicError, IterDim, Layout, Operand, all, describe,
                   generation, get, host_features, intrinsic, library, load_file, register,
                   unregister)
from .emit import (CompiledIntrinsic, Emitter, Emulated, LlvmText, Ref, compile_intrinsic,
                   emitter_of)
from . import x86  # noqa: E402,F401 - registers the built-in library, x86 first
from . import amx, arm, nvidia  # noqa: E402,F401

__all__ = ["TARGETS", "Intrinsic", "IntrinsicError", "IterDim", "Layout", "Operand", "all",
           "describe", "generation", "get", "host_features", "intrinsic", "library",
           "load_file", "register", "unregister", "CompiledIntrinsic", "Emitter", "Emulated",
           "LlvmText", "Ref", "compile_intrinsic", "emitter_of"]
