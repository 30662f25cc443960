"""ONNX Runtime as a peer in ``tensorize bench --onnxruntime``: a function that is one of the
layers ONNX Runtime has an operator for, built as a one-layer model.

- a (batched) matrix product: ``MatMul`` for f32, ``MatMulInteger`` for 8-bit x 8-bit -> i32, plus
  ``Add`` when the product accumulates into the output; ``MatMulInteger`` with its zero
  points for ``(i32(A) - i32(za[0])) * (i32(B) - i32(zb[0]))``, ``za`` u8 and ``zb`` i8;
- a dense layer: an f32 product into a temporary, then ``Y[i, j] = C[i, j] + bias[j]``,
  optionally under ``max(..., 0.0)``: ``MatMul``, ``Add``, ``Relu``;
- a 2-D convolution in NHWC with HWIO weights, read through a zero-padded copy of its input or
  from the input itself, any stride and dilation: ``Conv``, which ONNX Runtime runs in NCHW.

Operands are handed over in the layout the operator wants (transposed views made contiguous
before timing, as a model would store them). Recognising a layer reads the program's
structure only loosely, so a model is used only after its output has been found equal to what
our kernel computed on the same inputs (``differing``): a layer read wrongly gives no peer, never a
figure for different work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from .. import ir
from ..affine import affine
from ..ir import Accumulate, Binary, Cast, Const, Load, PrimFunc, Store, Var
from .bench import contraction, zeroes
from .numpy_steps import ProductDims


@dataclass(frozen=True)
class Model:
    """A one-layer ONNX model: its nodes, its inputs as (name, array), and which buffer of the
    function its output is, in which layout (``to_ours`` maps its output back)."""

    nodes: list[tuple[str, list, list, dict]]  # (operator, inputs, outputs, attributes)
    feeds: dict[str, np.ndarray]
    output: str
    out_shape: tuple[int, ...]
    out_type: str  # "float32" or "int32"
    to_ours: Callable[[np.ndarray], np.ndarray] = lambda y: y


def counterpart(func: PrimFunc, model: Model, threads: int) -> Callable[[], object]:
    """A call running ``model`` (``func``'s layer, read by ``layer``) in ONNX Runtime on its
    feeds; its ``result()`` is the output in the function's layout."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        raise RuntimeError("the ONNX Runtime comparison needs the onnx extra: "
                           "pip install 'tensorize[onnx]'") from None
    types = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8,
             "int32": TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(n, types[v.dtype.name], list(v.shape))
              for n, v in model.feeds.items()]
    out = helper.make_tensor_value_info("Z", types[model.out_type], list(model.out_shape))
    nodes = [helper.make_node(op, ins, outs, **attributes) for op, ins, outs, attributes in model.nodes]
    graph = helper.make_graph(nodes, func.name, inputs, [out])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(onnx_model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = model.feeds
    call = lambda: session.run(None, feeds)  # noqa: E731
    call.result = lambda: model.to_ours(call()[0])  # type: ignore[attr-defined]
    return call


def differing(call, ours: np.ndarray) -> int:
    """How many elements of the peer's output differ from ``ours`` (exactly for integers; for
    floats by more than a different summation order explains); all of them if the shapes do."""
    got = call.result()
    if got.shape != ours.shape:
        return ours.size
    if np.issubdtype(ours.dtype, np.integer):
        return int(np.count_nonzero(got != ours))
    scale = float(np.max(np.abs(ours))) if ours.size else 0.0
    return int(np.count_nonzero(~np.isclose(got, ours, rtol=1e-3, atol=1e-4 * max(scale, 1.0))))


def layer(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Model]:
    """The model of ``func``'s layer, or None."""
    return _product(func, args) or _zero_points(func, args) or _dense(func, args) or _conv2d(func, args)


# ---------------------------------------------------------------------------
# products


def _product(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Model]:
    c = contraction(func)
    if c is None or len(c.operands) != 2:
        return None
    x, y = (args[n] for n in c.operands)
    kinds = (x.dtype.name, y.dtype.name, c.dtype)
    if kinds == ("float32", "float32", "f32"):
        op, out_type = "MatMul", "float32"
    elif kinds[0] in ("uint8", "int8") and kinds[1] in ("uint8", "int8") and kinds[2] == "i32":
        op, out_type = "MatMulInteger", "int32"
    else:
        return None
    dims = ProductDims.of(c.spec)
    if dims is None or len(dims.contracted) != 1 or len(dims.free_a) != 1 or len(dims.free_b) != 1 \
            or list(dims.result) != dims.batch + dims.free_a + dims.free_b:
        return None
    feeds = dict(zip(("X", "Y"), map(np.ascontiguousarray, dims.operands_as_matmul(x, y))))
    nodes = [_node(op, ["X", "Y"], ["P" if not c.init else "Z"])]
    if not c.init:
        feeds["C"] = np.array(args[c.out], copy=True)
        nodes.append(_node("Add", ["C", "P"], ["Z"]))
    return Model(nodes, feeds, c.out, tuple(args[c.out].shape), out_type)


def _zero_points(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Model]:
    """``MatMulInteger`` with both zero points: the product of the bytes read by ``_product``
    from the function with its zero points taken out, their tensors added as the operator's
    third and fourth inputs (scalars: one zero point per tensor)."""
    accs = [s for s, _ in ir.walk_in_loops(func.body) if isinstance(s, Accumulate)]
    if len(accs) != 1:
        return None
    (acc,) = accs
    value = acc.value
    if not (isinstance(value, Binary) and value.op == "*"):
        return None
    sides = []
    for side in (value.a, value.b):
        if not (isinstance(side, Binary) and side.op == "-"):
            return None
        x, z = side.a, side.b
        if not (isinstance(x, Cast) and isinstance(x.a, Load) and isinstance(z, Cast)
                and isinstance(z.a, Load) and z.a.buffer.shape == (1,) and z.a.buffer in func.inputs
                and x.a.buffer.dtype == z.a.buffer.dtype):
            return None
        sides.append((x, z.a.buffer.name))
    zeros = {name for _, name in sides}
    bare = Accumulate(acc.buffer, acc.indices, Binary("*", sides[0][0], sides[1][0]))
    params = tuple(p for p in func.params if p.name not in zeros)
    stripped = PrimFunc(func.name, params, ir.map_stmt(func.body, lambda s: bare if s == acc else s),
                        func.allocs)
    inner = _product(stripped, args)
    if inner is None or inner.nodes[0][0] != "MatMulInteger":
        return None
    feeds = {**inner.feeds, "XZ": np.array(args[sides[0][1]][0]), "YZ": np.array(args[sides[1][1]][0])}
    op, ins, outs, attributes = inner.nodes[0]
    return replace(inner, nodes=[(op, ins + ["XZ", "YZ"], outs, attributes)] + inner.nodes[1:], feeds=feeds)


# ---------------------------------------------------------------------------
# dense layer: a product into a temporary, then bias (and ReLU) into the output


def _dense(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Model]:
    stmts = list(ir.stmts_of(func.body))
    if len(stmts) != 2 or len(func.allocs) != 1:
        return None
    (temp,) = func.allocs
    if temp.dtype != "f32" or len(temp.shape) != 2:
        return None
    product = PrimFunc(func.name, tuple(func.params) + (temp,), stmts[0], ())
    inner = _product(product, {**args, temp.name: np.zeros(temp.shape, np.float32)})
    if inner is None or inner.output != temp.name or "C" in inner.feeds:
        return None
    loops, body = ir.band(stmts[1])
    if len(loops) != 2 or not isinstance(body, Store) or any(f.start != 0 for f in loops):
        return None
    i, j = (f.var for f in loops)
    out = body.buffer
    if out not in func.outputs or tuple(out.shape) != tuple(temp.shape) \
            or [f.extent for f in loops] != list(out.shape) or body.indices != (Var(i), Var(j)):
        return None
    value, relu = body.value, False
    if isinstance(value, Binary) and value.op == "max" and value.b == Const(0.0, "f32"):
        value, relu = value.a, True
    if not (isinstance(value, Binary) and value.op == "+"):
        return None
    sides = [value.a, value.b]
    product_load = Load(temp, (Var(i), Var(j)))
    if product_load not in sides:
        return None
    (bias,) = [s for s in sides if s != product_load] or [None]
    if not (isinstance(bias, Load) and bias.indices == (Var(j),) and bias.buffer in func.inputs):
        return None
    nodes = [(op, ins, ["P"], attributes) for op, ins, _, attributes in inner.nodes]
    nodes.append(_node("Add", ["P", "bias"], ["S" if relu else "Z"]))
    if relu:
        nodes.append(_node("Relu", ["S"], ["Z"]))
    return Model(nodes, {**inner.feeds, "bias": np.ascontiguousarray(args[bias.buffer.name])},
                 out.name, tuple(out.shape), "float32")


# ---------------------------------------------------------------------------
# 2-D convolution, NHWC input and output, HWIO weights


def _conv2d(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Model]:
    leaves = list(ir.walk_in_loops(func.body))
    if any(not isinstance(s, (Store, Accumulate)) or any(f.start for f in loops) for s, loops in leaves):
        return None
    accs = [k for k, (s, _) in enumerate(leaves) if isinstance(s, Accumulate)]
    if len(accs) != 1:
        return None
    acc, loops = leaves[accs[0]]
    y = acc.buffer
    if y.dtype != "f32" or y not in func.outputs or len(y.shape) != 4:
        return None
    extents = {f.var: f.extent for f in loops}
    idx = [i.name if isinstance(i, Var) else None for i in acc.indices]
    if None in idx or [extents.get(v) for v in idx] != list(y.shape):
        return None
    n, h, w, co = idx
    if not (isinstance(acc.value, Binary) and acc.value.op == "*"):
        return None
    loads = [acc.value.a, acc.value.b]
    if not all(isinstance(x, Load) and x.buffer.dtype == "f32" and len(x.indices) == 4 for x in loads):
        return None
    weights = [x for x in loads if x.buffer in func.inputs and all(isinstance(i, Var) for i in x.indices)
               and x.indices[3] == Var(co)]
    if len(weights) != 1:
        return None
    wl = weights[0]
    src = loads[1] if loads[0] is wl else loads[0]
    rh, rw, rc, _ = (i.name for i in wl.indices)
    if [extents.get(v) for v in (rh, rw, rc, co)] != list(wl.buffer.shape) \
            or len({n, h, w, co, rh, rw, rc}) != 7:
        return None
    if src.indices[0] != Var(n) or src.indices[3] != Var(rc):
        return None
    geometry = []
    for e, out_var, red_var in ((src.indices[1], h, rh), (src.indices[2], w, rw)):
        a = affine(e)
        if a is None or set(a.vars) != {out_var, red_var} or a.const != 0 \
                or a.coeff(out_var) < 1 or a.coeff(red_var) < 1:
            return None
        geometry.append((a.coeff(out_var), a.coeff(red_var)))
    (sh, dh), (sw, dw) = geometry
    # the output zeroed whole before the accumulation; beside them, at most a zero-padded copy
    # of the input, which the convolution reads
    zeroed = [k for k, (s, ls) in enumerate(leaves[:accs[0]]) if isinstance(s, Store) and zeroes(s, ls, y)]
    if len(zeroed) != 1:
        return None
    rest = [(s, ls) for k, (s, ls) in enumerate(leaves) if k not in (zeroed[0], accs[0])]
    x, pads = src.buffer, (0, 0, 0, 0)
    if x in func.allocs:
        read = _padded_copy(rest, x, func)
        if read is None:
            return None
        x, pads = read
    elif x not in func.inputs or rest:
        return None
    feeds = {"X": np.ascontiguousarray(np.transpose(args[x.name], (0, 3, 1, 2))),
             "W": np.ascontiguousarray(np.transpose(args[wl.buffer.name], (3, 2, 0, 1)))}
    node = _node("Conv", ["X", "W"], ["Z"], kernel_shape=list(wl.buffer.shape[:2]),
                 strides=[sh, sw], dilations=[dh, dw], pads=list(pads))
    shape = (y.shape[0], y.shape[3], y.shape[1], y.shape[2])
    return Model([node], feeds, y.name, shape, "float32",
                 to_ours=lambda z: np.transpose(z, (0, 2, 3, 1)))


def _padded_copy(leaves, padded, func):
    """``(input, [top, left, bottom, right])`` when ``leaves`` are ``padded`` zeroed whole, then
    an input copied into it at a fixed offset over H and W; else None."""
    if len(leaves) != 2 or not isinstance(leaves[0][0], Store) or not zeroes(*leaves[0], padded):
        return None
    body, loops = leaves[1]
    if not isinstance(body, Store) or body.buffer.name != padded.name or not isinstance(body.value, Load):
        return None
    x = body.value.buffer
    names = [f.var for f in loops]
    if x not in func.inputs or len(x.shape) != 4 or [f.extent for f in loops] != list(x.shape) \
            or body.value.indices != tuple(Var(v) for v in names):
        return None
    offsets = []
    for axis, e in enumerate(body.indices):
        a = affine(e)
        if a is None or a.vars != (names[axis],) or a.coeff(names[axis]) != 1:
            return None
        offsets.append(a.const)
    if offsets[0] or offsets[3] or padded.shape[0] != x.shape[0] or padded.shape[3] != x.shape[3]:
        return None
    top, left = offsets[1], offsets[2]
    bottom, right = padded.shape[1] - x.shape[1] - top, padded.shape[2] - x.shape[2] - left
    if min(top, left, bottom, right) < 0:
        return None
    return x, [top, left, bottom, right]


def _node(op: str, inputs: list, outputs: list, **attributes) -> tuple[str, list, list, dict]:
    return op, inputs, outputs, attributes
