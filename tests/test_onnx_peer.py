"""The ONNX Runtime peer of ``tensorize bench --onnxruntime``: which layers are read as which
model, checked by evaluating the model's operators with numpy (written here, independently of
the code under test) against the interpreter; and, where ONNX Runtime is installed, that the
session computes what the function does and that a model giving other values is dropped."""

from __future__ import annotations

import numpy as np
import pytest

from rewrite import runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.script import parse
from rewrite.tools import bench, onnx_peer

CONV = """
@prim_func
def conv(X: f32[1, 9, 8, 5], W: f32[KH, KW, 5, 6], Y: f32[1, OH, OW, 6]):
    P = alloc(f32[1, PH, PW, 5])
    for n, h, w, c in grid(1, PH, PW, 5):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 9, 8, 5):
        P[n, h + TOP, w + LEFT, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, OH, OW, 6):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(KH, KW, 5):
            Y[n, h, w, co] += P[n, S * h + D * rh, S * w + D * rw, rc] * W[rh, rw, rc, co]
"""


def _conv(kh=3, kw=3, top=1, left=1, bottom=1, right=1, s=1, d=1) -> str:
    ph, pw = 9 + top + bottom, 8 + left + right
    oh, ow = (ph - d * (kh - 1) - 1) // s + 1, (pw - d * (kw - 1) - 1) // s + 1
    text = CONV
    for key, value in (("KH", kh), ("KW", kw), ("PH", ph), ("PW", pw), ("OH", oh), ("OW", ow),
                       ("TOP", top), ("LEFT", left), ("S", s), ("D", d)):
        text = text.replace(key, str(value))
    return text


DENSE = """
@prim_func
def dense(A: f32[12, 10], B: f32[10, 7], bias: f32[7], Y: f32[12, 7]):
    C = alloc(f32[12, 7])
    for i, j in grid(12, 7):
        C[i, j] = 0.0
        for k in range(10):
            C[i, j] += A[i, k] * B[k, j]
    for i, j in grid(12, 7):
        Y[i, j] = max(C[i, j] + bias[j], 0.0)
"""

MATMUL_INT8 = """
@prim_func
def q(A: u8[6, 8], B: i8[8, 5], C: i32[6, 5]):
    for i, j in grid(6, 5):
        C[i, j] = 0
        for k in range(8):
            C[i, j] += i32(A[i, k]) * i32(B[k, j])
"""

MATMUL_ZERO_POINTS = """
@prim_func
def qz(A: u8[6, 8], B: i8[8, 5], za: u8[1], zb: i8[1], C: i32[6, 5]):
    for i, j in grid(6, 5):
        C[i, j] = 0
        for k in range(8):
            C[i, j] += (i32(A[i, k]) - i32(za[0])) * (i32(B[k, j]) - i32(zb[0]))
"""


def _evaluate(model: onnx_peer.Model) -> np.ndarray:
    """The model's output by ONNX's definitions of its operators, in numpy."""
    values = dict(model.feeds)
    for op, ins, (out,), attributes in model.nodes:
        x = [values[n] for n in ins]
        if op in ("MatMul", "MatMulInteger"):
            wide = np.float64 if op == "MatMul" else np.int64
            a, b = x[0].astype(wide), x[1].astype(wide)
            if len(x) == 4:  # MatMulInteger's zero points, one for each tensor
                a, b = a - x[2].astype(wide), b - x[3].astype(wide)
            values[out] = np.matmul(a, b)
        elif op == "Add":
            values[out] = x[0] + x[1]
        elif op == "Relu":
            values[out] = np.maximum(x[0], 0)
        elif op == "Conv":
            values[out] = _conv_nchw(x[0].astype(np.float64), x[1].astype(np.float64), **attributes)
        else:
            raise AssertionError(op)
    return model.to_ours(values["Z"])


def _conv_nchw(x, w, kernel_shape, strides, dilations, pads):
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for a in range(kh):
        for b in range(kw):
            window = x[:, :, dh * a: dh * a + sh * (oh - 1) + 1: sh, dw * b: dw * b + sw * (ow - 1) + 1: sw]
            y += np.einsum("nchw,oc->nohw", window, w[:, :, a, b])
    return y


def _read(src: str):
    func = parse(src)
    args = random_args(func, seed=3)
    return func, args, onnx_peer.layer(func, args)


@pytest.mark.parametrize("geometry", [
    {}, {"top": 0, "left": 0, "bottom": 0, "right": 0}, {"top": 2, "left": 0, "bottom": 1, "right": 3},
    {"s": 2}, {"d": 2, "top": 2, "left": 2, "bottom": 2, "right": 2}, {"kh": 1, "kw": 3, "s": 2, "d": 3}])
def test_a_convolution_is_read_as_conv_with_its_pads_strides_and_dilations(geometry):
    func, args, model = _read(_conv(**geometry))
    assert model is not None and [n[0] for n in model.nodes] == ["Conv"]
    attributes = model.nodes[0][3]
    g = {"top": 1, "left": 1, "bottom": 1, "right": 1, "s": 1, "d": 1, **geometry}
    assert attributes["pads"] == [g["top"], g["left"], g["bottom"], g["right"]]
    assert attributes["strides"] == [g["s"]] * 2 and attributes["dilations"] == [g["d"]] * 2
    np.testing.assert_allclose(_evaluate(model), run(func, **args)["Y"], rtol=1e-5, atol=1e-5)


