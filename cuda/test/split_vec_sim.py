# Lane-level numpy emulation of attn_split_vec_kernel (cuda/attention_split.cuh): every lane's 16-byte K/V slices,
# the warp-uniform score loop with its shuffle tree, the PV key groups and their reduction, against plain attention
# for one (chunk, head, row) at head_dim 64 and 128 and chunk lengths 1..256. Run: python3 cuda/test/split_vec_sim.py
import numpy as np
def run(HD, n, H=None, seed=0):
    rng = np.random.default_rng(seed)
    kThreads, kChunk, BT = 128, 256, 32
    LPK = HD // 8; KPW = 32 // LPK; NG = kThreads // LPK
    K = rng.standard_normal((n, HD)); V = rng.standard_normal((n, HD)); q = rng.standard_normal(HD)
    scale = 1/np.sqrt(HD)
    ps = np.full(kChunk, np.nan)
    kStep = 4 * KPW
    for warp in range(4):
        for jb in range(warp*KPW, n, 4*kStep):
            partial = {}
            for lane in range(32):
                sub = lane % LPK; j0 = jb + lane // LPK
                for u in range(4):
                    j = j0 + u*kStep
                    kv = K[j, sub*8:sub*8+8] if j < n else np.zeros(8)
                    partial[(lane, u)] = float(np.dot(q[sub*8:sub*8+8]*scale, kv))
            # shuffle-xor tree within LPK groups
            for u in range(4):
                for lane in range(32):
                    if lane % LPK == 0:
                        j = jb + lane//LPK + u*kStep
                        acc = sum(partial[(l, u)] for l in range(lane, lane+LPK))
                        if j < n:
                            assert np.isnan(ps[j]), ("written twice", j)
                            ps[j] = acc
    assert not np.isnan(ps[:n]).any(), "score missing"
    m = ps[:n].max(); p = np.exp(ps[:n]-m); l = p.sum()
    red = np.zeros((NG, HD))
    for t in range(kThreads):
        g = t // LPK; sub = (t % 32) % LPK
        assert t % LPK == (t%32) % LPK
        o = np.zeros(8)
        for j0 in range(g, n, 4*NG):
            for u in range(4):
                j = j0 + u*NG
                if j < n: o += p[j] * V[j, sub*8:sub*8+8]
        red[g, sub*8:sub*8+8] = o
    out = red.sum(0) / l
    s = (K @ (q*scale)); w = np.exp(s - s.max()); ref = (w/w.sum()) @ V
    err = np.abs(out-ref).max()
    assert err < 1e-12, err
    return err
for HD in (64, 128):
    for n in (1, 2, 7, 31, 32, 33, 64, 100, 255, 256):
        run(HD, n, seed=n)
print("split-vec sim OK")
