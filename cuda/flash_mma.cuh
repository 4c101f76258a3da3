// flash2: FlashAttention-2 style prefill / chunk attention with mma.sync (sm_80+), included by attention.cu only.
//
// Work item = one CTA per (slice, 64-query tile) x head: blockIdx.x = tile * n_heads + head, so the CTAs go out
// tile-major and the tile list's heaviest-first order (begin_step) holds across heads too. 4 warps, warp w owns query
// rows 16w .. 16w+15 of the tile. Per iteration a KV tile of 64 keys = two 32-position paged blocks.
//
//   Q [64][HD]  --cp.async--> smem --ldmatrix.x4--> A fragments in registers, kept for the whole key loop
//   K, V [64][HD] per tile --cp.async (16 B)--> smem ring of 2 stages (tile kt+1 loads while tile kt computes)
//   S [16 x 64] per warp = Q K^T: mma.m16n8k16, K B-fragments by ldmatrix.x4 (K rows are already "col" layout)
//   online softmax on the S accumulators in fp32 (exp2 of log2e-prescaled scores, quad shuffles for row max)
//   P = bf16/fp16 A fragments packed straight from the S accumulators (no shared-memory round trip)
//   O [16 x HD] per warp += P V: V B-fragments by ldmatrix.x4.trans; O stays in fp32 registers, written once.
//
// Causal mask (bottom-right): row t of the slice (position pos0 + t) sees keys 0 .. pos0 + t. Key tiles entirely
// at or below the tile's FIRST row's position run without compares (n_full of them); only the last 1-2 tiles mask.
// Keys past the slice's key count Lk are zero-filled in smem (never read from the cache: the block may not exist or
// hold stale data) and are always masked for valid rows (key >= Lk > position). Rows t >= T of a partial tile load
// zero queries, compute finite garbage and are not written.
//
// mma.m16n8k16 fragment layouts (PTX ISA), g = lane / 4, c = lane % 4, pairs packed low element first:
//   A 16x16 (row): a0 = (g, 2c..2c+1)  a1 = (g+8, 2c..)  a2 = (g, 2c+8..)  a3 = (g+8, 2c+8..)
//   B 16x8  (col): b0 = (k 2c..2c+1, n g)  b1 = (k 2c+8.., n g)
//   C 16x8  fp32 : c0, c1 = (g, 2c), (g, 2c+1)   c2, c3 = (g+8, 2c), (g+8, 2c+1)
//   ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; register i of lane l = matrix i's
//   (row l/4, cols 2(l%4)..+1), or with .trans its (rows 2(l%4)..+1, col l/4).
// cuda/test/attention_sim.py emulates these layouts per lane and runs this kernel's index math through them.
//
// Resources (ptxas, nvcc 13.0): HD 128: 225 registers on sm_90 (213-215 on sm_80/86/89), HD 64: 161; no spills.
// Shared memory 85 KB at HD 128 (45 KB at 64): 2 CTAs / SM on H100, 1 on A100 (164 KB) and sm_86/89 (100 KB).
// Measured on an H100 80GB HBM3 (32 heads x 128, bf16, one layer): prefill T=512 21 us (103 TFLOP/s), T=2048 in one
// slice 147 us (233 TFLOP/s), as 4 chunks of 512 187 us in all, chunk T=512 P=4096 155 us (236 TFLOP/s); the WMMA
// kernel takes 109 / 976 / 1021 / 957 us there.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "mma.cuh"
#include "step.cuh"

