// attention: two kernels families (see attention.cuh).
//
// split (decode, fp32, odd head_dim): grid (chunks of 256 keys, heads, queries), 128 threads. The block scales q by
// 1/sqrt(d) into shared fp32, one warp per key computes the scores (lanes over d, shuffle reduce) into shared, block
// max / exp / sum in fp32, then thread d accumulates sum_j p_j v[j, d]. With one chunk it writes out directly, else
// (m, l, o[d]) partials go to the workspace and attn_combine_kernel merges them: O = sum_c e^(m_c - M) o_c / sum_c
// e^(m_c - M) l_c. Reads K and V once per (query, head): memory bound, ~40-60 % of HBM bandwidth expected (scalar
// 2-byte loads, one block per 256 keys); vectorised loads and a larger head-group per block are follow-ups.
//
// flash (prefill, bf16/fp16): grid (ceil(T/64), heads), 4 warps, each warp owns 16 query rows. Per tile of 32 keys:
// the block loads K and V [32][d] into shared (zero rows past the last key); each warp computes S = Q K^T [16 x 32]
// with WMMA (fp32 accumulate) into its shared S tile; lane pair (2r, 2r+1) owns row r: scale, causal mask, online
// softmax (running max m, running sum l, in fp32), writes P in the activation type and rescales its row of the fp32
// O tile in shared by e^(m_old - m_new); then O += P V with WMMA (O kept in shared, loaded / stored per tile). Key
// tiles past the tile's last query are skipped. Shared memory ~81 KB at d = 128 (2 blocks / SM on H100). Expected
// ~100-200 TFLOP/s (no K/V double buffering, O round-trips through shared memory); an mma.sync version with O in
// registers and cp.async pipelining is the follow-up.
#include <mma.h>

#include <cstdlib>
#include <cstring>

#include "attention.cuh"
#include "common.cuh"

namespace qwen::cu {

// ------------------------------------------------------------------------------------------------ split
constexpr int kChunk = 256;       // keys per block
constexpr int kSplitThreads = 128;
constexpr int kMaxHd = 256;
constexpr size_t kWsBudget = size_t(64) << 20;  // workspace wanted at most (queries are grouped to fit)

// grid (nchunks, n_heads, Tq), block 128. Query t = t0 + blockIdx.z, keys [c*256, min((c+1)*256, pos0+t+1)).
template <typename T>
static __global__ void __launch_bounds__(kSplitThreads)
    attn_split_kernel(const T* __restrict__ qkv, const T* __restrict__ Kc, const T* __restrict__ Vc, int t0,
                      int pos0, int n_heads, int hd, float scale, int nchunks, float* __restrict__ ws_o,
                      float* __restrict__ ws_ml, T* __restrict__ out) {
  __shared__ float qs[kMaxHd];
  __shared__ float ps[kChunk];
  const int c = blockIdx.x, h = blockIdx.y, tl = blockIdx.z, t = t0 + tl;
  const int H = n_heads * hd;
  const int Lt = pos0 + t + 1;  // keys visible to this query
  const int k0 = c * kChunk, k1 = min(k0 + kChunk, Lt);
  const int64_t slot = (int64_t(tl) * n_heads + h) * nchunks + c;
  if (k0 >= Lt) {  // chunk wholly in this query's future (only when T > 1; never chunk 0, so nchunks > 1 here)
    for (int d = threadIdx.x; d < hd; d += blockDim.x) ws_o[slot * hd + d] = 0.f;
    if (threadIdx.x == 0) {
      ws_ml[2 * slot] = -INFINITY;
      ws_ml[2 * slot + 1] = 0.f;
    }
    return;
  }
  const T* q = qkv + int64_t(t) * 3 * H + int64_t(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = to_f32(q[d]) * scale;
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
#pragma unroll 4
  for (int j = k0 + warp; j < k1; j += nw) {
    const T* kr = Kc + int64_t(j) * H + int64_t(h) * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s = fmaf(qs[d], to_f32(kr[d]), s);
    s = warp_sum(s);
    if (lane == 0) ps[j - k0] = s;
  }
  __syncthreads();

  const int n = k1 - k0;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, ps[j]);
  m = block_max(m);  // syncs: all reads of ps above are done before ps is overwritten below
  float l = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float p = expf(ps[j] - m);
    ps[j] = p;
    l += p;
  }
  l = block_sum(l);  // syncs: every p is in ps before the loop below

  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    const T* vcol = Vc + int64_t(k0) * H + int64_t(h) * hd + d;
    float o = 0.f;
#pragma unroll 8
    for (int j = 0; j < n; ++j) o = fmaf(ps[j], to_f32(vcol[int64_t(j) * H]), o);
    if (nchunks == 1)
      out[int64_t(t) * H + int64_t(h) * hd + d] = from_f32<T>(o / l);
    else
      ws_o[slot * hd + d] = o;
  }
  if (nchunks > 1 && threadIdx.x == 0) {
    ws_ml[2 * slot] = m;
    ws_ml[2 * slot + 1] = l;
  }
}

