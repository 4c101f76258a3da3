// Kernel templates shared by linear_avx2.cc and linear_avx512.cc. Each of those files defines a vector-traits
// struct V (register type R, lanes L, micro-kernel rows MR, loads/FMAs) under its own `#pragma GCC target`, then
// includes this file inside an anonymous namespace, so the two instantiations never meet at link time.
// WD is the weight dtype as int(DType): 0 F32, 1 F16, 2 BF16.

static constexpr int kKc = 256;  // k-block of the gemm: MR rows x kKc fp32 (12 KiB) stay in L1 across token blocks

template <class V, int WD>
inline void convert_row(const char* w, int K, float* out) {  // out[K] = fp32(w[0..K))
  int k = 0;
  for (; k + V::L <= K; k += V::L) V::storeu(out + k, V::template load_w<WD>(w, k));
  for (; k < K; ++k) out[k] = load_elem(w, DType(WD), k);
}

// y[t, n0..n1) for T == TT tokens, dot-product form over the rows of W (decode: the weights stream once).
template <class V, int WD, int TT>
void gemv(const LinearJob& j, int n0, int n1) {
  using R = typename V::R;
  constexpr int L = V::L;
  constexpr size_t es = WD == 0 ? 4 : 2;
  const int K = j.K, N = j.N, kv = K - K % L;
  const char* Wb = static_cast<const char*>(j.W);
  const float* x = j.x;
  int n = n0;
  for (; n + 4 <= n1; n += 4) {
    const char* w[4];
    for (int r = 0; r < 4; ++r) w[r] = Wb + size_t(n + r) * K * es;
    R acc[TT][4];
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < 4; ++r) acc[t][r] = V::zero();
    // The 4 rows are one contiguous span; prefetch the same offsets one span ahead (the next 4 rows) so short rows
    // (K = 1536: 3 KB) do not restart the hardware prefetcher's ramp-up at every block.
    const size_t ahead = size_t(4) * K * es;
    for (int k = 0; k < kv; k += L) {
      R a[4];
      for (int r = 0; r < 4; ++r) {
        if ((k * es) % 64 == 0) V::prefetch(w[r] + ahead + size_t(k) * es);
        a[r] = V::template load_w<WD>(w[r], k);
      }
      for (int t = 0; t < TT; ++t) {
        R xv = V::loadu(x + size_t(t) * K + k);
        for (int r = 0; r < 4; ++r) acc[t][r] = V::fmadd(a[r], xv, acc[t][r]);
      }
    }
    for (int r = 0; r < 4; ++r) {
      float b = j.bias ? load_elem(j.bias, j.bdt, n + r) : 0.0f;
      for (int t = 0; t < TT; ++t) {
        float s = V::hsum(acc[t][r]);
        for (int k = kv; k < K; ++k) s += load_elem(w[r], DType(WD), k) * x[size_t(t) * K + k];
        j.y[size_t(t) * N + n + r] = s + b;
      }
    }
  }
  for (; n < n1; ++n) {  // leftover rows, one at a time
    const char* w = Wb + size_t(n) * K * es;
    R acc[TT];
    for (int t = 0; t < TT; ++t) acc[t] = V::zero();
    for (int k = 0; k < kv; k += L) {
      R a = V::template load_w<WD>(w, k);
      for (int t = 0; t < TT; ++t) acc[t] = V::fmadd(a, V::loadu(x + size_t(t) * K + k), acc[t]);
    }
    float b = j.bias ? load_elem(j.bias, j.bdt, n) : 0.0f;
    for (int t = 0; t < TT; ++t) {
      float s = V::hsum(acc[t]);
      for (int k = kv; k < K; ++k) s += load_elem(w, DType(WD), k) * x[size_t(t) * K + k];
      j.y[size_t(t) * N + n] = s + b;
    }
  }
}

