// attention: three kernel families over a batched step (see attention.cuh and step.cuh for the paged KV layout).
//
// split (decode and short chunks; everything for fp32 / odd head_dim): grid (chunks of 256 keys, heads, rows), 128
// threads; ONE launch for all the rows it is given, whatever their sequences and lengths. The block maps its row to
// its slice (row -> slice table), so row t of a slice sees keys 0..pos0+t; blocks whose chunk starts past their row's
// last key exit at once (the grid is sized by the longest row). A chunk spans 8 KV blocks: their base pointers are
// looked up once into shared memory. The block scales q by 1/sqrt(d) into shared fp32, one warp per key computes the
// scores (lanes over d, shuffle reduce) into shared, block max / exp / sum in fp32, then thread d accumulates
// sum_j p_j v[j, d]. A row with one chunk writes out directly; a row with several writes (m, l, o[d]) partials of
// its chunks c < its own chunk count to the workspace, and attn_combine_kernel merges exactly those:
// O = sum_c e^(m_c - M) o_c / sum_c e^(m_c - M) l_c. Reads K and V once per (row, head): memory bound. bf16/fp16 at
// head_dim 64/128 use attn_split_vec_kernel (attention_split.cuh: 16-byte loads, 2.2-2.9 TB/s on an H100); the scalar
// kernel below (2-byte loads; 79 us per decode layer at 2,100 keys there) serves fp32, other head dims and
// QWEN_ATTN_SPLIT=scalar.
//
// flash2 (default for prefill / long chunks, bf16/fp16, head_dim 64 or 128): FlashAttention-2 style mma.sync kernel
// in flash_mma.cuh: Q fragments and the fp32 O accumulators in registers, 64-key tiles (two KV blocks) through a
// 2-stage cp.async ring, P reused from the S accumulators, online softmax with exp2. One launch over the step's
// (slice, 64-query tile) list x heads.
//
// flash / WMMA (fallback, QWEN_ATTN_FLASH=wmma): same work split, 4 warps, each warp owns 16 query rows. Per tile of 32
// keys -- exactly KV block kv0/32 of the slice, so a tile is one dense [32][H] slab of one block -- the block loads
// K and V [32][d] into shared (zero rows past the slice's last key: the block's unused rows are never read); each
// warp computes S = Q K^T [16 x 32] with WMMA (fp32 accumulate) into its shared S tile; lane pair (2r, 2r+1) owns row
// r: scale, causal mask, online softmax (running max m, running sum l, in fp32), writes P in the activation type and
// rescales its row of the fp32 O tile in shared by e^(m_old - m_new); then O += P V with WMMA (O kept in shared,
// loaded / stored per tile). Key tiles past the tile's last query are skipped. Shared memory ~81 KB at d = 128.
// Measured on an H100: 36-42 TFLOP/s at T = 2048 / chunks of 512 (the O round trips through shared memory).
#include <mma.h>

#include <cstdlib>
#include <cstring>

#include "attention.cuh"
#include "attention_split.cuh"
#include "common.cuh"
#include "flash_mma.cuh"

