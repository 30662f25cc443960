"""loops: a grouped channel index written with // is split by the group size and matched."""

@prim_func
def grouped(P: f32[6, 32], W: f32[16, 32], Y: f32[6, 32]):
    for h, co in grid(6, 32):
        Y[h, co] = 0.0
        for rc in range(16):
            Y[h, co] += P[h, co // 16 * 16 + rc] * W[rc, co]
