// Test harness: every Backend op callable from JS on fp32 arrays, for any backend (test/ops.test.ts compares them
// with float64 loops). Synchronous on purpose — it is for tests and micro-benchmarks, not for serving.
#include <napi.h>

#include <chrono>
#include <memory>
#include <vector>

#include "addon/convert.h"
#include "addon/wraps.h"
#include "core/backend.h"
#include "core/engine.h"
#include "cpu/sample_fx.h"

namespace qwen {
namespace {

class NativeOps : public Napi::ObjectWrap<NativeOps> {
 public:
  static Napi::Function Class(Napi::Env env) {
    return DefineClass(env, "NativeOps",
                       {InstanceMethod("embedding", &NativeOps::Embedding), InstanceMethod("rmsnorm", &NativeOps::Rmsnorm),
                        InstanceMethod("linear", &NativeOps::Linear), InstanceMethod("rope", &NativeOps::Rope),
                        InstanceMethod("attention", &NativeOps::Attention), InstanceMethod("swiglu", &NativeOps::Swiglu),
                        InstanceMethod("add", &NativeOps::Add), InstanceMethod("finalLogits", &NativeOps::FinalLogits),
                        InstanceMethod("addRmsnorm", &NativeOps::AddRmsnorm),
                        InstanceMethod("mlpSwiglu", &NativeOps::MlpSwiglu),
                        InstanceMethod("normLinear", &NativeOps::NormLinear),
                        InstanceMethod("linearAdd", &NativeOps::LinearAdd),
                        InstanceMethod("normMlpSwiglu", &NativeOps::NormMlpSwiglu),
                        InstanceMethod("finalPick", &NativeOps::FinalPick),
                        InstanceMethod("pickLogits", &NativeOps::PickLogits),
                        InstanceMethod("timeLinear", &NativeOps::TimeLinear)});
  }
  explicit NativeOps(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeOps>(info) {
    try {
      be_ = make_backend(backend_from_js(info[0].As<Napi::Object>()));
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

 private:
  // A device buffer filled from a Float32Array, freed with the holder.
  struct DBuf {
    Backend* be;
    Buf p;
    size_t n;
    DBuf(Backend* b, size_t elems) : be(b), p(b->alloc(elems)), n(elems) {}
    DBuf(Backend* b, Napi::Float32Array a) : DBuf(b, a.ElementLength()) { be->to_device(p, a.Data(), n); }
    ~DBuf() { be->free(p); }
    Napi::Float32Array read(Napi::Env env) {
      Napi::Float32Array out = Napi::Float32Array::New(env, n);
      be->to_host(out.Data(), p, n);
      return out;
    }
  };
  // A weight from raw bytes (Uint8Array) + dtype code + shape, uploaded to the backend.
  struct DWeight {
    Backend* be;
    Weight w;
    DWeight(Backend* b, const Napi::Value& bytes, double code, int64_t rows, int64_t cols) : be(b) {
      Napi::Uint8Array u = bytes.As<Napi::Uint8Array>();
      Weight host;
      host.data = u.Data();
      host.dtype = dtype_of(bytes.Env(), code);
      host.rows = rows;
      host.cols = cols;
      if (size_t(rows * cols) * dtype_size(host.dtype) != u.ByteLength())
        throw Napi::RangeError::New(bytes.Env(), "weight bytes do not match rows x cols x dtype");
      w = be->upload(host);
    }
    ~DWeight() { be->release(w); }
  };
  template <class Fn>
  Napi::Value guard(Napi::Env env, Fn fn) {
    try {
      return fn();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }
  static int I(const Napi::CallbackInfo& info, int i) { return info[i].As<Napi::Number>().Int32Value(); }
  static double D(const Napi::CallbackInfo& info, int i) { return info[i].As<Napi::Number>().DoubleValue(); }
  static Napi::Float32Array FA(const Napi::CallbackInfo& info, int i) { return info[i].As<Napi::Float32Array>(); }

  // embedding(wteBytes, dtype, V, H, ids: Int32Array) -> [T,H]
  Napi::Value Embedding(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      DWeight wte(be_.get(), info[0], D(info, 1), I(info, 2), I(info, 3));
      Napi::Int32Array ids = info[4].As<Napi::Int32Array>();
      for (size_t i = 0; i < ids.ElementLength(); ++i)
        if (ids[i] < 0 || ids[i] >= I(info, 2)) throw Napi::RangeError::New(info.Env(), "id out of range");
      DBuf h(be_.get(), ids.ElementLength() * size_t(I(info, 3)));
      be_->embedding(wte.w, ids.Data(), int(ids.ElementLength()), h.p);
      return h.read(info.Env());
    });
  }
  // rmsnorm(x[T,H], T, H, gBytes, dtype, eps)
  Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), H = I(info, 2);
      DBuf x(be_.get(), FA(info, 0)), y(be_.get(), size_t(T) * H);
      DWeight g(be_.get(), info[3], D(info, 4), 1, H);
      be_->rmsnorm(x.p, g.w, float(D(info, 5)), T, H, y.p);
      return y.read(info.Env());
    });
  }
  // linear(x[T,K], T, wBytes, dtype, N, K, biasBytes|null, biasDtype)
  Napi::Value Linear(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), N = I(info, 4), K = I(info, 5);
      DBuf x(be_.get(), FA(info, 0)), y(be_.get(), size_t(T) * N);
      DWeight W(be_.get(), info[2], D(info, 3), N, K);
      std::unique_ptr<DWeight> b;
      if (info[6].IsTypedArray()) b = std::make_unique<DWeight>(be_.get(), info[6], D(info, 7), 1, N);
      be_->linear(x.p, W.w, b ? &b->w : nullptr, T, y.p);
      return y.read(info.Env());
    });
  }
  // timeLinear(same args as linear, reps) -> seconds per call (micro-benchmark)
  Napi::Value TimeLinear(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), N = I(info, 4), K = I(info, 5), reps = I(info, 8);
      DBuf x(be_.get(), FA(info, 0)), y(be_.get(), size_t(T) * N);
      DWeight W(be_.get(), info[2], D(info, 3), N, K);
      be_->linear(x.p, W.w, nullptr, T, y.p);
      be_->synchronize();
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) be_->linear(x.p, W.w, nullptr, T, y.p);
      be_->synchronize();
      std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
      return Napi::Number::New(info.Env(), dt.count() / reps);
    });
  }
  // Slices from [T, pos0] pairs: rows consecutive from 0.
  static std::vector<SeqSlice> slices_of(const Napi::Int32Array& tp) {
    std::vector<SeqSlice> s(tp.ElementLength() / 2);
    int row = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      s[i].row0 = row;
      s[i].T = tp[2 * i];
      s[i].pos0 = tp[2 * i + 1];
      row += s[i].T;
    }
    return s;
  }
  // rope(qkv[Ttot,3H], slices: Int32Array [T, pos0]*n, nHeads, headDim, rotDims, invFreq: Float32Array [n][rot/2],
  //      lognBase) -> qkv rotated, each slice with its own inv_freq (per-sequence NTK)
  Napi::Value Rope(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      DBuf qkv(be_.get(), FA(info, 0));
      std::vector<SeqSlice> sl = slices_of(info[1].As<Napi::Int32Array>());
      const int rot = I(info, 4), half = rot / 2;
      Napi::Float32Array f = FA(info, 5);
      std::vector<RopeParams> rp(sl.size());
      for (size_t i = 0; i < sl.size(); ++i) {
        rp[i].rot_dims = rot;
        rp[i].logn_base = I(info, 6);
        for (int k = 0; k < half && k < 128; ++k) rp[i].inv_freq[k] = f[i * half + k];
        sl[i].rope = &rp[i];
      }
      be_->begin_step(sl.data(), int(sl.size()));
      be_->rope(qkv.p, sl.data(), int(sl.size()), I(info, 2), I(info, 3));
      return qkv.read(info.Env());
    });
  }
  // attention(qkv[Ttot,3H], slices: Int32Array [T, P]*n, past: Float32Array [sum P][2H] (k | v per row, slice after
  //           slice), nHeads, headDim) -> [Ttot,H]. Each slice is a sequence whose positions P..P+T-1 are the rows of
  // qkv; the caches take their blocks one at a time in turn, so every block table is non-contiguous.
  Napi::Value Attention(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      std::vector<SeqSlice> sl = slices_of(info[1].As<Napi::Int32Array>());
      const int nh = I(info, 3), hd = I(info, 4), H = nh * hd, n = int(sl.size());
      ModelConfig c;
      c.n_layers = 2;  // layer 1 is used: a layer offset inside the blocks gets exercised
      c.hidden = H;
      c.n_heads = nh;
      c.head_dim = hd;
      int blocks = 0, Ttot = 0, Ptot = 0;
      for (auto& s : sl) {
        blocks += kv_blocks_for(s.pos0 + s.T);
        Ttot += s.T;
        Ptot += s.pos0;
      }
      auto pool = be_->new_kv_pool(c, blocks + 3);
      std::vector<std::unique_ptr<KVCache>> kv;
      for (int i = 0; i < n; ++i) kv.push_back(std::make_unique<KVCache>(pool));
      for (bool more = true; more;) {  // round robin, one block each
        more = false;
        for (int i = 0; i < n; ++i) {
          const int have = kv[size_t(i)]->capacity(), want = sl[size_t(i)].pos0 + sl[size_t(i)].T;
          if (have < want) {
            if (!kv[size_t(i)]->reserve(have + 1)) throw std::runtime_error("pool too small");
            more = true;
          }
        }
      }
      RopeParams rp;  // unused by kv_store / attention, but slices carry one
      for (int i = 0; i < n; ++i) {
        sl[size_t(i)].kv = kv[size_t(i)].get();
        sl[size_t(i)].rope = &rp;
      }
      if (Ptot > 0) {  // past keys/values through kv_store: one qkv-shaped buffer (q part unused), slices at pos 0
        Napi::Float32Array past = FA(info, 2);
        std::vector<float> fake(size_t(Ptot) * 3 * H, 0.0f);
        for (int p = 0; p < Ptot; ++p)
          for (int i = 0; i < 2 * H; ++i) fake[size_t(p) * 3 * H + H + i] = past[size_t(p) * 2 * H + i];
        std::vector<SeqSlice> ps;
        int row = 0;
        for (auto s : sl)
          if (s.pos0 > 0) {
            s.row0 = row;
            s.T = s.pos0;
            s.pos0 = 0;
            row += s.T;
            ps.push_back(s);
          }
        DBuf fb(be_.get(), fake.size());
        be_->to_device(fb.p, fake.data(), fake.size());
        be_->begin_step(ps.data(), int(ps.size()));
        be_->kv_store(fb.p, ps.data(), int(ps.size()), nh, hd, 1);
        be_->synchronize();
      }
      DBuf qkv(be_.get(), FA(info, 0)), out(be_.get(), size_t(Ttot) * H);
      be_->begin_step(sl.data(), n);
      be_->kv_store(qkv.p, sl.data(), n, nh, hd, 1);
      be_->attention(qkv.p, sl.data(), n, nh, hd, 1, out.p);
      return out.read(info.Env());
    });
  }
  // swiglu(a[T,F], g[T,F], T, F) -> a * silu(g)
  Napi::Value Swiglu(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 2), F = I(info, 3);
      DBuf a(be_.get(), FA(info, 0)), g(be_.get(), FA(info, 1)), out(be_.get(), size_t(T) * F);
      be_->swiglu(a.p, g.p, T, F, out.p);
      return out.read(info.Env());
    });
  }
  // add(h[T,H], x[T,H], T, H) -> h + x
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      DBuf h(be_.get(), FA(info, 0)), x(be_.get(), FA(info, 1));
      be_->add(h.p, x.p, I(info, 2), I(info, 3));
      return h.read(info.Env());
    });
  }
  // Test-binding argument checks: the backends trust their shapes, so the sizes JS passes must match them.
  static void need_len(const Napi::Float32Array& a, size_t want, const char* what) {
    if (a.ElementLength() != want)
      throw std::invalid_argument(std::string(what) + " has " + std::to_string(a.ElementLength()) + " elements, expected " +
                                  std::to_string(want));
  }
  static void need_rows(const Napi::Int32Array& rows, int T) {
    for (size_t r = 0; r < rows.ElementLength(); ++r)
      if (rows[r] < 0 || rows[r] >= T) throw std::invalid_argument("rows[" + std::to_string(r) + "] out of [0, T)");
  }
  // addRmsnorm(h[T,H], x[T,H], T, H, gBytes, gDtype, eps) -> { h: h + x, y: rmsnorm(h + x) * g }
  Napi::Value AddRmsnorm(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 2), H = I(info, 3);
      if (T < 1 || H < 1) throw std::invalid_argument("T and H must be >= 1");
      need_len(FA(info, 0), size_t(T) * H, "h");
      need_len(FA(info, 1), size_t(T) * H, "x");
      DBuf h(be_.get(), FA(info, 0)), x(be_.get(), FA(info, 1)), y(be_.get(), size_t(T) * H);
      DWeight g(be_.get(), info[4], D(info, 5), 1, H);
      be_->add_rmsnorm(h.p, x.p, g.w, float(D(info, 6)), T, H, y.p);
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("h", h.read(info.Env()));
      o.Set("y", y.read(info.Env()));
      return o;
    });
  }
  // mlpSwiglu(x[T,K], T, w1Bytes, w2Bytes, dtype, F, K) -> w1(x) * silu(w2(x)) [T,F]
  Napi::Value MlpSwiglu(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), F = I(info, 5), K = I(info, 6);
      if (T < 1 || F < 1 || K < 1) throw std::invalid_argument("T, F and K must be >= 1");
      need_len(FA(info, 0), size_t(T) * K, "x");
      DBuf x(be_.get(), FA(info, 0)), a(be_.get(), size_t(T) * F), g(be_.get(), size_t(T) * F);
      DWeight w1(be_.get(), info[2], D(info, 4), F, K), w2(be_.get(), info[3], D(info, 4), F, K);
      be_->mlp_swiglu(x.p, w1.w, w2.w, T, a.p, g.p);
      return a.read(info.Env());
    });
  }
  // normLinear(h[T,K], T, gBytes, gDtype, eps, wBytes, dtype, N, K, biasBytes|null, biasDtype) -> [T,N]
  Napi::Value NormLinear(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), N = I(info, 7), K = I(info, 8);
      if (T < 1 || N < 1 || K < 1) throw std::invalid_argument("T, N and K must be >= 1");
      need_len(FA(info, 0), size_t(T) * K, "h");
      DBuf h(be_.get(), FA(info, 0)), x(be_.get(), size_t(T) * K), y(be_.get(), size_t(T) * N);
      DWeight g(be_.get(), info[2], D(info, 3), 1, K), W(be_.get(), info[5], D(info, 6), N, K);
      std::unique_ptr<DWeight> b;
      if (info[9].IsTypedArray()) b = std::make_unique<DWeight>(be_.get(), info[9], D(info, 10), 1, N);
      be_->norm_linear(h.p, g.w, float(D(info, 4)), W.w, b ? &b->w : nullptr, T, x.p, y.p);
      return y.read(info.Env());
    });
  }
  // linearAdd(x[T,K], T, wBytes, dtype, N, K, h[T,N]) -> h + x W^T
  Napi::Value LinearAdd(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), N = I(info, 4), K = I(info, 5);
      if (T < 1 || N < 1 || K < 1) throw std::invalid_argument("T, N and K must be >= 1");
      need_len(FA(info, 0), size_t(T) * K, "x");
      need_len(FA(info, 6), size_t(T) * N, "h");
      DBuf x(be_.get(), FA(info, 0)), h(be_.get(), FA(info, 6)), y(be_.get(), size_t(T) * N);
      DWeight W(be_.get(), info[2], D(info, 3), N, K);
      be_->linear_add(x.p, W.w, T, h.p, y.p);
      return h.read(info.Env());
    });
  }
  // normMlpSwiglu(h[T,K], T, gBytes, gDtype, eps, w1Bytes, w2Bytes, dtype, F, K) -> [T,F]
  Napi::Value NormMlpSwiglu(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), F = I(info, 8), K = I(info, 9);
      if (T < 1 || F < 1 || K < 1) throw std::invalid_argument("T, F and K must be >= 1");
      need_len(FA(info, 0), size_t(T) * K, "h");
      DBuf h(be_.get(), FA(info, 0)), x(be_.get(), size_t(T) * K), a(be_.get(), size_t(T) * F),
          gs(be_.get(), size_t(T) * F);
      DWeight g(be_.get(), info[2], D(info, 3), 1, K);
      DWeight w1(be_.get(), info[5], D(info, 7), F, K), w2(be_.get(), info[6], D(info, 7), F, K);
      be_->norm_mlp_swiglu(h.p, g.w, float(D(info, 4)), w1.w, w2.w, T, x.p, a.p, gs.p);
      return a.read(info.Env());
    });
  }
  // finalLogits(h[T,H], T, H, rows: Int32Array, lnfBytes, lnfDtype, headBytes, headDtype, V, eps) -> [R,V]
  Napi::Value FinalLogits(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), H = I(info, 2), V = I(info, 8);
      Napi::Int32Array rows = info[3].As<Napi::Int32Array>();
      need_len(FA(info, 0), size_t(T) * H, "h");
      need_rows(rows, T);
      DBuf h(be_.get(), FA(info, 0));
      DWeight lnf(be_.get(), info[4], D(info, 5), 1, H), head(be_.get(), info[6], D(info, 7), V, H);
      Napi::Float32Array out = Napi::Float32Array::New(info.Env(), rows.ElementLength() * size_t(V));
      be_->final_logits(h.p, rows.Data(), int(rows.ElementLength()), H, lnf.w, head.w, float(D(info, 9)), out.Data());
      return out;
    });
  }

  // Pick requests (an array of the step items' `pick` objects) -> holders, one per row.
  static std::vector<std::unique_ptr<PickHold>> picks_of(const Napi::Value& v, size_t R, int V) {
    if (!v.IsArray() || v.As<Napi::Array>().Length() != R)
      throw Napi::TypeError::New(v.Env(), "picks must be an array with one request per row");
    Napi::Array a = v.As<Napi::Array>();
    std::vector<std::unique_ptr<PickHold>> h;
    for (uint32_t r = 0; r < R; ++r) {
      if (!a.Get(r).IsObject()) throw Napi::TypeError::New(v.Env(), "picks[" + std::to_string(r) + "] must be an object");
      h.push_back(pick_from_js(a.Get(r).As<Napi::Object>(), V));
    }
    return h;
  }
  static Napi::Array picks_to_js(Napi::Env env, const std::vector<PickResult>& res,
                                 const std::vector<std::unique_ptr<PickHold>>& h) {
    Napi::Array out = Napi::Array::New(env, res.size());
    for (size_t r = 0; r < res.size(); ++r) out.Set(uint32_t(r), pick_to_js(env, res[r], h[r]->spec));
    return out;
  }
  // finalPick(h[T,H], T, H, rows: Int32Array, lnfBytes, lnfDtype, headBytes, headDtype, V, eps, picks[R])
  //   -> [{ id, logprob?, top? }] per row: final_logits' rows, penalized and picked inside the backend
  Napi::Value FinalPick(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), H = I(info, 2), V = I(info, 8);
      Napi::Int32Array rows = info[3].As<Napi::Int32Array>();
      need_len(FA(info, 0), size_t(T) * H, "h");
      need_rows(rows, T);
      const size_t R = rows.ElementLength();
      auto holds = picks_of(info[10], R, V);
      std::vector<PickSpec> specs;
      for (auto& p : holds) specs.push_back(p->spec);
      DBuf h(be_.get(), FA(info, 0));
      DWeight lnf(be_.get(), info[4], D(info, 5), 1, H), head(be_.get(), info[6], D(info, 7), V, H);
      std::vector<PickResult> res(R);
      be_->final_pick(h.p, rows.Data(), int(R), H, lnf.w, head.w, float(D(info, 9)), specs.data(), res.data());
      return picks_to_js(info.Env(), res, holds);
    });
  }
  // pickLogits(logits[R,V], R, V, picks[R]) -> [{ id, logprob?, top? }] per row: the backend's pick on given logits
  Napi::Value PickLogits(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const int R = I(info, 1), V = I(info, 2);
      Napi::Float32Array logits = FA(info, 0);
      if (R < 0 || V < 1 || logits.ElementLength() != size_t(R) * size_t(V))
        throw Napi::RangeError::New(info.Env(), "pickLogits: logits must hold R x V values");
      auto holds = picks_of(info[3], size_t(R), V);
      std::vector<PickSpec> specs;
      for (auto& p : holds) specs.push_back(p->spec);
      std::vector<PickResult> res(static_cast<size_t>(R));
      be_->pick_logits(logits.Data(), R, V, specs.data(), res.data());
      return picks_to_js(info.Env(), res, holds);
    });
  }

  std::unique_ptr<Backend> be_;
};

}  // namespace