// grid (n_heads, Tq), block 128, dynamic shared nchunks floats.
template <typename T>
static __global__ void __launch_bounds__(kSplitThreads)
    attn_combine_kernel(const float* __restrict__ ws_o, const float* __restrict__ ws_ml, int t0, int n_heads, int hd,
                        int nchunks, T* __restrict__ out) {
  extern __shared__ float wts[];  // [nchunks] e^(m_c - M)
  __shared__ float inv_l;
  const int h = blockIdx.x, tl = blockIdx.y, t = t0 + tl;
  const int H = n_heads * hd;
  const int64_t base = (int64_t(tl) * n_heads + h) * nchunks;
  if (threadIdx.x == 0) {
    float M = -INFINITY;
    for (int c = 0; c < nchunks; ++c) M = fmaxf(M, ws_ml[2 * (base + c)]);
    float L = 0.f;
    for (int c = 0; c < nchunks; ++c) {
      const float mc = ws_ml[2 * (base + c)];
      const float w = mc == -INFINITY ? 0.f : expf(mc - M);
      wts[c] = w;
      L = fmaf(w, ws_ml[2 * (base + c) + 1], L);
    }
    inv_l = 1.f / L;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.f;
    for (int c = 0; c < nchunks; ++c) o = fmaf(wts[c], ws_o[(base + c) * hd + d], o);
    out[int64_t(t) * H + int64_t(h) * hd + d] = from_f32<T>(o * inv_l);
  }
}

static int split_chunks(const AttnArgs& a) { return ceil_div(a.pos0 + a.T, kChunk); }
static size_t split_bytes_per_query(const AttnArgs& a) {
  const int nc = split_chunks(a);
  return nc == 1 ? 0 : size_t(a.n_heads) * nc * (a.head_dim + 2) * sizeof(float);
}

