// The JS classes of the addon (declarations shared by model_wrap.cc and addon.cc).
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

#include "addon/convert.h"
#include "core/engine.h"

namespace qwen {

class NativeSequence : public Napi::ObjectWrap<NativeSequence> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  static Napi::FunctionReference ctor;
  explicit NativeSequence(const Napi::CallbackInfo& info);
  std::shared_ptr<Sequence> seq;
  HeldPenalties held;  // the penalty list kept by kListHold / kListAdd picks (main thread only)

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ReleaseKv(const Napi::CallbackInfo& info);
  Napi::Value KvBlocks(const Napi::CallbackInfo& info);
  Napi::Value Length(const Napi::CallbackInfo& info);
  Napi::Value Alpha(const Napi::CallbackInfo& info);
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit NativeModel(const Napi::CallbackInfo& info);
  std::shared_ptr<Engine> engine;
  std::shared_ptr<std::atomic<bool>> cancel;
  bool loading = false;

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value CancelLoad(const Napi::CallbackInfo& info);
  Napi::Value CreateSequence(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value KvStats(const Napi::CallbackInfo& info);
  Napi::Value Switches(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
};

Napi::Object InitOps(Napi::Env env, Napi::Object exports);

}  // namespace qwen
