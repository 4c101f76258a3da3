# Numpy mirror of gemm_skinny_kernel + skinny_reduce_kernel (cuda/gemm_skinny.cu), for checking its index math without
# a GPU: every thread's cp.async (zero-fill outside N / T / K), the 4-stage ring with the W-before-pdl_wait prologue,
# ldmatrix.x4 and mma.sync m16n8k16 per lane with the PTX fragment layouts (attention_sim.py's emulation, which
# matched the H100 for flash2), the split-K partials and their reduction, the direct epilogue. Shared memory starts
# as NaN, so a read of anything never written shows up in the result. Exact arithmetic (no bf16 rounding): the
# result must equal x . W^T (+ b) to ~1e-12. Run: python3 cuda/test/skinny_sim.py (~1 min). Keep in sync.
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention_sim import LANE, ldsm, mma  # noqa: E402

BN, BK, STAGES, THREADS = 64, 64, 4, 128
LD = BK + 8
MIN_TILES_PER_SPLIT = 4


def cdiv(a, b): return (a + b - 1) // b


def want_splits(N, K, sms):
    nblk, ktiles = cdiv(N, BN), cdiv(K, BK)
    s = cdiv(4 * sms, nblk)
    s = min(s, max(1, ktiles // MIN_TILES_PER_SPLIT))
    per = cdiv(ktiles, max(1, s))
    return cdiv(ktiles, per)


def skinny(x, W, b, T, N, K, ws_bytes, sms=132):
    """launch_skinny: returns y [T, N] as the kernels would write it."""
    NT16 = cdiv(T, 16)
    TR = 16 * NT16
    ktiles = cdiv(K, BK)
    splits = want_splits(N, K, sms)
    cap = ws_bytes // (T * N * 4) if ws_bytes else 0
    if splits > cap: splits = cap
    if splits < 2: splits = 1
    per = cdiv(ktiles, splits)
    splits = cdiv(ktiles, per)
    part = np.full((splits, T, N), np.nan) if splits > 1 else None
    y = np.full((T, N), np.nan)
    xf, Wf = x.reshape(-1), W.reshape(-1)
    stage = (BN + TR) * LD
    for bx in range(cdiv(N, BN)):
        for split in range(splits):
            n0 = bx * BN
            kt0 = split * per
            nk = min(ktiles, kt0 + per) - kt0
            assert nk >= 1, 'empty split'
            sm = np.full(STAGES * stage, np.nan)
            def Ws(s): return s * stage
            def Xs(s): return Ws(s) + BN * LD
            def cp(dst, mem, src, ok): sm[dst:dst + 8] = mem[src:src + 8] if ok else 0.0
            def load_w(kt, s):
                k0 = kt * BK
                for tid in range(THREADS):
                    for i in range(BN * 8 // THREADS):
                        idx = tid + i * THREADS; r, c = idx >> 3, (idx & 7) * 8
                        ok = n0 + r < N and k0 + c < K
                        cp(Ws(s) + r * LD + c, Wf, (n0 + r) * K + k0 + c if ok else 0, ok)
            def load_x(kt, s):
                k0 = kt * BK
                for tid in range(THREADS):
                    for i in range(TR * 8 // THREADS):
                        idx = tid + i * THREADS; r, c = idx >> 3, (idx & 7) * 8
                        ok = r < T and k0 + c < K
                        cp(Xs(s) + r * LD + c, xf, r * K + k0 + c if ok else 0, ok)
            for s in range(STAGES - 1):
                if s < nk: load_w(kt0 + s, s)
            for s in range(STAGES - 1):
                if s < nk: load_x(kt0 + s, s)
            acc = np.zeros((4, 2 * NT16, 32, 4))  # [warp][token tile][lane][reg]
            for it in range(nk):
                nxt = it + STAGES - 1
                assert nxt % STAGES != it % STAGES
                if nxt < nk:
                    load_w(kt0 + nxt, nxt % STAGES); load_x(kt0 + nxt, nxt % STAGES)
                ws_, xs_ = Ws(it % STAGES), Xs(it % STAGES)
                for warp in range(4):
                    for kk in range(BK // 16):
                        a = ldsm(sm, ws_ + (warp * 16 + (LANE & 15)) * LD + kk * 16 + (LANE >> 4) * 8, False)
                        for np_ in range(NT16):
                            bf = ldsm(sm, xs_ + (np_ * 16 + (LANE >> 4) * 8 + (LANE & 7)) * LD + kk * 16
                                      + ((LANE >> 3) & 1) * 8, False)
                            acc[warp, 2 * np_] = mma(acc[warp, 2 * np_], a, bf[:, 0:2])
                            acc[warp, 2 * np_ + 1] = mma(acc[warp, 2 * np_ + 1], a, bf[:, 2:4])
            g, c2 = LANE >> 2, (LANE & 3) * 2
            for warp in range(4):
                for l in range(32):
                    na = n0 + warp * 16 + g[l]; nb = na + 8
                    for j in range(2 * NT16):
                        for e in range(2):
                            t = 8 * j + c2[l] + e
                            if t >= T: continue
                            for n, v in ((na, acc[warp, j, l, e]), (nb, acc[warp, j, l, 2 + e])):
                                if n >= N: continue
                                if splits == 1:
                                    y[t, n] = v + (b[n] if b is not None else 0.0)
                                else:
                                    part[split, t, n] = v
    if splits > 1:
        y = part.sum(axis=0) + (b[None, :] if b is not None else 0.0)
    return y, splits


def run(T, N, K, ws_bytes, bias=True, sms=132, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (T, K)); W = rng.uniform(-1, 1, (N, K)); b = rng.uniform(-1, 1, N) if bias else None
    y, splits = skinny(x, W, b, T, N, K, ws_bytes, sms)
    ref = x @ W.T + (b if bias else 0.0)
    err = np.abs(y - ref).max() if np.isfinite(y).all() else math.inf
    ok = err < 1e-9
    print(f'{"ok" if ok else "FAIL"} T={T} N={N} K={K} ws={ws_bytes} bias={bias} splits={splits} err={err:.2e}', flush=True)
    return ok


if __name__ == '__main__':
    ok = True
    # sms=4 makes small N split like Qwen's shapes do on 132 SMs (4 * sms / (N / 64) splits)
    for (T, N, K) in [(9, 130, 24), (16, 64, 64), (17, 300, 256), (33, 129, 72), (48, 200, 520), (64, 70, 1024),
                      (23, 33, 264), (1, 77, 64), (64, 100, 8), (40, 64, 320)]:
        for ws in (0, 1 << 24):
            ok &= run(T, N, K, ws, bias=ws > 0, sms=4, seed=T + N + K)
    ok &= run(64, 128, 4096, 1 << 24, sms=8, seed=1)   # many k-tiles per split
    ok &= run(20, 192, 2048, 20 * 192 * 4 * 2, sms=8, seed=2)  # a workspace that holds 2 of the 4 wanted splits
    print('ALL OK' if ok else 'SOME FAILED')