namespace qwen::cu {

// ------------------------------------------------------------------------------------------------ split
constexpr int kSplitThreads = 128;
constexpr int kMaxHd = 256;
constexpr int kChunkBlocks = kSplitChunk / kKvBlockTokens;  // KV blocks per chunk
constexpr size_t kWsBudget = size_t(64) << 20;              // workspace wanted at most (rows are grouped to fit)
constexpr int kMaxGridYZ = 65535;
static_assert(kSplitChunk % kKvBlockTokens == 0 && kChunkBlocks <= kSplitThreads, "chunk = whole KV blocks");

// Row handled by blockIdx (z) of a split / combine launch: a row of the list, or row r0 + z without a list.
__device__ __forceinline__ int split_row(const int32_t* __restrict__ rowlist, int r0, int z) {
  return rowlist ? rowlist[r0 + z] : r0 + z;
}

// grid (nchunks, n_heads, rows in group), block 128. Row `row`, keys [c*256, min((c+1)*256, pos0+t+1)).
// Workspace slot of (group row z, head h, chunk c): (z * n_heads + h) * nchunks + c.
template <typename T>
static __global__ void __launch_bounds__(kSplitThreads)
    attn_split_kernel(const T* __restrict__ qkv, StepView v, const int32_t* __restrict__ rowlist, int r0,
                      int n_heads, int hd, int layer, float scale, int nchunks, float* __restrict__ ws_o,
                      float* __restrict__ ws_ml, T* __restrict__ out) {
  __shared__ float qs[kMaxHd];
  __shared__ float ps[kSplitChunk];
  __shared__ const T* kb[kChunkBlocks];  // row 0 of this head's keys in each KV block of the chunk
  __shared__ const T* vb[kChunkBlocks];  // ... and of its values
  const int c = blockIdx.x, h = blockIdx.y, z = blockIdx.z;
  const int row = split_row(rowlist, r0, z);
  const int si = v.row_slice[row];
  if (si < 0) return;  // row of no slice (uniform over the block)
  const DevSlice sl = v.slices[si];
  const int L = sl.pos0 + (row - sl.row0) + 1;  // keys visible to this row
  const int nc = ceil_div(L, kSplitChunk);      // this row's own chunk count (<= nchunks)
  if (c >= nc) return;                          // wholly in the row's future: the combine never reads this slot
  const int k0 = c * kSplitChunk, n = min(kSplitChunk, L - k0);
  const int nb = ceil_div(n, kKvBlockTokens);
  const int H = n_heads * hd;
  const int64_t slot = (int64_t(z) * n_heads + h) * nchunks + c;

  const T* q = qkv + int64_t(row) * 3 * H + int64_t(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = to_f32(q[d]) * scale;
  if (threadIdx.x < nb) {
    const T* kr = kv_rows<const T>(v, sl, k0 / kKvBlockTokens + threadIdx.x, layer, 0, H) + int64_t(h) * hd;
    kb[threadIdx.x] = kr;
    vb[threadIdx.x] = kr + int64_t(kKvBlockTokens) * H;  // the layer's V rows follow its K rows in the block
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
#pragma unroll 4
  for (int j = warp; j < n; j += nw) {
    const T* kr = kb[j / kKvBlockTokens] + int64_t(j % kKvBlockTokens) * H;
    float acc = 0.f;
    for (int d = lane; d < hd; d += 32) acc = fmaf(qs[d], to_f32(kr[d]), acc);
    acc = warp_sum(acc);
    if (lane == 0) ps[j] = acc;
  }
  __syncthreads();

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
    float o = 0.f;
    for (int b = 0; b < nb; ++b) {
      const T* vcol = vb[b] + d;
      const float* pb = ps + b * kKvBlockTokens;
      const int jn = min(kKvBlockTokens, n - b * kKvBlockTokens);
#pragma unroll 8
      for (int j = 0; j < jn; ++j) o = fmaf(pb[j], to_f32(vcol[int64_t(j) * H]), o);
    }
    if (nc == 1)
      out[int64_t(row) * H + int64_t(h) * hd + d] = from_f32<T>(o / l);
    else
      ws_o[slot * hd + d] = o;
  }
  if (nc > 1 && threadIdx.x == 0) {
    ws_ml[2 * slot] = m;
    ws_ml[2 * slot + 1] = l;
  }
}

// grid (n_heads, rows in group), block 128, dynamic shared nchunks floats. Merges chunks c < the row's own count.
template <typename T>
static __global__ void __launch_bounds__(kSplitThreads)
    attn_combine_kernel(const float* __restrict__ ws_o, const float* __restrict__ ws_ml, StepView v,
                        const int32_t* __restrict__ rowlist, int r0, int n_heads, int hd, int nchunks,
                        T* __restrict__ out) {
  extern __shared__ float wts[];  // [nc] e^(m_c - M)
  __shared__ float inv_l;
  pdl_wait();  // the split kernel's workspace (common.cuh: the PDL contract)
  pdl_launch_dependents();
  const int h = blockIdx.x, z = blockIdx.y;
  const int row = split_row(rowlist, r0, z);
  const int si = v.row_slice[row];
  if (si < 0) return;
  const DevSlice sl = v.slices[si];
  const int nc = ceil_div(sl.pos0 + (row - sl.row0) + 1, kSplitChunk);
  if (nc == 1) return;  // the split kernel wrote this row directly
  const int H = n_heads * hd;
  const int64_t base = (int64_t(z) * n_heads + h) * nchunks;
  if (threadIdx.x == 0) {
    float M = -INFINITY;
    for (int c = 0; c < nc; ++c) M = fmaxf(M, ws_ml[2 * (base + c)]);
    float Ls = 0.f;
    for (int c = 0; c < nc; ++c) {
      const float w = expf(ws_ml[2 * (base + c)] - M);  // every chunk c < nc holds >= 1 visible key: m_c finite
      wts[c] = w;
      Ls = fmaf(w, ws_ml[2 * (base + c) + 1], Ls);
    }
    inv_l = 1.f / Ls;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.f;
    for (int c = 0; c < nc; ++c) o = fmaf(wts[c], ws_o[(base + c) * hd + d], o);
    out[int64_t(row) * H + int64_t(h) * hd + d] = from_f32<T>(o * inv_l);
  }
}

static size_t split_bytes_per_row(int n_heads, int hd, int nchunks) {
  return nchunks <= 1 ? 0 : size_t(n_heads) * size_t(nchunks) * size_t(hd + 2) * sizeof(float);
}

// The split-kernel launch: the 16-byte-load kernel (attention_split.cuh) for bf16/fp16 at head_dim 64 / 128 with an
// aligned qkv, unless QWEN_ATTN_SPLIT=scalar (read per call, for A/B checks); the scalar kernel otherwise.
static bool split_scalar_env() {
  const char* e = std::getenv("QWEN_ATTN_SPLIT");
  return e && std::strcmp(e, "scalar") == 0;
}
template <typename T>
static void split_chunks(const AttnArgs& a, dim3 grid, const T* qkv, const int32_t* rowlist, int r0, float scale,
                         int nchunks, float* ws_o, float* ws_ml, T* out, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if ((a.head_dim == 128 || a.head_dim == 64) && aligned16(qkv) && !split_scalar_env()) {
      if (a.head_dim == 128)
        launch_pdl(attn_split_vec_kernel<T, 128>, grid, dim3(128), 0, stream, qkv, a.step, rowlist, r0, a.n_heads,
                   a.layer, scale, nchunks, ws_o, ws_ml, out);
      else
        launch_pdl(attn_split_vec_kernel<T, 64>, grid, dim3(128), 0, stream, qkv, a.step, rowlist, r0, a.n_heads,
                   a.layer, scale, nchunks, ws_o, ws_ml, out);
      return;
    }
  }
  attn_split_kernel<T><<<grid, kSplitThreads, 0, stream>>>(qkv, a.step, rowlist, r0, a.n_heads, a.head_dim, a.layer,
                                                           scale, nchunks, ws_o, ws_ml, out);
  CUDA_CHECK_LAUNCH("attn_split_kernel");
}

// Split attention over `count` rows: rowlist[0..count) or, with rowlist == nullptr, rows 0..count-1.
template <typename T>
static void launch_split(const AttnArgs& a, const int32_t* rowlist, int count, int nchunks, float* ws,
                         size_t ws_bytes, cudaStream_t stream) {
  if (count <= 0 || nchunks <= 0) return;
  const float scale = 1.0f / sqrtf(float(a.head_dim));
  const T* qkv = static_cast<const T*>(a.qkv);
  T* out = static_cast<T*>(a.out);
  if (nchunks == 1) {  // every row fits one chunk: direct, no workspace, no combine
    for (int r0 = 0; r0 < count; r0 += kMaxGridYZ) {
      const int g = count - r0 < kMaxGridYZ ? count - r0 : kMaxGridYZ;
      split_chunks<T>(a, dim3(1, a.n_heads, g), qkv, rowlist, r0, scale, 1, nullptr, nullptr, out, stream);
    }
    return;
  }
  if (size_t(nchunks) * sizeof(float) > 48 * 1024)
    throw std::invalid_argument("attention: " + std::to_string(nchunks) + " key chunks exceed the combine kernel");
  const size_t per_row = split_bytes_per_row(a.n_heads, a.head_dim, nchunks);
  size_t group = ws ? ws_bytes / per_row : 0;
  if (group == 0)
    throw std::invalid_argument("attention: workspace of " + std::to_string(ws_bytes) + " bytes is below the " +
                                std::to_string(per_row) + " one row needs");
  if (group > size_t(kMaxGridYZ)) group = kMaxGridYZ;
  float* ws_o = ws;
  for (int r0 = 0; r0 < count; r0 += int(group)) {
    const int g = count - r0 < int(group) ? count - r0 : int(group);
    float* ws_ml = ws_o + size_t(g) * a.n_heads * nchunks * a.head_dim;
    split_chunks<T>(a, dim3(nchunks, a.n_heads, g), qkv, rowlist, r0, scale, nchunks, ws_o, ws_ml, out, stream);
    launch_pdl(attn_combine_kernel<T>, dim3(a.n_heads, g), dim3(kSplitThreads), nchunks * sizeof(float), stream,
               static_cast<const float*>(ws_o), static_cast<const float*>(ws_ml), a.step, rowlist, r0, a.n_heads,
               a.head_dim, nchunks, out);
  }
}

// ------------------------------------------------------------------------------------------------ flash (WMMA)
namespace wmma = nvcuda::wmma;

template <typename T, int HD>
struct FlashCfg {
  static constexpr int BQ = kFlashBQ, BKV = kKvBlockTokens, NW = 4;  // queries per block, keys per tile, warps
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
  static_assert(BQ == NW * 16, "each warp owns 16 query rows");
};

// grid (n_tiles, n_heads), block 128, dynamic shared FlashCfg::kSmem. Tile blockIdx.x = (slice, q0): queries
// q0 .. q0+63 of the slice (rows row0 + q0 ..), keys 0 .. pos0 + min(q0 + 64, T) - 1 from its paged cache.
template <typename T, int HD>
static __global__ void __launch_bounds__(128)
    attn_flash_kernel(const T* __restrict__ qkv, StepView v, int n_heads, int layer, float scale,
                      T* __restrict__ out) {
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
  const int2 tile = v.flash_tiles[blockIdx.x];
  const DevSlice sl = v.slices[tile.x];
  const int h = blockIdx.y, q0 = tile.y;
  const int T_ = sl.T, pos0 = sl.pos0;
  const int H = n_heads * HD;
  const int64_t ldq = 3 * int64_t(H);
  const int Lk = pos0 + T_;  // keys in the cache for this slice
  const T* qbase = qkv + int64_t(sl.row0) * ldq + int64_t(h) * HD;

  // Q tile [64][HD] (rows past the slice's T are zero)
  for (int e = tid; e < C::BQ * CPR; e += 128) {
    const int r = e / CPR, c = (e % CPR) * 8, t = q0 + r;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (t < T_) val = *reinterpret_cast<const uint4*>(qbase + t * ldq + c);
    *reinterpret_cast<uint4*>(Qs + r * C::LDQ + c) = val;
  }

  float* Sw = Ss + warp * 16 * C::LDS;
  T* Pw = Ps + warp * 16 * C::LDP;
  float* Ow = Os + warp * 16 * C::LDO;
  const int r = lane >> 1, half = lane & 1;  // this lane: row r of the warp's 16, half of the columns
  const int tq = q0 + warp * 16 + r;         // its query index in the slice
  const int qpos = pos0 + tq;                // its absolute position: sees keys 0..qpos
  const bool row_valid = tq < T_;
  constexpr int OH = HD / 2;  // O columns per lane
  for (int d = 0; d < OH; ++d) Ow[r * C::LDO + half * OH + d] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;

  const int last_q = (q0 + C::BQ < T_ ? q0 + C::BQ : T_) - 1;
  const int kv_end = pos0 + last_q + 1;  // keys any row of this block can see (<= Lk <= 32 * nblk)
  for (int kv0 = 0; kv0 < kv_end; kv0 += C::BKV) {
    // this tile = KV block kv0 / 32 of the slice: rows 0..31 of head h's keys, then of its values
    const T* kt = kv_rows<const T>(v, sl, kv0 / C::BKV, layer, 0, H) + int64_t(h) * HD;
    const T* vt = kt + int64_t(C::BKV) * H;
    __syncthreads();  // all warps are done with the previous K/V tile (and the Q tile is visible)
    for (int e = tid; e < C::BKV * CPR; e += 128) {
      const int rr = e / CPR, c = (e % CPR) * 8, j = kv0 + rr;
      uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
      if (j < Lk) {  // rows past the last key may hold anything (stale data of a reused block)
        kv = *reinterpret_cast<const uint4*>(kt + int64_t(rr) * H + c);
        vv = *reinterpret_cast<const uint4*>(vt + int64_t(rr) * H + c);
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
      float x = Sw[r * C::LDS + col] * scale;
      if (!row_valid || j > qpos) x = -INFINITY;  // causal (j > qpos also covers j >= Lk)
      sv[c] = x;
      mx = fmaxf(mx, x);
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
    T* dst = out + (int64_t(sl.row0) + tq) * H + int64_t(h) * HD + half * OH;
    for (int d = 0; d < OH; ++d) dst[d] = from_f32<T>(Ow[r * C::LDO + half * OH + d] * inv);
  }
}

template <typename T, int HD>
static void launch_flash(const AttnArgs& a, cudaStream_t stream) {
  using C = FlashCfg<T, HD>;
  CUDA_CHECK(cudaFuncSetAttribute(attn_flash_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(C::kSmem)));
  const dim3 grid(a.step.n_tiles, a.n_heads);
  attn_flash_kernel<T, HD><<<grid, C::NW * 32, C::kSmem, stream>>>(
      static_cast<const T*>(a.qkv), a.step, a.n_heads, a.layer, 1.0f / sqrtf(float(HD)), static_cast<T*>(a.out));
  CUDA_CHECK_LAUNCH("attn_flash_kernel");
}

template <typename T, int HD>
static void launch_flash2(const AttnArgs& a, cudaStream_t stream) {
  using C = fa2::Cfg<T, HD>;
  CUDA_CHECK(cudaFuncSetAttribute(fa2::attn_fa2_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(C::kSmem)));
  const int64_t blocks = int64_t(a.step.n_tiles) * a.n_heads;  // tile-major: heaviest tiles first over all heads
  if (blocks > int64_t(0x7fffffff)) throw std::invalid_argument("attention: too many flash tiles");
  fa2::attn_fa2_kernel<T, HD><<<unsigned(blocks), C::THREADS, C::kSmem, stream>>>(
      static_cast<const T*>(a.qkv), a.step, a.n_heads, a.layer, 1.4426950408889634f / sqrtf(float(HD)),
      static_cast<T*>(a.out));
  CUDA_CHECK_LAUNCH("attn_fa2_kernel");
}

// ------------------------------------------------------------------------------------------------ entry
// QWEN_ATTN_FLASH: unset / anything else -> flash2, "wmma" -> the WMMA flash kernel, "0" -> split only. Read on
// every call (a getenv per layer is noise) so that a test can switch paths with setenv.
enum class FlashMode { Off, Wmma, Mma };
static FlashMode flash_env_mode() {
  const char* e = std::getenv("QWEN_ATTN_FLASH");
  if (e && std::strcmp(e, "0") == 0) return FlashMode::Off;
  if (e && std::strcmp(e, "wmma") == 0) return FlashMode::Wmma;
  return FlashMode::Mma;
}

// Flash for the long slices of this call? K/V tiles are 16-byte aligned by construction (block bases 256-byte
// aligned, H * 2 bytes a multiple of 128 for head_dim 64 / 128); qkv rows are when the buffer is. flash2 also stores
// 4-byte pairs of out: an out buffer that is not 16-byte aligned falls back to the WMMA kernel.
static FlashMode flash_mode(const AttnArgs& a) {
  if (a.act == DType::F32 || !(a.head_dim == 64 || a.head_dim == 128) || a.step.n_tiles <= 0 || !aligned16(a.qkv))
    return FlashMode::Off;
  const FlashMode m = flash_env_mode();
  if (m == FlashMode::Mma && !aligned16(a.out)) return FlashMode::Wmma;
  return m;
}
static bool use_flash(const AttnArgs& a) { return flash_mode(a) != FlashMode::Off; }

// The split part of the call: (row list or nullptr = all rows, row count, chunk count).
struct SplitPart {
  const int32_t* rows;
  int count, nchunks;
};
static SplitPart split_part(const AttnArgs& a) {
  if (use_flash(a)) return {a.step.small_rows, a.step.n_small, a.step.nchunks_small};
  return {nullptr, a.step.rows, a.step.nchunks_all};
}

const char* attention_path(const AttnArgs& a) {
  switch (flash_mode(a)) {
    case FlashMode::Off: return "split";
    case FlashMode::Wmma: return a.step.n_small > 0 ? "wmma+split" : "wmma";
    case FlashMode::Mma: break;
  }
  return a.step.n_small > 0 ? "flash2+split" : "flash2";
}

size_t attention_workspace_bytes(const AttnArgs& a) {
  if (a.step.rows <= 0) return 0;
  const SplitPart sp = split_part(a);
  const size_t per_row = split_bytes_per_row(a.n_heads, a.head_dim, sp.nchunks);
  if (sp.count <= 0 || per_row == 0) return 0;
  size_t group = kWsBudget / per_row;
  if (group < 1) group = 1;
  if (group > size_t(sp.count)) group = size_t(sp.count);
  return group * per_row;
}

void attention(const AttnArgs& a, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (a.step.rows <= 0) return;
  if (a.n_heads <= 0 || a.head_dim <= 0 || a.head_dim > kMaxHd)
    throw std::invalid_argument("attention: head_dim must be in 1.." + std::to_string(kMaxHd) + " (got " +
                                std::to_string(a.head_dim) + ")");
  if (a.n_heads > kMaxGridYZ) throw std::invalid_argument("attention: too many heads");
  const FlashMode fm = flash_mode(a);
  const SplitPart sp = split_part(a);
  dispatch_act(a.act, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      if (fm == FlashMode::Mma) {
        if (a.head_dim == 128)
          launch_flash2<T, 128>(a, stream);
        else
          launch_flash2<T, 64>(a, stream);
      } else if (fm == FlashMode::Wmma) {
        if (a.head_dim == 128)
          launch_flash<T, 128>(a, stream);
        else
          launch_flash<T, 64>(a, stream);
      }
    }
    launch_split<T>(a, sp.rows, sp.count, sp.nchunks, static_cast<float*>(ws), ws_bytes, stream);
  });
}

}  // namespace qwen::cu
