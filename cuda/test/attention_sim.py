# Line-by-line numpy mirror of attn_flash_kernel and attn_split_kernel + attn_combine_kernel (cuda/attention.cu):
# index math, tile ranges, causal mask, online softmax and the split-K merge, checked against a float64 reference
# with NaN rows past the last key (they must never be read). WMMA is modelled as exact matrix products, so this does
# not check fragment layouts. Run: python3 cuda/test/attention_sim.py (numpy; ~1 min). Keep in sync with the kernels.
import numpy as np, math
def ref(qkv, Kc, Vc, T, pos0, nh, hd):
    H = nh*hd; out = np.zeros((T, H))
    for t in range(T):
        for h in range(nh):
            L = pos0+t+1
            q = qkv[t, h*hd:(h+1)*hd]
            s = Kc[:L, h*hd:(h+1)*hd] @ q / math.sqrt(hd)
            p = np.exp(s - s.max()); out[t, h*hd:(h+1)*hd] = p @ Vc[:L, h*hd:(h+1)*hd] / p.sum()
    return out

def flash(qkv_flat, Kc_flat, Vc_flat, T_, pos0, n_heads, HD):
    BQ, BKV, NW = 64, 32, 4
    H = n_heads*HD; ldq = 3*H; Lk = pos0 + T_
    out = np.full(T_*H, np.nan)
    scale = 1/math.sqrt(HD)
    CPR = HD//8; CW = BKV//2; OH = HD//2
    for by in range(n_heads):
        for bx in range((T_+BQ-1)//BQ):
            h, q0 = by, bx*BQ
            Qs = np.zeros((BQ, HD))
            for e in range(BQ*CPR):
                r, c = e//CPR, (e % CPR)*8; t = q0 + r
                if t < T_: Qs[r, c:c+8] = qkv_flat[t*ldq + h*HD + c: t*ldq + h*HD + c + 8]
            Ow = np.zeros((NW, 16, HD)); m_run = np.full((NW, 32), -np.inf); l_run = np.zeros((NW, 32))
            last_q = min(q0+BQ, T_) - 1; kv_end = pos0 + last_q + 1
            for kv0 in range(0, kv_end, BKV):
                Ks = np.zeros((BKV, HD)); Vs = np.zeros((BKV, HD))
                for e in range(BKV*CPR):
                    rr, c = e//CPR, (e % CPR)*8; j = kv0 + rr
                    if j < Lk:
                        Ks[rr, c:c+8] = Kc_flat[j*H + h*HD + c: j*H + h*HD + c + 8]
                        Vs[rr, c:c+8] = Vc_flat[j*H + h*HD + c: j*H + h*HD + c + 8]
                for warp in range(NW):
                    Sw = Qs[warp*16:warp*16+16] @ Ks.T
                    Pw = np.zeros((16, BKV)); corr_rows = np.zeros(16)
                    for lane in range(32):
                        r, half = lane >> 1, lane & 1
                        tq = q0 + warp*16 + r; qpos = pos0 + tq; valid = tq < T_
                        sv = []
                        for c in range(CW):
                            col = half*CW + c; j = kv0 + col
                            v = Sw[r, col]*scale
                            if (not valid) or j > qpos: v = -np.inf
                            sv.append(v)
                        mx = max(sv)
                        # shfl xor 1: partner lane computes its own mx; emulate by computing both
                        sv2 = []
                        for c in range(CW):
                            col = (1-half)*CW + c; j = kv0 + col
                            v = Sw[r, col]*scale
                            if (not valid) or j > qpos: v = -np.inf
                            sv2.append(v)
                        mx = max(mx, max(sv2))
                        m_new = max(m_run[warp, lane], mx)
                        m_use = 0.0 if m_new == -np.inf else m_new
                        corr = math.exp(m_run[warp, lane] - m_use) if m_run[warp, lane] != -np.inf else 0.0
                        ls = sum(math.exp(x - m_use) if x != -np.inf else 0.0 for x in sv)
                        ls2 = sum(math.exp(x - m_use) if x != -np.inf else 0.0 for x in sv2)
                        for c in range(CW):
                            Pw[r, half*CW + c] = math.exp(sv[c] - m_use) if sv[c] != -np.inf else 0.0
                        l_run[warp, lane] = l_run[warp, lane]*corr + ls + ls2
                        m_run[warp, lane] = m_new
                        Ow[warp, r, half*OH:(half+1)*OH] *= corr
                    Ow[warp] += Pw @ Vs
            for warp in range(NW):
                for lane in range(32):
                    r, half = lane >> 1, lane & 1; tq = q0 + warp*16 + r
                    if tq < T_:
                        base = tq*H + h*HD + half*OH
                        out[base:base+OH] = Ow[warp, r, half*OH:(half+1)*OH] / l_run[warp, lane]
    return out.reshape(T_, H)

def split(qkv_flat, Kc_flat, Vc_flat, T_, pos0, nh, hd, ws_budget_queries=None):
    kChunk = 256; H = nh*hd; nchunks = (pos0 + T_ + kChunk - 1)//kChunk
    scale = 1/math.sqrt(hd); out = np.full(T_*H, np.nan)
    group = T_ if ws_budget_queries is None else ws_budget_queries
    for t0 in range(0, T_, group):
        tq = min(group, T_ - t0)
        ws_o = np.full(tq*nh*nchunks*hd, np.nan); ws_ml = np.full(tq*nh*nchunks*2, np.nan)
        for c in range(nchunks):
            for h in range(nh):
                for tl in range(tq):
                    t = t0 + tl; Lt = pos0 + t + 1; k0 = c*kChunk; k1 = min(k0 + kChunk, Lt)
                    slot = (tl*nh + h)*nchunks + c
                    if k0 >= Lt:
                        ws_o[slot*hd:(slot+1)*hd] = 0; ws_ml[2*slot] = -np.inf; ws_ml[2*slot+1] = 0; continue
                    qs = qkv_flat[t*3*H + h*hd: t*3*H + h*hd + hd]*scale
                    ps = np.array([qs @ Kc_flat[j*H + h*hd: j*H + h*hd + hd] for j in range(k0, k1)])
                    m = ps.max(); ps = np.exp(ps - m); l = ps.sum()
                    for d in range(hd):
                        o = sum(ps[j]*Vc_flat[(k0 + j)*H + h*hd + d] for j in range(k1-k0))
                        if nchunks == 1: out[t*H + h*hd + d] = o/l
                        else: ws_o[slot*hd + d] = o
                    if nchunks > 1: ws_ml[2*slot] = m; ws_ml[2*slot+1] = l
        if nchunks > 1:
            for h in range(nh):
                for tl in range(tq):
                    t = t0 + tl; base = (tl*nh + h)*nchunks
                    M = max(ws_ml[2*(base+c)] for c in range(nchunks))
                    wts = [0.0 if ws_ml[2*(base+c)] == -np.inf else math.exp(ws_ml[2*(base+c)] - M) for c in range(nchunks)]
                    L = sum(wts[c]*ws_ml[2*(base+c)+1] for c in range(nchunks))
                    for d in range(hd):
                        out[t*H + h*hd + d] = sum(wts[c]*ws_o[(base+c)*hd + d] for c in range(nchunks))/L
    return out.reshape(T_, H)

rng = np.random.default_rng(0)
for (T, P, nh, hd) in [(17, 0, 2, 64), (70, 5, 1, 64), (40, 100, 2, 64), (1, 0, 1, 64), (3, 600, 1, 16), (5, 300, 2, 8)]:
    H = nh*hd; cap = P + T + 3
    qkv = rng.uniform(-2, 2, (T, 3*H)); Kc = rng.uniform(-2, 2, (cap, H)); Vc = rng.uniform(-2, 2, (cap, H))
    Kc[P:P+T] = qkv[:, H:2*H]; Vc[P:P+T] = qkv[:, 2*H:]
    Kc[P+T:] = np.nan; Vc[P+T:] = np.nan   # beyond the keys: must never be read
    r = ref(qkv, Kc, Vc, T, P, nh, hd)
    if hd in (64, 128):
        f = flash(qkv.ravel(), Kc.ravel(), Vc.ravel(), T, P, nh, hd)
        print('flash', (T, P, nh, hd), np.abs(f - r).max())
    s = split(qkv.ravel(), Kc.ravel(), Vc.ravel(), T, P, nh, hd)
    s2 = split(qkv.ravel(), Kc.ravel(), Vc.ravel(), T, P, nh, hd, ws_budget_queries=2)
    print('split', (T, P, nh, hd), np.abs(s - r).max(), np.abs(s2 - r).max())
