"""The PolyBench benchmark compares every kernel's outputs with numpy's formula before timing
it: a formula's result names buffers of the kernel, one or a tuple of them."""

import numpy as np
import pytest

from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.tools.polybench_bench import FORMULAS, agrees, kernels, native_library

FUNCS = kernels()


def test_every_output_named_is_a_buffer_of_the_kernel():
    for name, (_, out) in FORMULAS.items():
        if name not in FUNCS or out is None:
            continue
        params = {p.name for p in FUNCS[name].params}
        names = out if isinstance(out, tuple) else (out,)
        assert set(names) <= params, (name, names, params)


@pytest.mark.parametrize("name", ["bicg", "mvt"])
def test_a_tuple_of_outputs_is_compared_whole(name):
    formula, out = FORMULAS[name]
    assert isinstance(out, tuple)
    args = {k: np.asarray(v) for k, v in random_args(FUNCS[name], seed=0).items()}
    want = run(FUNCS[name], **{k: v.copy() for k, v in args.items()})
    theirs = formula({k: v.copy() for k, v in args.items()})
    assert len(theirs) == len(out)
    assert agrees(want, theirs, out)
    for i in range(len(out)):  # each part counts: a wrong one is a disagreement
        wrong = tuple(r + np.float32(1.0) if j == i else r for j, r in enumerate(theirs))
        assert not agrees(want, wrong, out)


def test_a_smaller_library_is_one_the_host_runs():
    import intrinsics
    from rewrite.target import host

    # timing an emulation would say nothing: a target with an intrinsic this CPU does not
    # run is refused (every x86 host lacks arm-dotprod's), and so is one with none at all
    with pytest.raises(SystemExit, match="does not run"):
        native_library("arm-dotprod")
    for empty in [t for t in intrinsics.TARGETS if not intrinsics.library(t)][:1]:
        with pytest.raises(SystemExit, match="no intrinsics"):
            native_library(empty)
    if {"avx2", "fma"} <= host().features:
        names = {d.name for d in native_library("x86-avx2")}
        assert "x86.gemv.f32.4x8" in names and not any("avx512" in n for n in names)