Napi::Object InitOps(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeOps", NativeOps::Class(env));
  exports.Set("ntkAlpha", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), Engine::ntk_alpha(info[0].As<Napi::Number>().Int32Value(),
                                                                        info[1].As<Napi::Number>().Int32Value()));
              }));
  exports.Set("maxPositions", Napi::Number::New(env, kMaxPositions));
  // sampleFx(logits: Float32Array (penalized), pick with doSample) -> { id, logprob?, top?, route, z, total, gap,
  // band }: the host reference of the fixed-point sampled pick (cpp/cpu/sample_fx.h) that the CUDA device draw must
  // equal; z / total / gap / band in units of 2^-43 (test/sample-fx.test.ts).
  exports.Set("sampleFx", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                Napi::Env e = info.Env();
                if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsObject())
                  throw Napi::TypeError::New(e, "sampleFx(logits: Float32Array, pick)");
                Napi::Float32Array L = info[0].As<Napi::Float32Array>();
                const int V = int(L.ElementLength());
                if (V < 1) throw Napi::RangeError::New(e, "sampleFx: logits must not be empty");
                auto hold = pick_from_js(info[1].As<Napi::Object>(), V);
                const PickSpec& s = hold->spec;
                if (!s.do_sample) throw Napi::RangeError::New(e, "sampleFx: pick.doSample must be true");
                if (pick_repetition_on(s) || pick_openai_on(s))
                  throw Napi::RangeError::New(e, "sampleFx: takes penalized logits (no penalties in the pick)");
                const int n = pick_limit(s, V);
                std::vector<float> W(static_cast<size_t>(n));
                const FxRowIn in = fx_row_in(L.Data(), n, s);
                FxOut o;
                sample_fx_row(L.Data(), W.data(), in, o);
                PickResult r;
                fx_result(o, s.top_n, r);
                Napi::Object out = pick_to_js(e, r, s);
                out.Set("route", o.route);
                out.Set("z", fx_dbl(o.z));
                out.Set("total", fx_dbl(o.total));
                out.Set("gap", o.gap);
                out.Set("band", fx_band(n, fx_dbl(o.total)));
                return out;
              }));
  return exports;
}

}  // namespace qwen