template <class V, int WD>
void gemv_dispatch(const LinearJob& j, int n0, int n1) {
  switch (j.T) {
    case 1: return gemv<V, WD, 1>(j, n0, n1);
    case 2: return gemv<V, WD, 2>(j, n0, n1);
    case 3: return gemv<V, WD, 3>(j, n0, n1);
    default: {  // 4 tokens at a time
      for (int t0 = 0; t0 < j.T; t0 += 4) {
        LinearJob s = j;
        s.x = j.x + size_t(t0) * j.K;
        s.y = j.y + size_t(t0) * j.N;
        s.T = j.T - t0 < 4 ? j.T - t0 : 4;
        if (s.T == 4) gemv<V, WD, 4>(s, n0, n1);
        else gemv_dispatch<V, WD>(s, n0, n1);
      }
    }
  }
}

// acc[MR][NV] (+)= wbuf[MR rows, kc] . xt[kc, t0 .. t0 + NV*L): broadcast a weight, FMA with NV token vectors.
template <class V, int NV>
inline void micro(const float* wb, int K, const float* xt, int Tp, int t0, int kc, bool first, float* tile) {
  using R = typename V::R;
  constexpr int MR = V::MR, L = V::L;
  R acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = first ? V::zero() : V::loadu(tile + (r * NV + v) * L);
  for (int k = 0; k < kc; ++k) {
    R xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = V::loadu(xt + size_t(k) * Tp + t0 + v * L);
    for (int r = 0; r < MR; ++r) {
      R wv = V::bcast(wb + size_t(r) * K + k);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fmadd(wv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) V::storeu(tile + (r * NV + v) * L, acc[r][v]);
}

// y[:, n0..n1) through panels of MR weight rows converted to fp32 in wbuf[MR][K]; xt = x^T [K][Tp].
template <class V, int WD>
void gemm(const LinearJob& j, const float* xt, int Tp, int n0, int n1, float* wbuf) {
  constexpr int MR = V::MR, L = V::L;
  constexpr size_t es = WD == 0 ? 4 : 2;
  const int K = j.K, N = j.N, T = j.T;
  const char* Wb = static_cast<const char*>(j.W);
  // Partial sums per token block: [Tp / L blocks][MR][L] laid out so micro() sees a contiguous [MR][NV*L] tile.
  float tiles[MR * 2 * 16 * 64];  // MR x (2 vectors of <=16 lanes) x up to 64 blocks of 2 vectors = Tp <= 2048
  for (int p0 = n0; p0 < n1; p0 += MR) {
    const int rows = n1 - p0 < MR ? n1 - p0 : MR;
    for (int r = 0; r < MR; ++r) {
      if (r < rows) convert_row<V, WD>(Wb + size_t(p0 + r) * K * es, K, wbuf + size_t(r) * K);
      else for (int k = 0; k < K; ++k) wbuf[size_t(r) * K + k] = 0.0f;
    }
    for (int k0 = 0; k0 < K; k0 += kKc) {
      const int kc = K - k0 < kKc ? K - k0 : kKc;
      for (int t0 = 0; t0 < Tp; t0 += 2 * L) {
        float* tile = tiles + (t0 / (2 * L)) * (MR * 2 * L);
        if (t0 + 2 * L <= Tp) micro<V, 2>(wbuf + k0, K, xt + size_t(k0) * Tp, Tp, t0, kc, k0 == 0, tile);
        else micro<V, 1>(wbuf + k0, K, xt + size_t(k0) * Tp, Tp, t0, kc, k0 == 0, tile);
      }
    }
    for (int t0 = 0; t0 < Tp; t0 += 2 * L) {
      const float* tile = tiles + (t0 / (2 * L)) * (MR * 2 * L);
      const int nv = t0 + 2 * L <= Tp ? 2 : 1;
      for (int r = 0; r < rows; ++r) {
        const float b = j.bias ? load_elem(j.bias, j.bdt, p0 + r) : 0.0f;
        for (int i = 0; i < nv * L && t0 + i < T; ++i) j.y[size_t(t0 + i) * N + p0 + r] = tile[r * nv * L + i] + b;
      }
    }
  }
}
