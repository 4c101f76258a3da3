// NativeModel / NativeSequence: the JS objects over Engine and Sequence. Loading and every forward run in
// AsyncWorkers (off the main thread) and resolve Promises; the workers hold shared_ptrs, so dispose() from JS
// while a step is in flight frees the memory as soon as that step ends.
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>

#include "addon/convert.h"
#include "addon/wraps.h"
#include "core/engine.h"

namespace qwen {

Napi::FunctionReference NativeSequence::ctor;

Napi::Object NativeSequence::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "NativeSequence",
                                 {InstanceMethod("dispose", &NativeSequence::Dispose),
                                  InstanceAccessor("length", &NativeSequence::Length, nullptr),
                                  InstanceAccessor("ntkAlpha", &NativeSequence::Alpha, nullptr)});
  ctor = Napi::Persistent(f);
  exports.Set("NativeSequence", f);
  return exports;
}

NativeSequence::NativeSequence(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSequence>(info) {}

Napi::Value NativeSequence::Dispose(const Napi::CallbackInfo& info) {
  seq.reset();
  return info.Env().Undefined();
}
Napi::Value NativeSequence::Length(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), seq ? seq->length() : 0);
}
Napi::Value NativeSequence::Alpha(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), seq ? seq->ntk_alpha() : 1.0);
}

namespace {

class LoadWorker : public Napi::AsyncProgressQueueWorker<double> {
 public:
  LoadWorker(Napi::Env env, NativeModel* owner, Napi::Object self, LoadRequest req, Napi::Function progress)
      : Napi::AsyncProgressQueueWorker<double>(env), owner_(owner), deferred_(Napi::Promise::Deferred::New(env)),
        req_(std::move(req)), cancel_(owner->cancel) {
    self_ = Napi::Persistent(self);
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& p) override {
    try {
      double last = -1;
      engine_ = Engine::load(req_, [&](double f) {
        if (f - last >= 0.01 || f >= 1.0) { last = f; p.Send(&f, 1); }
      }, *cancel_);
    } catch (const std::exception& e) {
      engine_.reset();  // releases the mappings at once (aborted or failed)
      SetError(e.what());
    }
  }
  void OnProgress(const double* data, size_t n) override {
    if (n && !progress_.IsEmpty()) progress_.Call({Napi::Number::New(Env(), data[n - 1])});
  }
  void OnOK() override {
    owner_->engine = std::move(engine_);
    owner_->loading = false;
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    owner_->loading = false;
    deferred_.Reject(e.Value());
  }

 private:
  NativeModel* owner_;
  Napi::ObjectReference self_;  // keeps the wrapper (owner_) alive while loading
  Napi::FunctionReference progress_;
  Napi::Promise::Deferred deferred_;
  LoadRequest req_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::shared_ptr<Engine> engine_;
};

class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<Engine> e, std::shared_ptr<Sequence> s, std::vector<int32_t> ids,
                bool all)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), engine_(std::move(e)),
        seq_(std::move(s)), ids_(std::move(ids)), all_(all) {
    const size_t n = (all_ ? ids_.size() : 1) * size_t(engine_->config().vocab);
    Napi::Float32Array out = Napi::Float32Array::New(env, n);  // written in place by Execute
    data_ = out.Data();
    out_ = Napi::Persistent(out);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      engine_->forward(*seq_, ids_.data(), int(ids_.size()), all_, data_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(out_.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> engine_;
  std::shared_ptr<Sequence> seq_;
  std::vector<int32_t> ids_;
  bool all_;
  Napi::Reference<Napi::Float32Array> out_;
  float* data_ = nullptr;
};

LoadRequest request_from_js(const Napi::Object& d) {
  Napi::Env env = d.Env();
  LoadRequest r;
  r.cfg = config_from_js(need(d, "config").As<Napi::Object>());
  r.backend = backend_from_js(need(d, "backend").As<Napi::Object>());
  Napi::Array files = need(d, "files").As<Napi::Array>();
  for (uint32_t i = 0; i < files.Length(); ++i) r.files.push_back(files.Get(i).As<Napi::String>().Utf8Value());
  Napi::Array ts = need(d, "tensors").As<Napi::Array>();
  for (uint32_t i = 0; i < ts.Length(); ++i) {
    Napi::Object t = ts.Get(i).As<Napi::Object>();
    TensorDesc td;
    td.name = str(t, "name");
    td.file = int(num(t, "file"));
    td.offset = uint64_t(num(t, "offset"));
    td.nbytes = uint64_t(num(t, "nbytes"));
    td.dtype = dtype_of(env, num(t, "dtype"));
    Napi::Array shape = need(t, "shape").As<Napi::Array>();
    for (uint32_t k = 0; k < shape.Length(); ++k) td.shape.push_back(int64_t(shape.Get(k).As<Napi::Number>().Int64Value()));
    r.tensors.push_back(std::move(td));
  }
  return r;
}

}  // namespace

Napi::Object NativeModel::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "NativeModel",
                                 {InstanceMethod("load", &NativeModel::Load),
                                  InstanceMethod("cancelLoad", &NativeModel::CancelLoad),
                                  InstanceMethod("createSequence", &NativeModel::CreateSequence),
                                  InstanceMethod("forward", &NativeModel::Forward),
                                  InstanceMethod("dispose", &NativeModel::Dispose)});
  exports.Set("NativeModel", f);
  return exports;
}

NativeModel::NativeModel(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<NativeModel>(info), cancel(std::make_shared<std::atomic<bool>>(false)) {}

Napi::Value NativeModel::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (engine || loading) throw Napi::Error::New(env, "this NativeModel is already loaded or loading");
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "load(desc, onProgress?)");
  LoadRequest req = request_from_js(info[0].As<Napi::Object>());
  Napi::Function progress = info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
  loading = true;
  cancel->store(false);
  auto* w = new LoadWorker(env, this, info.This().As<Napi::Object>(), std::move(req), progress);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NativeModel::CancelLoad(const Napi::CallbackInfo& info) {
  cancel->store(true);
  return info.Env().Undefined();
}

Napi::Value NativeModel::CreateSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  const int prompt_length = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  Napi::Object obj = NativeSequence::ctor.New({});
  NativeSequence::Unwrap(obj)->seq = std::shared_ptr<Sequence>(engine->new_sequence(prompt_length));
  return obj;
}

Napi::Value NativeModel::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  if (!info[0].IsObject() || !info[1].IsTypedArray() || !info[2].IsBoolean())
    throw Napi::TypeError::New(env, "forward(sequence, Int32Array ids, allLogits)");
  NativeSequence* s = NativeSequence::Unwrap(info[0].As<Napi::Object>());
  if (!s->seq) throw Napi::Error::New(env, "sequence was disposed");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_int32_array) throw Napi::TypeError::New(env, "ids must be an Int32Array");
  Napi::Int32Array ids = ta.As<Napi::Int32Array>();
  std::vector<int32_t> v(ids.Data(), ids.Data() + ids.ElementLength());
  auto* w = new ForwardWorker(env, engine, s->seq, std::move(v), info[2].As<Napi::Boolean>().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  cancel->store(true);
  engine.reset();
  return info.Env().Undefined();
}

}  // namespace qwen
