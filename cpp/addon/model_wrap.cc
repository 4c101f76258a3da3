// NativeModel / NativeSequence: the JS objects over Engine and Sequence. Loading and every forward run in
// AsyncWorkers (off the main thread) and resolve Promises; the workers hold shared_ptrs, so dispose() from JS
// while a step is in flight frees the memory as soon as that step ends.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/convert.h"
#include "addon/wraps.h"
#include "core/engine.h"

namespace qwen {

Napi::FunctionReference NativeSequence::ctor;

Napi::Object NativeSequence::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "NativeSequence",
                                 {InstanceMethod("dispose", &NativeSequence::Dispose),
                                  InstanceMethod("releaseKv", &NativeSequence::ReleaseKv),
                                  InstanceAccessor("kvBlocks", &NativeSequence::KvBlocks, nullptr),
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
Napi::Value NativeSequence::ReleaseKv(const Napi::CallbackInfo& info) {
  if (seq) seq->release_kv();
  return info.Env().Undefined();
}
Napi::Value NativeSequence::KvBlocks(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), seq ? seq->kv_blocks() : 0);
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

// One batched step. Holds shared_ptrs to the engine and every sequence, so a dispose() from JS during the step frees
// them when it ends. Resolves to { logits: Float32Array of the logits rows, picks: [{ id, logprob?, top? }] } (picks
// in item order, one per item with a pick; id -1: the row had no usable logit).
class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Engine> e, std::vector<std::shared_ptr<Sequence>> seqs,
             std::vector<std::vector<int32_t>> ids, std::vector<StepItem> items,
             std::vector<std::unique_ptr<PickHold>> picks)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), engine_(std::move(e)),
        seqs_(std::move(seqs)), ids_(std::move(ids)), items_(std::move(items)), holds_(std::move(picks)) {
    size_t rows = 0, npick = 0;
    for (size_t i = 0; i < items_.size(); ++i) {
      items_[i].seq = seqs_[i].get();
      items_[i].ids = ids_[i].data();
      items_[i].pick = holds_[i] ? &holds_[i]->spec : nullptr;
      rows += size_t(Engine::logit_rows(items_[i]));
      npick += size_t(Engine::pick_rows(items_[i]));
    }
    Napi::Float32Array out = Napi::Float32Array::New(env, rows * size_t(engine_->config().vocab));  // filled by Execute
    data_ = out.Data();
    out_ = Napi::Persistent(out);
    picks_.resize(npick);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      engine_->step(items_.data(), int(items_.size()), data_, picks_.data());
    } catch (const KVFullError& e) {
      SetError(std::string("E_KV_FULL: ") + e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object res = Napi::Object::New(env);
    res.Set("logits", out_.Value());
    Napi::Array picks = Napi::Array::New(env, picks_.size());
    size_t k = 0;
    for (size_t i = 0; i < items_.size(); ++i) {
      if (!Engine::pick_rows(items_[i])) continue;
      picks.Set(uint32_t(k), pick_to_js(env, picks_[k], *items_[i].pick));
      ++k;
    }
    res.Set("picks", picks);
    deferred_.Resolve(res);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> engine_;
  std::vector<std::shared_ptr<Sequence>> seqs_;
  std::vector<std::vector<int32_t>> ids_;
  std::vector<StepItem> items_;
  std::vector<std::unique_ptr<PickHold>> holds_;  // [items]: null where the item has no pick
  std::vector<PickResult> picks_;
  Napi::Reference<Napi::Float32Array> out_;
  float* data_ = nullptr;
};

LoadRequest request_from_js(const Napi::Object& d) {
  Napi::Env env = d.Env();
  LoadRequest r;
  r.cfg = config_from_js(need(d, "config").As<Napi::Object>());
  r.backend = backend_from_js(need(d, "backend").As<Napi::Object>());
  r.kv_blocks = int(num(d, "kvBlocks"));
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
                                  InstanceMethod("step", &NativeModel::Step),
                                  InstanceMethod("kvStats", &NativeModel::KvStats),
                                  InstanceMethod("switches", &NativeModel::Switches),
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

// step([{ seq, ids: Int32Array, logits: 0 | 1 | 2, promptLength, pick? }]) -> Promise<{ logits, picks }>: the logits
// rows asked for (items without a pick) and the greedy picks (items with one; they need logits 1).
Napi::Value NativeModel::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "step(items)");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::shared_ptr<Sequence>> seqs;
  std::vector<std::vector<int32_t>> ids;
  std::vector<StepItem> items;
  std::vector<std::unique_ptr<PickHold>> picks;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "step: items must be objects");
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value sv = o.Get("seq");
    if (!sv.IsObject() || !sv.As<Napi::Object>().InstanceOf(NativeSequence::ctor.Value()))
      throw Napi::TypeError::New(env, "step: item.seq must be a NativeSequence");
    NativeSequence* s = NativeSequence::Unwrap(sv.As<Napi::Object>());
    if (!s->seq) throw Napi::Error::New(env, "step: sequence was disposed");
    Napi::Value iv = o.Get("ids");
    if (!iv.IsTypedArray() || iv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, "step: item.ids must be an Int32Array");
    Napi::Int32Array a = iv.As<Napi::Int32Array>();
    StepItem it;
    it.T = int(a.ElementLength());
    it.logits = int(num(o, "logits"));
    it.prompt_length = int(num(o, "promptLength"));
    if (it.T < 1 || it.logits < 0 || it.logits > 2 || it.prompt_length < 0)
      throw Napi::RangeError::New(env, "step: an item needs >= 1 id, logits 0..2 and promptLength >= 0");
    Napi::Value pv = o.Get("pick");
    if (!pv.IsUndefined() && !pv.IsNull()) {
      if (!pv.IsObject()) throw Napi::TypeError::New(env, "step: item.pick must be an object");
      if (it.logits != 1) throw Napi::RangeError::New(env, "step: an item with a pick needs logits 1");
      picks.push_back(pick_from_js(pv.As<Napi::Object>(), engine->config().vocab));
    } else {
      picks.push_back(nullptr);
    }
    seqs.push_back(s->seq);
    ids.emplace_back(a.Data(), a.Data() + a.ElementLength());
    items.push_back(it);
  }
  auto* w = new StepWorker(env, engine, std::move(seqs), std::move(ids), std::move(items), std::move(picks));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// { blockTokens, maxBlocks, usedBlocks }: read from the JS thread while a step may run (the counters are atomic).
Napi::Value NativeModel::KvStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  Napi::Object o = Napi::Object::New(env);
  o.Set("blockTokens", kKvBlockTokens);
  o.Set("maxBlocks", engine->kv_pool().max_blocks());
  o.Set("usedBlocks", engine->kv_pool().used());
  o.Set("madeBlocks", engine->kv_pool().made());
  o.Set("storageBytes", double(engine->kv_pool().storage_bytes()));
  return o;
}

// { NAME: boolean }: the switches the backend runs with (fixed when it was made).
Napi::Value NativeModel::Switches(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [name, on] : engine->backend().switches()) o.Set(name, on);
  return o;
}

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  cancel->store(true);
  engine.reset();
  return info.Env().Undefined();
}

}  // namespace qwen
