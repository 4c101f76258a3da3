#include "core/engine.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace qwen {

double Engine::ntk_alpha(int L, int S) {
  // Reference: context_value = math.log(L / S, 2) + 1; alpha = max(2 ** ceil(context_value) - 1, 1).
  const double cv = std::log(double(L) / double(S)) / std::log(2.0) + 1.0;
  const double a = std::pow(2.0, std::ceil(cv)) - 1.0;
  return a < 1.0 ? 1.0 : a;
}

RopeParams Engine::rope_params(const ModelConfig& c, double alpha) {
  RopeParams rp;
  rp.rot_dims = c.rotary_dims;
  // base' = base * alpha^(rot/(rot-2)) in double; inv_freq = 1 / base'^(arange(0, rot, 2) / rot) in fp32 (torch).
  const double base = c.rope_base * std::pow(alpha, double(c.rotary_dims) / double(c.rotary_dims - 2));
  for (int i = 0; i < c.rotary_dims / 2; ++i)
    rp.inv_freq[i] = 1.0f / std::pow(float(base), float(2 * i) / float(c.rotary_dims));
  rp.logn_base = c.logn ? c.seq_length : 0;
  return rp;
}

static void check_tensor(const TensorDesc& t, const MappedFile& f, std::initializer_list<int64_t> shape) {
  std::vector<int64_t> want(shape);
  if (t.shape != want) throw std::runtime_error(f.path() + ": tensor " + t.name + " has an unexpected shape");
  uint64_t n = dtype_size(t.dtype);
  for (int64_t d : want) n *= uint64_t(d);
  if (n != t.nbytes || t.offset > f.size() || t.nbytes > f.size() - t.offset)
    throw std::runtime_error(f.path() + ": tensor " + t.name + " lies outside the file or has a wrong byte size");
}

std::unique_ptr<Engine> Engine::load(const LoadRequest& req, const std::function<void(double)>& progress,
                                     const std::atomic<bool>& cancel) {
  const ModelConfig& c = req.cfg;
  if (c.hidden != c.n_heads * c.head_dim || c.rotary_dims > c.head_dim || c.rotary_dims > 256 || c.rotary_dims < 2)
    throw std::runtime_error("inconsistent model configuration");
  if (c.n_layers < 1) throw std::runtime_error("n_layers must be >= 1");
  if (req.tensors.size() != size_t(3 + 8 * c.n_layers))
    throw std::runtime_error("expected " + std::to_string(3 + 8 * c.n_layers) + " tensors");
  std::unique_ptr<Engine> e(new Engine());
  e->cfg_ = c;
  for (const auto& p : req.files) e->files_.push_back(std::make_unique<MappedFile>(p));
  e->backend_ = make_backend(req.backend);

  uint64_t total = 0, done = 0;
  for (const auto& t : req.tensors) total += t.nbytes;
  auto take = [&](size_t i, std::initializer_list<int64_t> shape) -> Weight {
    const TensorDesc& t = req.tensors[i];
    if (t.file < 0 || size_t(t.file) >= e->files_.size()) throw std::runtime_error("tensor " + t.name + ": bad file index");
    const MappedFile& f = *e->files_[t.file];
    check_tensor(t, f, shape);
    Weight host;
    host.data = f.data() + t.offset;
    host.dtype = t.dtype;
    host.rows = t.shape.size() == 2 ? t.shape[0] : 1;
    host.cols = t.shape.back();
    // Touch every page now (in slices, so cancel and progress stay responsive): the first forward then runs at
    // full speed, and a truncated or unreadable file fails here rather than in a kernel.
    const uint64_t slice = 64ull << 20;
    for (uint64_t off = 0; off < t.nbytes; off += slice) {
      if (cancel.load()) throw std::runtime_error("aborted");
      const uint64_t end = std::min<uint64_t>(t.nbytes, off + slice);
      volatile uint8_t sink = 0;
      for (uint64_t b = off; b < end; b += 4096) sink ^= static_cast<const uint8_t*>(host.data)[b];
      (void)sink;
      done += end - off;
      if (progress && total) progress(0.9 * double(done) / double(total));
    }
    Weight w = e->backend_->upload(host);
    return w;
  };
  const int64_t H = c.hidden, F = c.ffn, V = c.vocab;
  e->w_.wte = take(0, {V, H});
  e->w_.ln_f = take(1, {H});
  e->w_.lm_head = take(2, {V, H});
  e->w_.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = e->w_.layers[size_t(l)];
    const size_t b = 3 + 8 * size_t(l);
    L.ln_1 = take(b + 0, {H});
    L.c_attn_w = take(b + 1, {3 * H, H});
    L.c_attn_b = take(b + 2, {3 * H});
    L.attn_c_proj = take(b + 3, {H, H});
    L.ln_2 = take(b + 4, {H});
    L.w1 = take(b + 5, {F, H});
    L.w2 = take(b + 6, {F, H});
    L.mlp_c_proj = take(b + 7, {H, F});
  }
  if (cancel.load()) throw std::runtime_error("aborted");
  if (req.kv_blocks < 1) throw std::runtime_error("the KV cache needs at least one block");
  e->kv_pool_ = e->backend_->new_kv_pool(c, req.kv_blocks);
  if (progress) progress(1.0);
  return e;
}

