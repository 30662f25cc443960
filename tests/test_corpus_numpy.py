"""Every corpus program, run by the reference interpreter, against an independent numpy formula.

The formulas below are written from what each workload means (matmul, convolution by slicing
the padded input and summing over the window, softmax, ...), never from the interpreter's
output, so a wrong script or a wrong interpreter shows up as a mismatch. Inputs come from
``random_args``; float results are compared in float64 with tolerances that grow with the
length of the sum, integer results exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

interp = pytest.importorskip("rewrite.interp", reason="the reference interpreter is not there yet")

from rewrite.inputs import random_args  # noqa: E402
from rewrite.script import parse_file  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _corpus() -> dict[str, object]:
    funcs = {}
    for path in sorted(CORPUS.glob("*.py")):
        for name, func in parse_file(path).items():
            assert name not in funcs, f"{name} is defined twice in the corpus"
            funcs[name] = func
    return funcs


FUNCS = _corpus()


# ---------------------------------------------------------------------------
# numpy building blocks (float64 on purpose: the reference should be the more exact side)


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def pad(x: np.ndarray, before: tuple[int, ...], after: tuple[int, ...] | None = None) -> np.ndarray:
    after = before if after is None else after
    return np.pad(x, list(zip(before, after)))


def conv2d_nhwc(x, w, stride=1, padding=0, dilation=1, groups=1):
    """NHWC x HWIO convolution by summing shifted, strided slices of the padded input."""
    x, w = f64(x), f64(w)
    n, h, wd, ci = x.shape
    kh, kw, cig, co = w.shape
    assert cig * groups == ci
    p = pad(x, (0, padding, padding, 0))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    cog = co // groups
    out = np.zeros((n, oh, ow, co))
    for rh in range(kh):
        for rw in range(kw):
            y0, x0 = rh * dilation, rw * dilation
            win = p[:, y0:y0 + stride * (oh - 1) + 1:stride, x0:x0 + stride * (ow - 1) + 1:stride, :]
            for g in range(groups):
                out[..., g * cog:(g + 1) * cog] += (
                    win[..., g * cig:(g + 1) * cig] @ w[rh, rw][:, g * cog:(g + 1) * cog])
    return out


def conv1d_nlc(x, w, stride, padding):
    x, w = f64(x), f64(w)
    k = w.shape[0]
    p = pad(x, (0, padding, 0))
    ol = (x.shape[1] + 2 * padding - k) // stride + 1
    out = np.zeros((x.shape[0], ol, w.shape[2]))
    for r in range(k):
        out += p[:, r:r + stride * (ol - 1) + 1:stride, :] @ w[r]
    return out


def conv3d_ndhwc(x, w, padding):
    x, w = f64(x), f64(w)
    kd, kh, kw = w.shape[:3]
    p = pad(x, (0, padding, padding, padding, 0))
    n, d, h, wd, _ = x.shape
    od, oh, ow = d + 2 * padding - kd + 1, h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    out = np.zeros((n, od, oh, ow, w.shape[4]))
    for a in range(kd):
        for b in range(kh):
            for c in range(kw):
                out += p[:, a:a + od, b:b + oh, c:c + ow, :] @ w[a, b, c]
    return out


def depthwise_nhwc(x, w, stride, padding):
    """``w`` is [1, kh, kw, C]: each channel convolved with its own window."""
    x, w = f64(x), f64(w)
    _, kh, kw, _ = w.shape
    p = pad(x, (0, padding, padding, 0))
    oh = (x.shape[1] + 2 * padding - kh) // stride + 1
    ow = (x.shape[2] + 2 * padding - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for rh in range(kh):
        for rw in range(kw):
            win = p[:, rh:rh + stride * (oh - 1) + 1:stride, rw:rw + stride * (ow - 1) + 1:stride, :]
            out += win * w[0, rh, rw]
    return out


def conv2d_transpose_nhwc(x, w, stride, padding):
    """Scatter form: every input pixel adds ``x * w[kh, kw]`` at ``stride*i + kh``, then the
    border ``padding`` is cropped. Independent of the dilate-and-flip form of the script."""
    x, w = f64(x), f64(w)
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    full = np.zeros((n, (h - 1) * stride + kh, (wd - 1) * stride + kw, co))
    for a in range(kh):
        for b in range(kw):
            full[:, a:a + stride * (h - 1) + 1:stride, b:b + stride * (wd - 1) + 1:stride, :] += x @ w[a, b]
    oh, ow = (h - 1) * stride - 2 * padding + kh, (wd - 1) * stride - 2 * padding + kw
    return full[:, padding:padding + oh, padding:padding + ow, :]


def capsule_conv(x, w, stride, padding):
    """Pose matrices multiplied (``[i,k] @ [k,j]``) and summed over window and channels."""
    x, w = f64(x), f64(w)
    kh, kw = w.shape[:2]
    p = pad(x, (0, padding, padding, 0, 0, 0))
    oh = (x.shape[1] + 2 * padding - kh) // stride + 1
    ow = (x.shape[2] + 2 * padding - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3], w.shape[3], w.shape[5]))
    for a in range(kh):
        for b in range(kw):
            win = p[:, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride]
            out += np.einsum("nhwikc,kjco->nhwijo", win, w[a, b])
    return out


def relu(x):
    return np.maximum(x, 0.0)


def softmax_rows(x):
    x = f64(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def int_matmul(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def int_conv2d_nhwc(x, w, padding):
    x, w = x.astype(np.int64), w.astype(np.int64)
    kh, kw = w.shape[:2]
    p = pad(x, (0, padding, padding, 0))
    oh, ow = x.shape[1] + 2 * padding - kh + 1, x.shape[2] + 2 * padding - kw + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), dtype=np.int64)
    for a in range(kh):
        for b in range(kw):
            out += p[:, a:a + oh, b:b + ow, :] @ w[a, b]
    return out.astype(np.int32)


# ---------------------------------------------------------------------------
# the table: corpus function -> (formula over the inputs, length of the longest sum)
#
# A formula takes the dict of arguments given to the interpreter and returns the expected
# final value of each output it checks.

def _tbl():
    t = {}

    def add(name, terms, fn):
        t[name] = (fn, terms)

    # TensorIR operator set
    add("c1d_nlc", 3 * 64, lambda a: {"Y": conv1d_nlc(a["X"], a["W"], 2, 1)})
    add("c2d_nhwc", 9 * 32, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"], padding=1)})
    add("c2d_stem_7x7", 49 * 3, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"], stride=2, padding=3)})
    add("c3d_ndhwc", 27 * 16, lambda a: {"Y": conv3d_ndhwc(a["X"], a["W"], 1)})
    for name in ("grp_conv2d_nhwc", "grp_conv2d_nhwc_divmod"):
        add(name, 9 * 16, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"], padding=1, groups=4)})
    add("dil_conv2d_nhwc", 9 * 32, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"], padding=1, dilation=2)})
    add("dep_conv2d_nhwc", 9, lambda a: {"Y": depthwise_nhwc(a["X"], a["W"], 1, 1)})
    add("dep_conv2d_nhwc_s2", 9, lambda a: {"Y": depthwise_nhwc(a["X"], a["W"], 2, 1)})
    add("t2d_nhwc", 16 * 64, lambda a: {"Y": conv2d_transpose_nhwc(a["X"], a["W"], 2, 1)})
    add("cap_conv2d", 9 * 4 * 8, lambda a: {"Y": capsule_conv(a["X"], a["W"], 2, 1)})
    add("nrm_bmn", 256 * 256, lambda a: {"D": np.sqrt((f64(a["A"]) ** 2).sum(axis=(1, 2)))})
    add("sfm_mn", 256, lambda a: {"B": softmax_rows(a["A"])})
    add("cbr_nhwc", 9 * 16, lambda a: {"Y": relu(
        (conv2d_nhwc(a["X"], a["W"], stride=2, padding=1) + a["bias"]) * a["bn_scale"] + a["bn_offset"])})
    add("tbg", 64, lambda a: {"C": np.einsum("bihk,bjhk->bhij", f64(a["query"]), f64(a["value"]))})

    # GEMM
    for name in ("gemm_64", "gemm_256"):
        add(name, FUNCS[name].buffer("A").shape[1], lambda a: {"C": f64(a["A"]) @ f64(a["B"])})
    add("gmm_nkkm", 128, lambda a: {"Z": f64(a["X"]) @ f64(a["Y"])})
    add("matmul_relu", 128, lambda a: {"D": relu(f64(a["A"]) @ f64(a["B"]))})
    add("bmm_4x64", 64, lambda a: {"C": np.einsum("bik,bkj->bij", f64(a["A"]), f64(a["B"]))})

    # disguised GEMM
    for name in ("gemm_swapped_operands", "gemm_k_outermost", "gemm_jik", "gemm_explicit_add",
                 "gemm_add_on_left", "gemm_odd_37x61x29", "gemm_split_reduction"):
        add(name, FUNCS[name].buffer("A").shape[1], lambda a: {"C": f64(a["A"]) @ f64(a["B"])})
    add("gemm_bias_init", 64, lambda a: {"C": f64(a["A"]) @ f64(a["B"]) + f64(a["bias"])})
    add("gemm_accumulate_into", 65, lambda a: {"C": f64(a["C"]) + f64(a["A"]) @ f64(a["B"])})
    add("gemm_transposed_a", 64, lambda a: {"C": f64(a["A"]).T @ f64(a["B"])})
    add("gemm_transposed_b", 64, lambda a: {"C": f64(a["A"]) @ f64(a["B"]).T})
    add("gemm_transposed_b_256", 256, lambda a: {"C": f64(a["A"]) @ f64(a["B"]).T})
    add("gemm_scaled", 64, lambda a: {"C": 2.0 * (f64(a["A"]) @ f64(a["B"]))})
    add("gemm_all_disguises", 64, lambda a: {"C": 0.5 * (f64(a["A"]).T @ f64(a["B"]).T)})

    # matrix-vector (PolyBench, f32)
    add("atax", 390 * 410, lambda a: {"y": f64(a["A"]).T @ (f64(a["A"]) @ f64(a["x"]))})
    add("bicg", 410, lambda a: {"s": f64(a["A"]).T @ f64(a["r"]), "q": f64(a["A"]) @ f64(a["p"])})
    add("mvt", 401, lambda a: {"x1": f64(a["x1"]) + f64(a["A"]) @ f64(a["y1"]),
                               "x2": f64(a["x2"]) + f64(a["A"]).T @ f64(a["y2"])})
    add("gesummv", 2 * 250, lambda a: {"y": 1.5 * (f64(a["A"]) @ f64(a["x"]))
                                       + 1.2 * (f64(a["B"]) @ f64(a["x"]))})

    # f64 (PolyBench), f16 with f32 accumulation
    add("polybench_gemm", 81, lambda a: {"C": 1.2 * a["C"] + 1.5 * (a["A"] @ a["B"])})
    add("polybench_2mm", 70 * 50, lambda a: {"D": 1.2 * a["D"] + (1.5 * (a["A"] @ a["B"])) @ a["C"]})
    add("dgemm_64", 64, lambda a: {"C": a["A"] @ a["B"]})
    add("gemm_f16_f32acc", 128, lambda a: {"C": f64(a["A"]) @ f64(a["B"])})
    add("gemm_f16_f32acc_nt", 96, lambda a: {"C": f64(a["A"]) @ f64(a["B"]).T})

    # products scaled per row or per column
    def rmsnorm_linear(a):
        x = f64(a["X"])
        inv = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6)
        return {"Y": (x * inv * f64(a["g"])) @ f64(a["W"])}
    add("rmsnorm_linear", 512, rmsnorm_linear)
    add("svd_reconstruct", 64, lambda a: {"A": (f64(a["U"]) * f64(a["S"])) @ f64(a["Vt"])})

    def ldlt_update(a):
        low = np.tril(np.ones((256, 256), bool))
        update = (f64(a["L"]) * f64(a["D"])) @ f64(a["L"]).T
        return {"A": np.where(low, f64(a["A"]) - update, f64(a["A"]))}
    add("ldlt_update", 64, ldlt_update)

    # ResNet-50, BERT, GPT-2
    add("resnet50_conv3x3", 9 * 64, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"], padding=1)})
    add("resnet50_conv1x1", 64, lambda a: {"Y": conv2d_nhwc(a["X"], a["W"])})
    add("bert_ffn_dense_bias_relu", 128, lambda a: {"Y": relu(f64(a["X"]) @ f64(a["W"]) + a["bias"])})
    add("bert_qk", 64, lambda a: {"S": np.einsum("ihd,jhd->hij", f64(a["Q"]), f64(a["K"])) / np.sqrt(64.0)})
    add("bert_attn_v", 128, lambda a: {"O": np.einsum("hij,jhd->ihd", f64(a["P"]), f64(a["V"]))})

    def layernorm(a):
        x = f64(a["X"])
        mu = x.mean(axis=1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
        return {"Y": (x - mu) / np.sqrt(var + 1e-12) * a["gamma"] + a["beta"]}
    add("bert_layernorm", 768, layernorm)

    def causal(a):
        s = np.einsum("hid,hjd->hij", f64(a["Q"]), f64(a["K"])) * 0.125
        keep = np.tril(np.ones((128, 128), dtype=bool))
        return {"S": np.where(keep, s, -10000.0)}
    add("gpt2_causal_qk", 64, causal)

    # int8
    for name in ("qdense_u8i8", "qdense_u8i8_256"):
        add(name, 0, lambda a: {"C": int_matmul(a["A"], a["B"])})
    add("qdense_u8i8_nt", 0, lambda a: {"C": int_matmul(a["A"], a["B"].T)})
    add("qdense_zero_points", 0, lambda a: {"C": int_matmul(a["A"].astype(np.int64) - a["za"][0],
                                                          a["B"].astype(np.int64) - a["zb"][0])})
    # fusion.py: producers materialised into temporaries (their effect on the inputs too)
    add("qdense_widened", 0, lambda a: {"C": int_matmul(a["A"], a["B"])})
    add("gemm_prescaled", 256, lambda a: {"C": (0.5 * f64(a["A"])) @ f64(a["B"])})
    add("gemm_input_updated", 64, lambda a: {"C": (0.5 * f64(a["A"])) @ f64(a["B"]),
                                             "A": f64(a["A"]) + 1.0})
    add("gemm_exp_shared", 64, lambda a: {"C": np.exp(f64(a["A"])) @ f64(a["B"]),
                                          "E": np.exp(f64(a["A"])) @ f64(a["D"])})
    add("qconv_u8i8", 0, lambda a: {"Y": int_conv2d_nhwc(a["X"], a["W"], 1)})

    # pooling: max pooling is exact (max picks an input), computed in f32
    def maxpool(a):
        p = np.pad(a["X"], [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
        win = [p[:, rh:rh + 111:2, rw:rw + 111:2, :] for rh in range(3) for rw in range(3)]
        return {"Y": np.max(win, axis=0)}
    add("resnet50_maxpool", 0, maxpool)
    add("resnet50_global_avgpool", 49, lambda a: {"Y": f64(a["X"]).mean(axis=(1, 2))})

    # elementwise
    for name in ("scale_bias_relu_1d", "scale_bias_relu_2d"):
        add(name, 2, lambda a: {"Y": relu(f64(a["X"]) * a["scale"] + a["bias"])})
    add("bn_add_relu_nhwc", 3, lambda a: {"Y": relu(f64(a["X"]) * a["scale"] + a["shift"] + a["R"])})

    # no multiply-accumulate: tropical products are exact in f32 (one rounding per sum,
    # max/min exact), so they are computed in f32 and compared exactly
    add("maxplus_matmul", 0, lambda a: {"C": (a["A"][:, :, None] + a["B"][None, :, :]).max(axis=1)})
    add("minplus_matmul", 0, lambda a: {"C": (a["A"][:, :, None] + a["B"][None, :, :]).min(axis=1)})
    add("prefix_sum_1d", 4096, lambda a: {"Y": np.cumsum(f64(a["X"]))})
    add("cumsum_rows", 256, lambda a: {"Y": np.cumsum(f64(a["X"]), axis=1)})

    # training workloads
    def rnn(a):
        h = [f64(a["H0"])]
        for t in range(a["X"].shape[0]):
            h.append(relu(h[-1] @ f64(a["Wh"]) + f64(a["X"][t]) @ f64(a["Wx"]) + a["b"]))
        return {"H": np.stack(h)}
    add("rnn_relu_elman", 48 * 8, rnn)
    add("mlp_two_layer", 128 + 64, lambda a: {
        "Y": relu(f64(a["X"]) @ f64(a["W1"]) + a["b1"]) @ f64(a["W2"]) + a["b2"]})

    # PolyBench as PolyBench writes it (f32): triangles, scalar locals, in-place updates
    lower = lambda n: np.tril(np.ones((n, n), bool))  # noqa: E731
    add("pb_gemm", 240, lambda a: {"C": 1.2 * f64(a["C"]) + 1.5 * f64(a["A"]) @ f64(a["B"])})
    add("pb_2mm", 210 + 190, lambda a: {
        "tmp": 1.5 * f64(a["A"]) @ f64(a["B"]),
        "D": 1.2 * f64(a["D"]) + (1.5 * f64(a["A"]) @ f64(a["B"])) @ f64(a["C"])})
    add("pb_3mm", 200 + 220 + 190, lambda a: {
        "E": f64(a["A"]) @ f64(a["B"]), "F": f64(a["C"]) @ f64(a["D"]),
        "G": (f64(a["A"]) @ f64(a["B"])) @ (f64(a["C"]) @ f64(a["D"]))})

    def gemver(a):
        A = f64(a["A"]) + np.outer(a["u1"], a["v1"]) + np.outer(a["u2"], a["v2"])
        x = f64(a["x"]) + 1.2 * A.T @ f64(a["y"]) + f64(a["z"])
        return {"A": A, "x": x, "w": f64(a["w"]) + 1.5 * A @ x}
    add("pb_gemver", 800, gemver)
    add("pb_syrk", 200, lambda a: {"C": np.where(
        lower(240), 1.2 * f64(a["C"]) + 1.5 * f64(a["A"]) @ f64(a["A"]).T, a["C"])})
    add("pb_syr2k", 400, lambda a: {"C": np.where(
        lower(240), 1.2 * f64(a["C"]) + 1.5 * (f64(a["A"]) @ f64(a["B"]).T + f64(a["B"]) @ f64(a["A"]).T),
        a["C"])})
    # symm's A is symmetric, stored in its lower triangle
    add("pb_symm", 200, lambda a: {"C": 1.2 * f64(a["C"]) + 1.5 * (
        np.tril(f64(a["A"])) + np.tril(f64(a["A"]), -1).T) @ f64(a["B"])})
    # trmm: B = alpha * U @ B, U unit upper triangular with U[i, k] = A[k, i] for k > i
    add("pb_trmm", 200, lambda a: {"B": 1.5 * (np.eye(200) + np.triu(f64(a["A"]).T, 1)) @ f64(a["B"])})

    def covariance(a):
        d = f64(a["data"])
        mean = d.mean(axis=0)
        centred = d - mean
        return {"mean": mean, "data": centred, "cov": centred.T @ centred / (260 - 1)}
    add("pb_covariance", 260, covariance)

    def correlation(a):
        d = f64(a["data"])
        mean = d.mean(axis=0)
        std = np.sqrt(((d - mean) ** 2).mean(axis=0))
        std = np.where(std <= 0.1, 1.0, std)
        scaled = (d - mean) / (np.sqrt(260.0) * std)
        corr = scaled.T @ scaled
        np.fill_diagonal(corr, 1.0)
        return {"mean": mean, "stddev": std, "data": scaled, "corr": corr}
    add("pb_correlation", 260, correlation)

    def lu(a):  # Gaussian elimination without pivoting: L (unit, strictly lower) and U in place
        m = f64(a["A"]) + 40.0 * np.eye(40)
        for k in range(40):
            m[k + 1:, k] /= m[k, k]
            m[k + 1:, k + 1:] -= np.outer(m[k + 1:, k], m[k, k + 1:])
        return {"A": m}
    add("pb_lu", 40, lu)

    def cholesky(a):  # the factor of the symmetric matrix that A's lower triangle holds
        m = f64(a["A"]) + 40.0 * np.eye(40)
        factor = np.linalg.cholesky(np.tril(m) + np.tril(m, -1).T)
        return {"A": np.triu(m, 1) + factor}
    add("pb_cholesky", 40, cholesky)

    def trisolv(a):
        m = f64(a["L"]) + 40.0 * np.eye(40)
        return {"L": m, "x": np.linalg.solve(np.tril(m), f64(a["b"]))}
    add("pb_trisolv", 40, trisolv)

    # real_updates.py: out-of-place updates, scale factors read from memory
    for name in ("oop_fma_1d", "oop_fma_2d"):
        add(name, 2, lambda a: {"D": f64(a["C"]) + f64(a["A"]) * f64(a["B"])})
    add("gemm_alpha_runtime", 65,
        lambda a: {"C": f64(a["C"]) + f64(a["alpha"][0]) * (f64(a["A"]) @ f64(a["B"]))})
    add("gemm_minus_alpha_runtime", 65,
        lambda a: {"C": f64(a["C"]) - f64(a["alpha"][0]) * (f64(a["A"]) @ f64(a["B"]))})
    add("gemm_alpha_beta_runtime", 81,
        lambda a: {"C": f64(a["beta"][0]) * f64(a["C"])
                   + f64(a["alpha"][0]) * (f64(a["A"]) @ f64(a["B"]))})
    add("gesummv_alpha_beta_runtime", 2 * 250,
        lambda a: {"y": f64(a["alpha"][0]) * (f64(a["A"]) @ f64(a["x"]))
                   + f64(a["beta"][0]) * (f64(a["B"]) @ f64(a["x"]))})

    # PolyBench doitgen: every row A[r, q, :] times C4; the parameter sum is left holding the
    # product of the last row, A[49, 39, :] @ C4
    def doitgen(a):
        rows = np.einsum("rqs,sp->rqp", f64(a["A"]), f64(a["C4"]))
        return {"A": rows, "sum": rows[-1, -1]}
    add("doitgen", 60, doitgen)
    add("doitgen_local_sum", 60, lambda a: {"A": np.einsum("rqs,sp->rqp", f64(a["A"]), f64(a["C4"]))})

    # padding.py: products whose sizes divide no intrinsic's tile
    add("qgemm_u8i8_30", 0, lambda a: {
        "C": (a["C"].astype(np.int64) + int_matmul(a["A"], a["B"])).astype(np.int32)})
    add("sgemm_30", 30, lambda a: {"C": f64(a["A"]) @ f64(a["B"])})
    add("sgemm_odd_100x70x50", 50, lambda a: {"C": f64(a["A"]) @ f64(a["B"])})
    return t


FORMULAS = _tbl()

# Corpus functions with no numpy formula, each with the reason. Empty: every workload is checked.
NO_FORMULA: dict[str, str] = {}


# ---------------------------------------------------------------------------
# comparison


def _scale(args: dict, func) -> float:
    """Typical magnitude of one input element: root mean square over the float inputs."""
    vals = [np.sqrt(np.mean(f64(args[b.name]) ** 2)) for b in func.inputs
            if np.issubdtype(np.asarray(args[b.name]).dtype, np.floating) and args[b.name].size]
    return max([1.0] + vals)


def assert_matches(func, name: str, got: np.ndarray, want: np.ndarray, terms: int, args: dict) -> None:
    buf = func.buffer(name)
    assert got.shape == buf.shape, f"{func.name}.{name}: shape {got.shape}, expected {buf.shape}"
    if np.issubdtype(got.dtype, np.integer) or terms == 0:
        np.testing.assert_array_equal(got, np.asarray(want).astype(got.dtype),
                                      err_msg=f"{func.name}.{name}")
        return
    # Rounding errors of an n-term sum: relative ~ sqrt(n) * eps for random signs; where the
    # sum cancels to near zero, absolute ~ n * eps * |term| (|term| ~ scale**2 for products).
    eps = {np.float64: 1e-15, np.float32: 1e-6, np.float16: 1e-3}[got.dtype.type]
    scale = _scale(args, func)
    rtol = 100 * eps * max(1.0, np.sqrt(terms) / 8)  # 1e-4 for f32 up to 64 terms
    atol = 2 * eps * terms * scale * scale
    np.testing.assert_allclose(f64(got), want, rtol=rtol, atol=atol, err_msg=f"{func.name}.{name}")


# ---------------------------------------------------------------------------
# tests


def test_every_corpus_function_has_a_formula_or_a_reason():
    unaccounted = sorted(set(FUNCS) - set(FORMULAS) - set(NO_FORMULA))
    assert not unaccounted, f"corpus functions with no numpy formula and no stated reason: {unaccounted}"
    stale = sorted((set(FORMULAS) | set(NO_FORMULA)) - set(FUNCS))
    assert not stale, f"formulas for functions that are not in the corpus: {stale}"
    assert not set(FORMULAS) & set(NO_FORMULA)


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_corpus_function_has_a_docstring(name):
    assert FUNCS[name].doc.strip(), f"{name} has no docstring naming where its shape comes from"


def test_corpus_is_large_enough():
    assert len(FUNCS) >= 25


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_interpreter_matches_numpy(name):
    func = FUNCS[name]
    formula, terms = FORMULAS[name]
    args = random_args(func, seed=0)
    inputs = {k: np.array(v, copy=True) for k, v in args.items()}
    result = interp.run(func, **args)
    for k, v in args.items():  # run() copies its inputs
        np.testing.assert_array_equal(v, inputs[k], err_msg=f"run() modified argument {k}")
    expected = formula(inputs)
    assert expected, f"{name}: the formula checks no output"
    assert set(expected) <= {b.name for b in func.outputs}, f"{name}: formula names a non-output"
    for out, want in expected.items():
        assert_matches(func, out, np.asarray(result[out]), want, terms, inputs)
