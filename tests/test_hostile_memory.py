"""No kernel reads or writes outside its arguments, and the compiled code means what the
interpreter means.

Two ways a verified program used to escape: index arithmetic that wraps in 64 bits (the bound
check computed with exact integers), and intrinsic calls whose windows alias (the emitters load
a block, compute and store it, where the semantics go element by element). Both are refused
now, with one located line. The property tests place guard zones around every argument and
check that running the kernel leaves them as they were.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import intrinsics
from rewrite import runtime
from rewrite.interp import random_args, run
from rewrite.ir import INDEX, Binary, Buffer, Call, Const, For, Load, PrimFunc, Store, Var, Window, numpy_dtype
from rewrite.pipeline import tensorize
from rewrite.script import ScriptError, parse, parse_all, parse_file
from rewrite.verify import VerifyError, index_overflow, verify

from .strategies import programs
from .test_codegen import _exact, assert_same

ROOT = Path(__file__).parent.parent
MAX = 9223372036854775807


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def refusal(src: str) -> str:
    with pytest.raises(ScriptError) as e:
        parse(src, "t.py")
    return str(e.value)


# ---------------------------------------------------------------------------
# 1. index arithmetic: the bound check and the wrapping code must agree


def test_wrapping_floor_division_index_is_refused():
    # accepted before (exactly: 2**63 // 2**23 - 2**40 == 0) and it segfaulted: in 64 bits
    # i + MAX + 1 wraps to -2**63, and the store landed 2**41 elements before B
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[1]):
    for i in range(1):
        B[(i + 9223372036854775807 + 1) // 8388608 - 1099511627776] = A[0]
""")
    assert msg == ("t.py:5:12: index (i + 9223372036854775807 + 1) // 8388608 - 1099511627776 of B "
                   "computes i + 9223372036854775807 + 1, which can reach "
                   "9223372036854775808..9223372036854775808: index arithmetic must stay within "
                   "the 64-bit range")


def test_wrapping_modulo_index_is_refused():
    # exactly 2**63 % 5 - 3 == 0, in 64 bits (-2**63) % 5 - 3 == -1: B[-1] is big[0] for a
    # view B = big[1:3]
    msg = refusal("""
@prim_func
def f(A: f32[2], B: f32[2]):
    for i in range(1):
        B[(i + 9223372036854775807 + 1) % 5 - 3] = A[i]
""")
    assert msg.startswith("t.py:5:12: index (i + 9223372036854775807 + 1) % 5 - 3 of B computes "
                          "i + 9223372036854775807 + 1, which can reach")
    assert "\n" not in msg


@pytest.mark.parametrize("line, where, words", [
    # an intermediate sum past the top, though the final index is 0
    ("B[i + 9223372036854775807 - 9223372036854775807] = A[0]", "5:11", "i + 9223372036854775807"),
    # a product past the top inside the operand of %
    ("B[(4611686018427387904 * (i + 1)) % 2] = A[0]", "5:12", "4611686018427387904 * (i + 1)"),
    # the same on a load
    ("B[0] = A[(i + 9223372036854775807) // 9223372036854775807]", "5:19", "i + 9223372036854775807"),
    # a literal that is no i64 at all
    ("B[i + 9223372036854775808] = A[0]", "5:15", "the literal 9223372036854775808 does not fit i64"),
    ("B[i - 9223372036854775809] = A[0]", "5:15", "does not fit i64"),
])
def test_index_values_past_64_bits_are_refused(line, where, words):
    msg = refusal(f"""
@prim_func
def f(A: f32[2], B: f32[2]):
    for i in range(2):
        {line}
""")
    assert msg.startswith(f"t.py:{where}: ") and words in msg and "\n" not in msg


def test_negation_of_the_smallest_value_is_refused():
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[1]):
    for i in range(-9223372036854775808, -9223372036854775807):
        B[-i - 9223372036854775807 - 1] = A[0]
""")
    assert msg.startswith("t.py:5:11: ") and "computes -i, which can reach 9223372036854775808" in msg


def test_loop_bounds_past_64_bits_are_refused():
    # the loop counter reaches ``stop``: range(.., 2**63) would wrap it
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[2]):
    for i in range(9223372036854775806, 9223372036854775808):
        B[i - 9223372036854775806] = A[0]
""")
    assert msg == ("t.py:4:5: the bounds of loop i, range(9223372036854775806, 9223372036854775808), "
                   "must lie within the 64-bit range -9223372036854775808..9223372036854775807")


def test_large_values_that_never_wrap_are_accepted_and_agree():
    # every intermediate value fits: the compiled code and the interpreter agree with the check
    f = parse("""
@prim_func
def f(A: f32[4], B: f32[4]):
    for i in range(9223372036854775803, 9223372036854775807):
        B[(i - 9223372036854775803) % 4] = A[3 - (9223372036854775806 - i) // 1]
""")
    a = np.arange(4, dtype=np.float32)
    want = run(f, A=a)["B"]
    got = np.zeros(4, np.float32)
    runtime.compile(f, threads=1)(A=a, B=got)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, a)


def test_index_overflow_reports_the_innermost_offender():
    i = Var("i")
    e = Binary("//", Binary("+", Binary("+", i, Const(MAX, INDEX)), Const(1, INDEX)), Const(8, INDEX))
    from rewrite.verify import Interval

    sub, r = index_overflow(e, {"i": Interval(0, 0)})
    assert sub == e.a and (r.lo, r.hi) == (MAX + 1, MAX + 1)
    assert index_overflow(e, {"i": Interval(-1, -1)}) is None