Engine::~Engine() {
  if (backend_) {
    for (Buf b : {h_, x_, qkv_, att_, proj_, a_, g_})
      if (b) backend_->free(b);
    for (Weight* w : {&w_.wte, &w_.ln_f, &w_.lm_head}) backend_->release(*w);
    for (auto& L : w_.layers)
      for (Weight* w : {&L.ln_1, &L.c_attn_w, &L.c_attn_b, &L.attn_c_proj, &L.ln_2, &L.w1, &L.w2, &L.mlp_c_proj})
        backend_->release(*w);
  }
}

std::unique_ptr<Sequence> Engine::new_sequence(int prompt_length) {
  auto s = std::make_unique<Sequence>();
  s->kv_ = std::make_unique<KVCache>(kv_pool_);
  if (prompt_length > 0) {
    s->alpha_ = cfg_.dynamic_ntk ? ntk_alpha(prompt_length, cfg_.seq_length) : 1.0;
    s->rope_ = rope_params(cfg_, s->alpha_);
    s->alpha_set_ = true;
  }
  return s;
}

void Engine::ensure_workspace(int T) {
  if (T <= ws_tokens_) return;
  for (Buf* b : {&h_, &x_, &qkv_, &att_, &proj_, &a_, &g_})
    if (*b) { backend_->free(*b); *b = nullptr; }
  const size_t H = size_t(cfg_.hidden), F = size_t(cfg_.ffn);
  h_ = backend_->alloc(T * H);
  x_ = backend_->alloc(T * H);
  qkv_ = backend_->alloc(T * 3 * H);
  att_ = backend_->alloc(T * H);
  proj_ = backend_->alloc(T * H);
  a_ = backend_->alloc(T * F);
  g_ = backend_->alloc(T * F);
  ws_tokens_ = T;
}

