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
  // rope(qkv[T,3H], T, pos0, nHeads, headDim, rotDims, invFreq: Float32Array, lognBase)
  Napi::Value Rope(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      DBuf qkv(be_.get(), FA(info, 0));
      RopeParams rp;
      rp.rot_dims = I(info, 5);
      Napi::Float32Array f = FA(info, 6);
      for (size_t i = 0; i < f.ElementLength() && i < 128; ++i) rp.inv_freq[i] = f[i];
      rp.logn_base = I(info, 7);
      be_->rope(qkv.p, I(info, 1), I(info, 2), I(info, 3), I(info, 4), rp);
      return qkv.read(info.Env());
    });
  }
  // attention(qkv[T,3H], T, pastKV[P,2H] (k | v per row), P, nHeads, headDim) -> [T,H]; positions of qkv = P..P+T-1
  Napi::Value Attention(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int T = I(info, 1), P = I(info, 3), nh = I(info, 4), hd = I(info, 5), H = nh * hd;
      ModelConfig c;
      c.n_layers = 1;
      c.hidden = H;
      c.n_heads = nh;
      c.head_dim = hd;
      auto kv = be_->new_kv_cache(c);
      kv->reserve(P + T);
      if (P > 0) {  // write the past keys/values through kv_store with a qkv-shaped buffer (q part unused)
        Napi::Float32Array past = FA(info, 2);
        std::vector<float> fake(size_t(P) * 3 * H, 0.0f);
        for (int p = 0; p < P; ++p)
          for (int i = 0; i < 2 * H; ++i) fake[size_t(p) * 3 * H + H + i] = past[size_t(p) * 2 * H + i];
        DBuf fb(be_.get(), fake.size());
        be_->to_device(fb.p, fake.data(), fake.size());
        be_->kv_store(fb.p, P, 0, nh, hd, *kv, 0);
      }
      DBuf qkv(be_.get(), FA(info, 0)), out(be_.get(), size_t(T) * H);
      be_->kv_store(qkv.p, T, P, nh, hd, *kv, 0);
      be_->attention(qkv.p, T, P, nh, hd, *kv, 0, out.p);
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
  // finalLogits(h[T,H], T, H, rows: Int32Array, lnfBytes, lnfDtype, headBytes, headDtype, V, eps) -> [R,V]
  Napi::Value FinalLogits(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      int H = I(info, 2), V = I(info, 8);
      Napi::Int32Array rows = info[3].As<Napi::Int32Array>();
      DBuf h(be_.get(), FA(info, 0));
      DWeight lnf(be_.get(), info[4], D(info, 5), 1, H), head(be_.get(), info[6], D(info, 7), V, H);
      Napi::Float32Array out = Napi::Float32Array::New(info.Env(), rows.ElementLength() * size_t(V));
      be_->final_logits(h.p, rows.Data(), int(rows.ElementLength()), H, lnf.w, head.w, float(D(info, 9)), out.Data());
      return out;
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
  return exports;
}

}  // namespace qwen