def test_a_dense_layer_is_matmul_add_relu_and_without_relu_matmul_add():
    func, args, model = _read(DENSE)
    assert [n[0] for n in model.nodes] == ["MatMul", "Add", "Relu"]
    np.testing.assert_allclose(_evaluate(model), run(func, **args)["Y"], rtol=1e-5, atol=1e-5)
    func, args, model = _read(DENSE.replace("max(C[i, j] + bias[j], 0.0)", "bias[j] + C[i, j]"))
    assert [n[0] for n in model.nodes] == ["MatMul", "Add"]
    np.testing.assert_allclose(_evaluate(model), run(func, **args)["Y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a, b", [("u8", "i8"), ("i8", "i8"), ("u8", "u8")])
def test_products_keep_their_operators(a, b):
    func, args, model = _read(MATMUL_INT8.replace("A: u8", f"A: {a}").replace("B: i8", f"B: {b}"))
    assert [n[0] for n in model.nodes] == ["MatMulInteger"] and model.out_type == "int32"
    np.testing.assert_array_equal(_evaluate(model), run(func, **args)["C"])


def test_a_product_with_zero_points_is_matmulinteger_with_them():
    func, args, model = _read(MATMUL_ZERO_POINTS)
    ((op, ins, _, _),) = model.nodes
    assert op == "MatMulInteger" and len(ins) == 4
    np.testing.assert_array_equal(_evaluate(model), run(func, **args)["C"])
    # zero points of the wrong tensors' dtypes, or on one side only: no such operator
    assert _read(MATMUL_ZERO_POINTS.replace("i32(zb[0])", "i32(za[0])"))[2] is None
    assert _read(MATMUL_ZERO_POINTS.replace(" - i32(zb[0])", ""))[2] is None


@pytest.mark.parametrize("src", [
    # a depthwise convolution: the weights do not run over the input channels
    _conv().replace("W: f32[3, 3, 5, 6]", "W: f32[3, 3, 6]").replace("Y: f32[1, 9, 8, 6]", "Y: f32[1, 9, 8, 5]")
    .replace("grid(1, 9, 8, 6)", "grid(1, 9, 8, 5)").replace("grid(3, 3, 5)", "grid(3, 3)")
    .replace("rw, rc] * W[rh, rw, rc, co]", "rw, co] * W[rh, rw, co]").replace("rh, rw, rc in", "rh, rw in"),
    # accumulates into what the caller passed
    _conv().replace("        Y[n, h, w, co] = 0.0\n", ""),
    # the padded copy is not zeroed first
    _conv().replace("        P[n, h, w, c] = 0.0\n", "        P[n, h, w, c] = 1.0\n"),
    # reads the input flipped
    _conv().replace("1 * h + 1 * rh", "1 * h + 2 - 1 * rh"),
    # the bias runs along rows
    DENSE.replace("bias: f32[7]", "bias: f32[12]").replace("bias[j]", "bias[i]"),
    # something else happens too
    DENSE.replace("Y[i, j] = max(C[i, j] + bias[j], 0.0)", "Y[i, j] = max(C[i, j] + bias[j], 0.0)\n"
                  "    for i in range(7):\n        bias[i] = 0.0"),
])
def test_what_is_no_such_layer_gets_no_model(src):
    assert _read(src)[2] is None


def test_onnxruntime_runs_each_layer_and_agrees_with_our_kernel():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for src, out in ((_conv(s=2, top=2), "Y"), (DENSE, "Y"), (MATMUL_INT8, "C"), (MATMUL_ZERO_POINTS, "C")):
        func = parse(src)
        kernel = runtime.compile(func, threads=1)
        call = bench.onnxruntime_counterpart(func, kernel, threads=1)
        assert call is not None, func.name
        want = run(func, **call.args)[out]
        np.testing.assert_allclose(call.result(), want, rtol=1e-4, atol=1e-4)


def test_a_model_that_computes_something_else_is_dropped(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    func = parse(DENSE)
    kernel = runtime.compile(func, threads=1)

    def wrong(**args):  # a kernel whose ReLU was forgotten
        kernel(**args)
        args["Y"][...] = args["Y"] - 1.0

    assert bench.onnxruntime_counterpart(func, wrong, threads=1) is None
    assert "no ONNX Runtime figure" in capsys.readouterr().err


def test_a_u8_model_that_differs_on_full_range_inputs_is_timed_below_128(monkeypatch, capsys):
    """ONNX Runtime's u8 x i8 kernels for CPUs without VNNI saturate 16-bit pair sums: a
    model that differs only where a u8 input reaches 128 is checked and timed on inputs
    below that, and stderr says so."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    real = onnx_peer.counterpart

    def saturating(func, model, threads):
        call = real(func, model, threads)
        if any(v.dtype == np.uint8 and v.max() >= 128 for v in model.feeds.values()):
            exact = call.result
            call.result = lambda: exact() + 1
        return call

    monkeypatch.setattr(onnx_peer, "counterpart", saturating)
    func = parse(MATMUL_INT8)
    call = bench.onnxruntime_counterpart(func, runtime.compile(func, threads=1), threads=1)
    assert call is not None
    assert all(a.max() < 128 for a in call.args.values() if a.dtype == np.uint8)
    assert any(a.dtype == np.uint8 for a in call.args.values())
    np.testing.assert_array_equal(call.result(), run(func, **call.args)["C"])
    err = capsys.readouterr().err
    assert "differs from this function on full-range u8 inputs" in err and "below 128" in err