template <typename T>
static void launch_split(const AttnArgs& a, float* ws, size_t ws_bytes, cudaStream_t stream) {
  const int nchunks = split_chunks(a);
  const float scale = 1.0f / sqrtf(float(a.head_dim));
  const T* qkv = static_cast<const T*>(a.qkv);
  const T* K = static_cast<const T*>(a.K);
  const T* V = static_cast<const T*>(a.V);
  T* out = static_cast<T*>(a.out);
  if (nchunks == 1) {  // direct: no workspace, no combine
    for (int t0 = 0; t0 < a.T; t0 += 65535) {
      const int tq = a.T - t0 < 65535 ? a.T - t0 : 65535;
      attn_split_kernel<T><<<dim3(1, a.n_heads, tq), kSplitThreads, 0, stream>>>(
          qkv, K, V, t0, a.pos0, a.n_heads, a.head_dim, scale, 1, nullptr, nullptr, out);
      CUDA_CHECK_LAUNCH("attn_split_kernel");
    }
    return;
  }
  const size_t per_query = split_bytes_per_query(a);
  size_t group = ws_bytes / per_query;
  if (group == 0 || ws == nullptr)
    throw std::invalid_argument("attention: workspace of " + std::to_string(ws_bytes) + " bytes is below the " +
                                std::to_string(per_query) + " one query needs");
  if (group > 65535) group = 65535;
  float* ws_o = ws;
  for (int t0 = 0; t0 < a.T; t0 += int(group)) {
    const int tq = a.T - t0 < int(group) ? a.T - t0 : int(group);
    float* ws_ml = ws_o + size_t(tq) * a.n_heads * nchunks * a.head_dim;
    attn_split_kernel<T><<<dim3(nchunks, a.n_heads, tq), kSplitThreads, 0, stream>>>(
        qkv, K, V, t0, a.pos0, a.n_heads, a.head_dim, scale, nchunks, ws_o, ws_ml, out);
    CUDA_CHECK_LAUNCH("attn_split_kernel");
    attn_combine_kernel<T><<<dim3(a.n_heads, tq), kSplitThreads, nchunks * sizeof(float), stream>>>(
        ws_o, ws_ml, t0, a.n_heads, a.head_dim, nchunks, out);
    CUDA_CHECK_LAUNCH("attn_combine_kernel");
  }
}

// ------------------------------------------------------------------------------------------------ flash (WMMA)
namespace wmma = nvcuda::wmma;

template <typename T, int HD>
struct FlashCfg {
  static constexpr int BQ = 64, BKV = 32, NW = 4;  // queries per block, keys per tile, warps (16 rows each)
  static constexpr int LDQ = HD + 8;               // elements: row stride of Q, K, V tiles
  static constexpr int LDS = BKV + 4;              // floats: row stride of a warp's S tile
  static constexpr int LDP = BKV + 8;              // elements: row stride of a warp's P tile
  static constexpr int LDO = HD + 4;               // floats: row stride of a warp's O tile
  static constexpr size_t kQ = size_t(BQ) * LDQ * sizeof(T);
  static constexpr size_t kKV = size_t(BKV) * LDQ * sizeof(T);
  static constexpr size_t kS = size_t(NW) * 16 * LDS * sizeof(float);
  static constexpr size_t kP = size_t(NW) * 16 * LDP * sizeof(T);
  static constexpr size_t kO = size_t(NW) * 16 * LDO * sizeof(float);
  static constexpr size_t kSmem = kQ + 2 * kKV + kS + kP + kO;
  // WMMA needs 32-byte aligned tile pointers: every region size and every 16-row step must keep that.
  static_assert(kQ % 128 == 0 && kKV % 128 == 0 && kS % 128 == 0 && kP % 128 == 0, "region alignment");
  static_assert((16 * LDQ * sizeof(T)) % 32 == 0 && (16 * LDS * 4) % 32 == 0, "fragment alignment");
  static_assert((16 * LDP * sizeof(T)) % 32 == 0 && (16 * LDO * 4) % 32 == 0, "fragment alignment");
  static_assert(HD % 16 == 0 && BKV % 16 == 0, "tile shapes");
};

