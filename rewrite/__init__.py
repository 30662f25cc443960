"""tensorize: map loop programs onto hardware intrinsics by equality saturation.

The names below load their module on first use, so ``import rewrite.ir`` loads the IR alone.
"""

from importlib import import_module

_EXPORTS = {"ScriptError": "script", "parse": "script", "parse_file": "script", "show": "script",
            "TensorizeResult": "pipeline", "tensorize": "pipeline", "grad": "autodiff",
            "gradcheck": "numgrad", "GradCheck": "numgrad"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rewrite' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