namespace qwen::cu::fa2 {

// PTX wrappers (smem_addr, ldsm_x4, ldsm_x4_trans, mma16816): mma.cuh, shared with gemm_skinny.cu.
// 2^x (MUFU.EX2, ~2 ulp; 2^-inf = +0): the scores are prescaled by log2(e) / sqrt(d).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, int HD_>
struct Cfg {
  static constexpr int HD = HD_;
  static constexpr int NW = 4, THREADS = NW * 32;
  static constexpr int BQ = kFlashBQ;              // 64 query rows: 16 per warp (begin_step's tile size)
  static constexpr int BKV = 2 * kKvBlockTokens;   // 64 keys per iteration = 2 paged blocks
  static constexpr int LD = HD + 8;                // smem row stride (elements): +16 B makes the 8 row addresses of
                                                   //   an ldmatrix hit 8 different 16-byte bank groups
  static constexpr int KS = HD / 16;               // k-steps of Q K^T (Q fragments per lane: KS x 4 regs)
  static constexpr int NS = BKV / 8;               // n-tiles of S [16 x 64] per warp (8 x 4 fp32 per lane)
  static constexpr int ND = HD / 8;                // n-tiles of O [16 x HD] per warp (ND x 4 fp32 per lane)
  static constexpr int CPR = HD / 8;               // 16-byte chunks per row
  static constexpr int RSTEP = THREADS / CPR;      // rows apart of one thread's copies (8 at HD 128, 16 at 64)
  static constexpr size_t kTile = size_t(BKV) * LD * sizeof(T);  // one K or V tile
  static constexpr size_t kQ = size_t(BQ) * LD * sizeof(T);
  static constexpr size_t kSmem = kQ + 2 * 2 * kTile;  // Q + 2 stages x (K, V): 85 KB at HD 128, 45 KB at 64
  static_assert(HD % 16 == 0 && BQ == NW * 16 && BKV == 64, "tile shapes");
  static_assert(THREADS % CPR == 0 && kKvBlockTokens % RSTEP == 0, "a thread's rows stay in one block per copy");
  static_assert((LD * sizeof(T)) % 16 == 0 && kQ % 128 == 0 && kTile % 128 == 0, "16-byte smem rows and regions");
};

// grid (n_tiles * n_heads), block 128, dynamic smem Cfg::kSmem. scale_log2 = log2(e) / sqrt(HD).
template <typename T, int HD>
static __global__ void __launch_bounds__(128, 2)
    attn_fa2_kernel(const T* __restrict__ qkv, StepView v, int n_heads, int layer, float scale_log2,
                    T* __restrict__ out) {
  using C = Cfg<T, HD>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* const Qs = reinterpret_cast<T*>(smem);                  // [BQ][LD]
  T* const KVs = reinterpret_cast<T*>(smem + C::kQ);         // stage s: K at 2s, V at 2s + 1 tiles of [BKV][LD]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int h = blockIdx.x % n_heads;
  const int2 tile = v.flash_tiles[blockIdx.x / n_heads];
  const DevSlice sl = v.slices[tile.x];
  const int q0 = tile.y, T_ = sl.T, pos0 = sl.pos0;
  const int Lk = pos0 + T_;                             // keys in the cache for this slice
  const int H = n_heads * HD;
  const int64_t ldq = 3 * int64_t(H);
  const int rows_here = min(C::BQ, T_ - q0);            // valid query rows of this tile
  const int kv_end = pos0 + q0 + rows_here;             // keys its last row sees
  const int n_kv = ceil_div(kv_end, C::BKV);            // key tiles to visit
  const int n_full = min(n_kv, (pos0 + q0 + 1) / C::BKV);  // tiles every row sees whole: no mask
  const T* const qbase = qkv + (int64_t(sl.row0) + q0) * ldq + int64_t(h) * HD;

  // ---- async copies; each thread copies column chunk cc of rows r0, r0 + RSTEP, ...
  const int cc = (tid % C::CPR) * 8, r0 = tid / C::CPR;
  {  // Q [64][HD]: rows past the slice's T are zero-filled (src-size 0; the address stays a valid one)
#pragma unroll
    for (int i = 0; i < C::BQ / C::RSTEP; ++i) {
      const int r = r0 + i * C::RSTEP;
      const bool ok = r < rows_here;
      cp_async16(Qs + r * C::LD + cc, ok ? qbase + r * ldq + cc : qbase, ok ? 16 : 0);
    }
    cp_async_commit();
  }
  // K and V of key tile kt (keys kt*64 ..) into ring stage `st`. Rows of key >= Lk are zero-filled and their block
  // is not looked up (it may lie past the slice's nblk block ids).
  auto load_kv = [&](int kt, int st) {
    T* const Ks = KVs + size_t(2 * st) * C::BKV * C::LD;
    T* const Vs = Ks + C::BKV * C::LD;
    const int kv0 = kt * C::BKV;
    const T* kb[2];  // head h, column cc of row 0 of the tile's two blocks' K (V is 32 rows further)
#pragma unroll
    for (int b = 0; b < 2; ++b)
      kb[b] = kv0 + b * kKvBlockTokens < Lk
                  ? kv_rows<const T>(v, sl, kv0 / kKvBlockTokens + b, layer, 0, H) + int64_t(h) * HD + cc
                  : qbase;
#pragma unroll
    for (int i = 0; i < C::BKV / C::RSTEP; ++i) {
      const int r = r0 + i * C::RSTEP;                   // tile row; its block is b = r / 32 (compile-time per i)
      constexpr int kPerBlock = kKvBlockTokens / C::RSTEP;
      const int b = i / kPerBlock, rb = r - b * kKvBlockTokens;
      const bool ok = kv0 + r < Lk;
      const T* src = kb[b] + int64_t(rb) * H;
      cp_async16(Ks + r * C::LD + cc, ok ? src : qbase, ok ? 16 : 0);
      cp_async16(Vs + r * C::LD + cc, ok ? src + int64_t(kKvBlockTokens) * H : qbase, ok ? 16 : 0);
    }
  };
  load_kv(0, 0);
  cp_async_commit();

  // ---- Q fragments: warp rows 16w .. 16w+15, k-step ks: lanes 0-15 address rows 0-15 at col 16ks, lanes 16-31
  // rows 0-15 at col 16ks+8 -> matrices (rows 0-7 | 8-15) x (cols +0 | +8) = a0, a1, a2, a3.
  cp_async_wait<1>();  // the Q group is done (tile 0 may still be in flight)
  __syncthreads();
  uint32_t qf[C::KS][4];
#pragma unroll
  for (int ks = 0; ks < C::KS; ++ks)
    ldsm_x4(qf[ks], Qs + (warp * 16 + (lane & 15)) * C::LD + ks * 16 + (lane >> 4) * 8);

  const int g = lane >> 2, c2 = (lane & 3) * 2;        // fragment row / column pair of this lane
  const int qpos = pos0 + q0 + warp * 16 + g;          // position of the lane's row g (row g + 8: qpos + 8)
  const int warp_last = pos0 + q0 + warp * 16 + 15;    // latest position any row of this warp can have
  const bool warp_live = warp * 16 < rows_here;        // warp has at least one valid row
  float o[C::ND][4];
#pragma unroll
  for (int n = 0; n < C::ND; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max (raw scores) of rows g, g + 8
  float l_run[2] = {0.f, 0.f};              // running sum of this lane's columns only (quad-reduced at the end)

  // One key tile for this warp: S = Q K^T, [mask], online softmax, O += P V.
  auto tile_step = [&](const T* Ks, const T* Vs, int kv0, auto masked) {
    float s[C::NS][4];
#pragma unroll
    for (int n = 0; n < C::NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    // K B-fragments, key pair-tile np (keys 16np ..), k-step ks: lane addresses key 16np + 8(l/16) + l%8 at col
    // 16ks + 8((l/8)%2) -> matrices (keys +0, d +0 | keys +0, d +8 | keys +8, d +0 | keys +8, d +8)
    //                   = (b0, b1) of n-tile 2np, (b0, b1) of n-tile 2np+1.
#pragma unroll
    for (int ks = 0; ks < C::KS; ++ks) {
#pragma unroll
      for (int np = 0; np < C::NS / 2; ++np) {
        uint32_t b[4];
        ldsm_x4(b, Ks + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * C::LD + ks * 16 + ((lane >> 3) & 1) * 8);
        mma16816<T>(s[2 * np], qf[ks], b[0], b[1]);
        mma16816<T>(s[2 * np + 1], qf[ks], b[2], b[3]);
      }
    }
    if constexpr (decltype(masked)::value) {  // key kv0 + 8n + c2 (+1) vs positions qpos (c0, c1), qpos + 8 (c2, c3)
#pragma unroll
      for (int n = 0; n < C::NS; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (kv0 + n * 8 + c2 + (e & 1) > qpos + (e >> 1) * 8) s[n][e] = -INFINITY;
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < C::NS; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // the 4 lanes of a quad hold one row's 64 columns
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    }
    float ms[2];  // new max in log2 units (0 while the row has seen nothing: keeps -inf - -inf out)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float m_new = fmaxf(m_run[i], mx[i]);
      ms[i] = m_new == -INFINITY ? 0.f : m_new * scale_log2;
      const float corr = exp2_approx(m_run[i] * scale_log2 - ms[i]);  // 0 on the row's first visible tile
      m_run[i] = m_new;
      l_run[i] *= corr;
#pragma unroll
      for (int n = 0; n < C::ND; ++n) {
        o[n][2 * i] *= corr;
        o[n][2 * i + 1] *= corr;
      }
    }
    // P = 2^(s * scale_log2 - ms) packed into A fragments: k-step kk (keys 16kk ..) = S n-tiles 2kk, 2kk+1:
    // a0 = (g, 2c..) of n-tile 2kk = s[2kk][0..1], a1 = its (g+8, ..) = s[2kk][2..3], a2, a3 likewise of 2kk+1.
    uint32_t pf[C::NS / 2][4];
#pragma unroll
    for (int n = 0; n < C::NS; ++n) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) p[e] = exp2_approx(fmaf(s[n][e], scale_log2, -ms[e >> 1]));
      l_run[0] += p[0] + p[1];
      l_run[1] += p[2] + p[3];
      pf[n / 2][(n & 1) * 2 + 0] = pack2<T>(p[0], p[1]);
      pf[n / 2][(n & 1) * 2 + 1] = pack2<T>(p[2], p[3]);
    }
    // V B-fragments (.trans), k-step kk, d pair-tile dp (cols 16dp ..): lane addresses key 16kk + 8((l/8)%2) + l%8
    // at col 16dp + 8(l/16) -> matrices (keys +0, d +0 | keys +8, d +0 | keys +0, d +8 | keys +8, d +8)
    //                        = (b0, b1) of O n-tile 2dp, (b0, b1) of 2dp+1.
#pragma unroll
    for (int kk = 0; kk < C::NS / 2; ++kk) {
#pragma unroll
      for (int dp = 0; dp < C::ND / 2; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(b, Vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * C::LD + dp * 16 + (lane >> 4) * 8);
        mma16816<T>(o[2 * dp], pf[kk], b[0], b[1]);
        mma16816<T>(o[2 * dp + 1], pf[kk], b[2], b[3]);
      }
    }
  };

  for (int kt = 0; kt < n_kv; ++kt) {
    cp_async_wait<0>();  // tile kt is in this thread's smem writes ...
    __syncthreads();     // ... and everyone's; everyone is also done with tile kt - 1, whose stage is reloaded now
    if (kt + 1 < n_kv) load_kv(kt + 1, (kt + 1) & 1);
    cp_async_commit();
    const int kv0 = kt * C::BKV;
    if (!warp_live || kv0 > warp_last) continue;  // warp-uniform: none of these keys is visible to its rows
    const T* Ks = KVs + size_t(2 * (kt & 1)) * C::BKV * C::LD;
    const T* Vs = Ks + C::BKV * C::LD;
    if (kt < n_full)
      tile_step(Ks, Vs, kv0, std::false_type{});
    else
      tile_step(Ks, Vs, kv0, std::true_type{});
  }

  // ---- epilogue: full row sums, O / l rounded once, 4-byte stores (a quad writes 16 contiguous bytes per n-tile)
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 1);
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int t = q0 + warp * 16 + g + i * 8;
    if (t >= T_) continue;
    const float inv = 1.f / l_run[i];
    T* dst = out + (int64_t(sl.row0) + t) * H + int64_t(h) * HD + c2;
#pragma unroll
    for (int n = 0; n < C::ND; ++n)
      *reinterpret_cast<uint32_t*>(dst + n * 8) = pack2<T>(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
  }
}

}  // namespace qwen::cu::fa2