// grid (ceil(T/64), n_heads), block 128, dynamic shared FlashCfg::kSmem.
template <typename T, int HD>
static __global__ void __launch_bounds__(128)
    attn_flash_kernel(const T* __restrict__ qkv, const T* __restrict__ Kc, const T* __restrict__ Vc, int T_, int pos0,
                      int n_heads, float scale, T* __restrict__ out) {
  using C = FlashCfg<T, HD>;
  constexpr int CPR = HD / 8;      // 16-byte chunks per row
  constexpr int CW = C::BKV / 2;   // score columns per lane
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = reinterpret_cast<T*>(smem + C::kQ);
  T* Vs = reinterpret_cast<T*>(smem + C::kQ + C::kKV);
  float* Ss = reinterpret_cast<float*>(smem + C::kQ + 2 * C::kKV);
  T* Ps = reinterpret_cast<T*>(smem + C::kQ + 2 * C::kKV + C::kS);
  float* Os = reinterpret_cast<float*>(smem + C::kQ + 2 * C::kKV + C::kS + C::kP);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int h = blockIdx.y, q0 = blockIdx.x * C::BQ;
  const int H = n_heads * HD;
  const int64_t ldq = 3 * int64_t(H);
  const int Lk = pos0 + T_;  // keys in the cache for this call

  // Q tile [64][HD] (rows past T are zero)
  for (int e = tid; e < C::BQ * CPR; e += 128) {
    const int r = e / CPR, c = (e % CPR) * 8, t = q0 + r;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < T_) v = *reinterpret_cast<const uint4*>(qkv + t * ldq + int64_t(h) * HD + c);
    *reinterpret_cast<uint4*>(Qs + r * C::LDQ + c) = v;
  }

  float* Sw = Ss + warp * 16 * C::LDS;
  T* Pw = Ps + warp * 16 * C::LDP;
  float* Ow = Os + warp * 16 * C::LDO;
  const int r = lane >> 1, half = lane & 1;  // this lane: row r of the warp's 16, half of the columns
  const int tq = q0 + warp * 16 + r;         // its query index
  const int qpos = pos0 + tq;                // its absolute position: sees keys 0..qpos
  const bool row_valid = tq < T_;
  constexpr int OH = HD / 2;  // O columns per lane
  for (int d = 0; d < OH; ++d) Ow[r * C::LDO + half * OH + d] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;

  const int last_q = (q0 + C::BQ < T_ ? q0 + C::BQ : T_) - 1;
  const int kv_end = pos0 + last_q + 1;  // keys any row of this block can see
  for (int kv0 = 0; kv0 < kv_end; kv0 += C::BKV) {
    __syncthreads();  // all warps are done with the previous K/V tile (and the Q tile is visible)
    for (int e = tid; e < C::BKV * CPR; e += 128) {
      const int rr = e / CPR, c = (e % CPR) * 8, j = kv0 + rr;
      uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
      if (j < Lk) {
        kv = *reinterpret_cast<const uint4*>(Kc + int64_t(j) * H + int64_t(h) * HD + c);
        vv = *reinterpret_cast<const uint4*>(Vc + int64_t(j) * H + int64_t(h) * HD + c);
      }
      *reinterpret_cast<uint4*>(Ks + rr * C::LDQ + c) = kv;
      *reinterpret_cast<uint4*>(Vs + rr * C::LDQ + c) = vv;
    }
    __syncthreads();

    // S_w [16 x BKV] = Q_w [16 x HD] . K_tile^T
#pragma unroll
    for (int nb = 0; nb < C::BKV / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
      wmma::fill_fragment(s, 0.f);
#pragma unroll
      for (int kk = 0; kk < HD; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;  // (k, n) at Ks[n * LDQ + k]
        wmma::load_matrix_sync(fa, Qs + (warp * 16) * C::LDQ + kk, C::LDQ);
        wmma::load_matrix_sync(fb, Ks + (nb * 16) * C::LDQ + kk, C::LDQ);
        wmma::mma_sync(s, fa, fb, s);
      }
      wmma::store_matrix_sync(Sw + nb * 16, s, C::LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // online softmax of row r over columns [half*CW, half*CW + CW)
    float sv[CW];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < CW; ++c) {
      const int col = half * CW + c, j = kv0 + col;
      float v = Sw[r * C::LDS + col] * scale;
      if (!row_valid || j > qpos) v = -INFINITY;  // causal (j > qpos also covers j >= Lk)
      sv[c] = v;
      mx = fmaxf(mx, v);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;  // fully masked so far: keep exp() finite
    const float corr = expf(m_run - m_use);                 // 0 on the first tile
    float ls = 0.f;
#pragma unroll
    for (int c = 0; c < CW; ++c) {
      const float p = expf(sv[c] - m_use);
      ls += p;
      Pw[r * C::LDP + half * CW + c] = from_f32<T>(p);
    }
    ls += __shfl_xor_sync(0xffffffffu, ls, 1);
    l_run = l_run * corr + ls;
    m_run = m_new;
    for (int d = 0; d < OH; ++d) Ow[r * C::LDO + half * OH + d] *= corr;
    __syncwarp();

    // O_w [16 x HD] += P_w [16 x BKV] . V_tile [BKV x HD]
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fp[C::BKV / 16];
#pragma unroll
    for (int kk = 0; kk < C::BKV / 16; ++kk) wmma::load_matrix_sync(fp[kk], Pw + kk * 16, C::LDP);
#pragma unroll
    for (int nb = 0; nb < HD / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, Ow + nb * 16, C::LDO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < C::BKV / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fv;  // (k, n) at Vs[k * LDQ + n]
        wmma::load_matrix_sync(fv, Vs + (kk * 16) * C::LDQ + nb * 16, C::LDQ);
        wmma::mma_sync(o, fp[kk], fv, o);
      }
      wmma::store_matrix_sync(Ow + nb * 16, o, C::LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (row_valid) {
    const float inv = 1.f / l_run;
    T* dst = out + int64_t(tq) * H + int64_t(h) * HD + half * OH;
    for (int d = 0; d < OH; ++d) dst[d] = from_f32<T>(Ow[r * C::LDO + half * OH + d] * inv);
  }
}

template <typename T, int HD>
static void launch_flash(const AttnArgs& a, cudaStream_t stream) {
  using C = FlashCfg<T, HD>;
  CUDA_CHECK(cudaFuncSetAttribute(attn_flash_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(C::kSmem)));
  const dim3 grid(ceil_div(a.T, C::BQ), a.n_heads);
  attn_flash_kernel<T, HD><<<grid, C::NW * 32, C::kSmem, stream>>>(
      static_cast<const T*>(a.qkv), static_cast<const T*>(a.K), static_cast<const T*>(a.V), a.T, a.pos0, a.n_heads,
      1.0f / sqrtf(float(HD)), static_cast<T*>(a.out));
  CUDA_CHECK_LAUNCH("attn_flash_kernel");
}

// ------------------------------------------------------------------------------------------------ entry
static bool flash_env_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("QWEN_ATTN_FLASH");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

static bool use_flash(const AttnArgs& a) {
  return a.act != DType::F32 && (a.head_dim == 64 || a.head_dim == 128) && a.T > kFlashMinT &&
         aligned16(a.qkv) && aligned16(a.K) && aligned16(a.V) && flash_env_enabled();
}

const char* attention_path(const AttnArgs& a) { return use_flash(a) ? "flash" : "split"; }

size_t attention_workspace_bytes(const AttnArgs& a) {
  if (a.T <= 0 || use_flash(a)) return 0;
  const size_t per_query = split_bytes_per_query(a);
  if (per_query == 0) return 0;
  size_t group = kWsBudget / per_query;
  if (group < 1) group = 1;
  if (group > size_t(a.T)) group = size_t(a.T);
  return group * per_query;
}

void attention(const AttnArgs& a, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (a.T <= 0) return;
  if (a.n_heads <= 0 || a.head_dim <= 0 || a.head_dim > kMaxHd || a.pos0 < 0)
    throw std::invalid_argument("attention: head_dim must be in 1.." + std::to_string(kMaxHd) + " (got " +
                                std::to_string(a.head_dim) + ")");
  if (a.n_heads > 65535) throw std::invalid_argument("attention: too many heads");
  const bool flash = use_flash(a);
  dispatch_act(a.act, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      if (flash) {
        if (a.head_dim == 128)
          launch_flash<T, 128>(a, stream);
        else
          launch_flash<T, 64>(a, stream);
        return;
      }
    }
    launch_split<T>(a, static_cast<float*>(ws), ws_bytes, stream);
  });
}

}  // namespace qwen::cu