void Engine::step(const StepItem* items, int n, float* out, PickResult* picks) {
  std::lock_guard<std::mutex> lock(mu_);
  // Check everything first: a throw below this block must leave every sequence as it was.
  for (int i = 0; i < n; ++i) {
    const StepItem& it = items[i];
    if (!it.seq || it.T <= 0 || !it.ids) throw std::runtime_error("a step item needs a sequence and at least one token");
    if (int64_t(it.seq->length_) + it.T > kMaxPositions)
      throw std::runtime_error("the sequence would hold " + std::to_string(int64_t(it.seq->length_) + it.T) +
                               " positions; the maximum is " + std::to_string(kMaxPositions));
    for (int t = 0; t < it.T; ++t)
      if (it.ids[t] < 0 || it.ids[t] >= cfg_.vocab) throw std::runtime_error("token id out of range");
    for (int k = 0; k < i; ++k)
      if (items[k].seq == it.seq) throw std::runtime_error("a sequence appears twice in one step");
    if (it.pick && (it.logits != 1 || !picks))
      throw std::runtime_error("a greedy pick needs logits == 1 (the last position) and a result array");
  }
  // KV blocks for every item, all or none.
  for (int i = 0; i < n; ++i) {
    bool ok = false;
    try {
      ok = items[i].seq->kv_->reserve(items[i].seq->length_ + items[i].T);
    } catch (...) {
      for (int k = 0; k <= i; ++k) items[k].seq->kv_->shrink(items[k].seq->length_);
      throw;
    }
    if (!ok) {
      for (int k = 0; k < i; ++k) items[k].seq->kv_->shrink(items[k].seq->length_);
      throw KVFullError("KV cache full: the step needs more blocks than the " + std::to_string(kv_pool_->free_blocks()) +
                        " free of " + std::to_string(kv_pool_->max_blocks()));
    }
  }
  for (int i = 0; i < n; ++i) {
    Sequence& s = *items[i].seq;
    if (!s.alpha_set_) {
      // Dynamic NTK: alpha from the whole prompt of the sequence's first forward, frozen for its lifetime (§4.1).
      const int L = items[i].prompt_length > 0 ? items[i].prompt_length : items[i].T;
      s.alpha_ = cfg_.dynamic_ntk ? ntk_alpha(L, cfg_.seq_length) : 1.0;
      s.rope_ = rope_params(cfg_, s.alpha_);
      s.alpha_set_ = true;
    }
  }
  int total = 0;
  for (int i = 0; i < n; ++i) total += items[i].T;
  const int max_pass = backend_->max_step_tokens();
  const int cap = total < max_pass ? total : max_pass;
  ensure_workspace(cap);
  // Passes of up to max_step_tokens() rows, items packed in order (an item may continue into the next pass). The rows an
  // item wants come out in item order, so each pass writes the next contiguous run of `out`.
  std::vector<SeqSlice> slices;
  std::vector<Sequence*> seqs;
  std::vector<int32_t> ids(static_cast<size_t>(cap));
  std::vector<int> rows(static_cast<size_t>(cap)), prows;
  std::vector<PickSpec> specs;
  int item = 0, done = 0;  // next token: items[item].ids[done]
  size_t out_row = 0, pick_row = 0;
  while (item < n) {
    slices.clear();
    seqs.clear();
    prows.clear();
    specs.clear();
    int T = 0, R = 0;
    while (item < n && T < cap) {
      const StepItem& it = items[item];
      const int take = std::min(it.T - done, cap - T);
      SeqSlice sl;
      sl.row0 = T;
      sl.T = take;
      sl.pos0 = it.seq->length_;
      sl.rope = &it.seq->rope_;
      sl.kv = it.seq->kv_.get();
      slices.push_back(sl);
      seqs.push_back(it.seq);
      std::copy(it.ids + done, it.ids + done + take, ids.begin() + T);
      if (it.logits == 2)
        for (int t = 0; t < take; ++t) rows[size_t(R++)] = T + t;
      else if (it.logits == 1 && done + take == it.T && it.pick) {
        prows.push_back(T + take - 1);
        specs.push_back(*it.pick);
      } else if (it.logits == 1 && done + take == it.T)
        rows[size_t(R++)] = T + take - 1;
      T += take;
      done += take;
      if (done == it.T) { ++item; done = 0; }
    }
    forward_pass(slices.data(), int(slices.size()), ids.data(), T, rows.data(), R, out + out_row * size_t(cfg_.vocab),
                 prows.data(), int(prows.size()), specs.data(), picks ? picks + pick_row : nullptr);
    for (size_t k = 0; k < slices.size(); ++k) seqs[k]->length_ += slices[k].T;
    out_row += size_t(R);
    pick_row += prows.size();
  }
}

