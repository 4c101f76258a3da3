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
  held = HeldPenalties{};
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
// them when it ends. Resolves to { logits, ids, logprobs, nTop, topIds, topLogprobs } (NativeStepResult in
// lib/native/types.ts): the logits rows of the items without a pick, then per pick (item order) its id (-1: the row
// had no usable logit), its logprob and its top list ([picks][kMaxPickTop]). Flat arrays: one object per pick made
// here costs a step of 64 sequences ~0.1 ms of the main thread; lib/native/stepPack.ts makes them in JS instead.
class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Engine> e, std::vector<std::shared_ptr<Sequence>> seqs,
             std::vector<int32_t> ids, std::vector<StepItem> items, std::vector<std::unique_ptr<PickHold>> picks)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), engine_(std::move(e)),
        seqs_(std::move(seqs)), ids_(std::move(ids)), items_(std::move(items)), holds_(std::move(picks)) {
    size_t rows = 0, npick = 0, at = 0;
    for (size_t i = 0; i < items_.size(); ++i) {
      items_[i].seq = seqs_[i].get();
      items_[i].ids = ids_.data() + at;
      at += size_t(items_[i].T);
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
    const size_t P = picks_.size();
    Napi::Int32Array id = Napi::Int32Array::New(env, P), n_top = Napi::Int32Array::New(env, P);
    Napi::Float64Array lp = Napi::Float64Array::New(env, P);
    Napi::Int32Array top_id = Napi::Int32Array::New(env, P * kMaxPickTop);
    Napi::Float64Array top_lp = Napi::Float64Array::New(env, P * kMaxPickTop);
    for (size_t k = 0; k < P; ++k) {
      const PickResult& r = picks_[k];
      id[k] = r.id;
      lp[k] = r.logprob;
      const int nt = std::min(std::max(r.n_top, 0), kMaxPickTop);  // the backends keep it in range; the arrays rely on it
      n_top[k] = nt;
      for (int t = 0; t < nt; ++t) {
        top_id[k * kMaxPickTop + t] = r.top_ids[t];
        top_lp[k * kMaxPickTop + t] = r.top_logprobs[t];
      }
    }
    Napi::Object res = Napi::Object::New(env);
    res.Set("logits", out_.Value());
    res.Set("ids", id);
    res.Set("logprobs", lp);
    res.Set("nTop", n_top);
    res.Set("topIds", top_id);
    res.Set("topLogprobs", top_lp);
    deferred_.Resolve(res);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> engine_;
  std::vector<std::shared_ptr<Sequence>> seqs_;
  std::vector<int32_t> ids_;  // every item's ids, concatenated
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

template <typename T>
std::vector<T> copy_of(const Napi::TypedArrayOf<T>& a) {
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

// step({ seqs, items, ids, picks, penaltyIds, penaltyCounts }) -> Promise<NativeStepResult>: one batched step in the
// packed form of lib/native/stepPack.ts (lib/native/types.ts NativeStepBatch): items [n][kItemFields] = T, logits
// (0 | 1 | 2), promptLength, penalty ids of the item's pick (-1: no pick); ids: the items' ids concatenated; picks
// [picks][kPickFields] (convert.h PickField); penaltyIds / penaltyCounts: the picks' entries concatenated (a list, or
// what is added to the sequence's kept list: convert.h PickListMode). Typed arrays
// instead of an object per item: reading ~15 named properties of each of 64 items through N-API took ~0.4 ms of the
// main thread per step. Every length and range is checked here before anything is read.
Napi::Value NativeModel::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine) throw Napi::Error::New(env, "model is not loaded or was disposed");
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "step(batch)");
  Napi::Object b = info[0].As<Napi::Object>();
  auto typed = [&](const char* key, napi_typedarray_type type, const char* what) {
    Napi::Value v = need(b, key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
      throw Napi::TypeError::New(env, std::string("step: batch.") + key + " must be " + what);
    return v.As<Napi::TypedArray>();
  };
  Napi::Value sv = need(b, "seqs");
  if (!sv.IsArray()) throw Napi::TypeError::New(env, "step: batch.seqs must be an array");
  Napi::Array seq_arr = sv.As<Napi::Array>();
  Napi::Int32Array items = typed("items", napi_int32_array, "an Int32Array").As<Napi::Int32Array>();
  Napi::Int32Array ids = typed("ids", napi_int32_array, "an Int32Array").As<Napi::Int32Array>();
  Napi::Float64Array pk = typed("picks", napi_float64_array, "a Float64Array").As<Napi::Float64Array>();
  Napi::Int32Array pen_ids = typed("penaltyIds", napi_int32_array, "an Int32Array").As<Napi::Int32Array>();
  Napi::Int32Array pen_counts = typed("penaltyCounts", napi_int32_array, "an Int32Array").As<Napi::Int32Array>();
  constexpr size_t kItemFields = 4;
  // The sequences first: Get and InstanceOf may run JS (getters), which could resize or detach the arrays' buffers.
  // After this loop no JS runs. Every array is copied before it is read: here, or into each pick's PickHold for the
  // penalty entries (the list itself, or what a kListAdd pick adds to its sequence's kept list).
  const size_t n = seq_arr.Length();
  std::vector<std::shared_ptr<Sequence>> seqs(n);
  std::vector<NativeSequence*> wraps(n);
  for (size_t i = 0; i < n; ++i) {
    Napi::Value v = seq_arr.Get(uint32_t(i));
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeSequence::ctor.Value()))
      throw Napi::TypeError::New(env, "step: batch.seqs must hold NativeSequences");
    NativeSequence* s = NativeSequence::Unwrap(v.As<Napi::Object>());
    if (!s->seq) throw Napi::Error::New(env, "step: sequence was disposed");
    seqs[i] = s->seq;
    wraps[i] = s;
  }
  const std::vector<int32_t> head = copy_of(items);
  const std::vector<double> pick_rows = copy_of(pk);
  std::vector<int32_t> all_ids = copy_of(ids);
  if (n == 0 || head.size() != n * kItemFields)
    throw Napi::RangeError::New(env, "step: batch.items must hold 4 values per sequence of batch.seqs (at least one)");
  if (pen_ids.ElementLength() != pen_counts.ElementLength())
    throw Napi::RangeError::New(env, "step: batch.penaltyIds and batch.penaltyCounts differ in length");
  // The lengths first, so that nothing below reads past an array.
  size_t n_ids = 0, n_picks = 0, n_pen = 0;
  for (size_t i = 0; i < n; ++i) {
    const int32_t* f = head.data() + i * kItemFields;
    if (f[0] < 1 || f[1] < 0 || f[1] > 2 || f[2] < 0 || f[3] < -1)
      throw Napi::RangeError::New(env, "step: an item needs >= 1 id, logits 0..2, promptLength >= 0, penalty ids >= -1");
    if (f[3] >= 0 && f[1] != 1) throw Napi::RangeError::New(env, "step: an item with a pick needs logits 1");
    n_ids += size_t(f[0]);
    if (f[3] >= 0) {
      ++n_picks;
      n_pen += size_t(f[3]);
    }
  }
  if (n_ids != all_ids.size()) throw Napi::RangeError::New(env, "step: batch.ids must hold the items' ids (sum of T)");
  if (n_picks * kPickFields != pick_rows.size())
    throw Napi::RangeError::New(env, "step: batch.picks must hold " + std::to_string(int(kPickFields)) + " values per item with a pick");
  if (n_pen != pen_ids.ElementLength())
    throw Napi::RangeError::New(env, "step: batch.penaltyIds must hold the picks' penalty ids (sum of their counts)");

  const int V = engine->config().vocab;
  std::vector<StepItem> list(n);
  std::vector<std::unique_ptr<PickHold>> holds(n);
  std::vector<int> modes(n, kListGiven);
  std::unique_ptr<PickIdSet> seen;
  size_t pick = 0, pen = 0;
  // Everything is checked before any sequence's kept list changes (below): a throw leaves every list as it was.
  for (size_t i = 0; i < n; ++i) {
    const int32_t* f = head.data() + i * kItemFields;
    list[i].T = f[0];
    list[i].logits = f[1];
    list[i].prompt_length = f[2];
    if (f[3] >= 0) {
      const double* row = pick_rows.data() + pick * kPickFields;
      const double mode = row[kPfListMode];
      if (mode != kListGiven && mode != kListAdd && mode != kListHold)
        throw Napi::RangeError::New(env, "step: a pick's list mode must be 0, 1 or 2");
      modes[i] = int(mode);
      if (modes[i] == kListAdd) {
        // The entries are added to the kept list: each id in [0, V) (repeats allowed), each count >= 0.
        if (!wraps[i]->held.valid) throw Napi::RangeError::New(env, "step: a pick adds to a penalty list its sequence does not keep");
        holds[i] = std::make_unique<PickHold>();
        pick_fields(env, row, V, holds[i]->spec);
        // the entries, copied (what is checked is what is used), until they are added below
        holds[i]->ids.assign(pen_ids.Data() + pen, pen_ids.Data() + pen + f[3]);
        holds[i]->counts.assign(pen_counts.Data() + pen, pen_counts.Data() + pen + f[3]);
        for (size_t k = 0; k < size_t(f[3]); ++k) {
          if (holds[i]->ids[k] < 0 || holds[i]->ids[k] >= V) throw Napi::RangeError::New(env, "pick.ids must be in [0, vocab)");
          if (holds[i]->counts[k] < 0) throw Napi::RangeError::New(env, "pick.counts must be >= 0");
        }
      } else {
        if (!seen) seen = std::make_unique<PickIdSet>(V);
        holds[i] = make_pick(env, row, pen_ids.Data() + pen, pen_counts.Data() + pen, size_t(f[3]), V, *seen);
      }
      ++pick;
      pen += size_t(f[3]);
    }
  }
  // Commit: the kept lists change. Only an allocation failure can throw here; it leaves that list invalid (a later
  // kListAdd on it is refused), never inconsistent.
  for (size_t i = 0; i < n; ++i) {
    if (!holds[i] || modes[i] == kListGiven) continue;
    HeldPenalties& held = wraps[i]->held;
    if (modes[i] == kListHold) {
      held.assign(std::move(holds[i]->ids), std::move(holds[i]->counts));
    } else {
      held.add(holds[i]->ids, holds[i]->counts);
    }
    held.lend(*holds[i]);  // the step reads the list as it is now, whatever later steps add (copy-on-write)
  }
  auto* w = new StepWorker(env, engine, std::move(seqs), std::move(all_ids), std::move(list), std::move(holds));
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