void Engine::forward_pass(const SeqSlice* s, int n, const int32_t* ids, int T, const int* rows, int R, float* out,
                          const int* prows, int P, const PickSpec* specs, PickResult* picks) {
  Backend& be = *backend_;
  const ModelConfig& c = cfg_;
  const int H = c.hidden;
  be.embedding(w_.wte, ids, T, h_);                                    // h[T,H]
  be.begin_step(s, n);
  // Each residual add is fused with the RMSNorm that reads its result (add_rmsnorm): ln_2 of the same layer, ln_1 of
  // the next; the first ln_1 and the last add stand alone. The MLP's w1 / w2 / SwiGLU is one op (mlp_swiglu).
  // Folded (Backend::folds_norm): the RMSNorms go into the ops that read h, the residual adds into those that write it.
  // The layer loop, h -> h. A backend may replay a recording of it for a step of the same shape (CUDA graphs).
  const bool fold = be.folds_norm(T);
  auto layers = [&] {
    if (!fold) be.rmsnorm(h_, w_.layers[0].ln_1, c.eps, T, H, x_);     // x = RMSNorm(h; ln_1 of layer 0)
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w_.layers[size_t(l)];
      if (fold)
        be.norm_linear(h_, L.ln_1, c.eps, L.c_attn_w, &L.c_attn_b, T, x_, qkv_);  // qkv = RMSNorm(h) Wqkv^T + b
      else
        be.linear(x_, L.c_attn_w, &L.c_attn_b, T, qkv_);                // qkv[T,3H] = x Wqkv^T + b
      be.rope_kv_store(qkv_, nullptr, s, n, c.n_heads, c.head_dim, l);  // RoPE q,k; q *= logn(pos); k, v -> cache
      be.attention(qkv_, s, n, c.n_heads, c.head_dim, l, att_);         // att[T,H]
      if (fold) {
        be.linear_add(att_, L.attn_c_proj, T, h_, proj_);                             // h += att Wo^T
        be.norm_mlp_swiglu(h_, L.ln_2, c.eps, L.w1, L.w2, T, x_, a_, g_);             // a = MLP in(RMSNorm(h))
        be.linear_add(a_, L.mlp_c_proj, T, h_, proj_);                                // h += a Wc^T
        continue;
      }
      be.linear(att_, L.attn_c_proj, nullptr, T, proj_);                // proj = att Wo^T
      be.add_rmsnorm(h_, proj_, L.ln_2, c.eps, T, H, x_);               // h += proj; x = RMSNorm(h; ln_2)
      be.mlp_swiglu(x_, L.w1, L.w2, T, a_, g_);                         // a[T,F] = w1(x) * silu(w2(x))
      be.linear(a_, L.mlp_c_proj, nullptr, T, proj_);                   // proj = a Wc^T
      if (l + 1 < c.n_layers)  // h += proj; x = RMSNorm(h; ln_1 of the next layer)
        be.add_rmsnorm(h_, proj_, w_.layers[size_t(l) + 1].ln_1, c.eps, T, H, x_);
      else
        be.add(h_, proj_, T, H);                                        // h += proj
    }
  };
  if (!be.begin_layers()) {
    try {
      layers();
    } catch (...) {
      be.abort_layers();
      throw;
    }
    if (!be.end_layers()) layers();  // the recording failed and nothing ran: run the ops now
  }
  if (R > 0) be.final_logits(h_, rows, R, H, w_.ln_f, w_.lm_head, c.eps, out);  // logits[R,V]
  if (P > 0) be.final_pick(h_, prows, P, H, w_.ln_f, w_.lm_head, c.eps, specs, picks);  // picks[P]: ids (+ logprobs)
  be.synchronize();
}

}  // namespace qwen
