// JS value -> plain struct conversions for the addon. lib/ validates user input; these helpers only guard against
// a programming error in lib/ (wrong types) with a TypeError instead of a crash.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/engine.h"

namespace qwen {

inline Napi::Value need(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) throw Napi::TypeError::New(o.Env(), std::string("missing field '") + key + "'");
  return v;
}
inline double num(const Napi::Object& o, const char* key) {
  Napi::Value v = need(o, key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("field '") + key + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
inline bool boolean(const Napi::Object& o, const char* key) {
  Napi::Value v = need(o, key);
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("field '") + key + "' must be a boolean");
  return v.As<Napi::Boolean>().Value();
}
inline std::string str(const Napi::Object& o, const char* key, const char* dflt = nullptr) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && dflt) return dflt;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("field '") + key + "' must be a string");
  return v.As<Napi::String>().Utf8Value();
}
inline DType dtype_of(Napi::Env env, double code) {
  if (code == 0) return DType::F32;
  if (code == 1) return DType::F16;
  if (code == 2) return DType::BF16;
  throw Napi::TypeError::New(env, "unknown dtype code");
}

ModelConfig config_from_js(const Napi::Object& o);

// A greedy pick request copied out of JS (spec points into ids / counts), and a PickResult as { id, logprob?, top? }
// (logprob when spec.top_n >= 0, top: [{ id, logprob }] when spec.top_n > 0; only id, -1, for a row without a usable
// logit).
struct PickHold {
  std::vector<int32_t> ids, counts;
  PickSpec spec;
};
std::unique_ptr<PickHold> pick_from_js(const Napi::Object& o, int V);
Napi::Object pick_to_js(Napi::Env env, const PickResult& p, const PickSpec& s);
BackendOptions backend_from_js(const Napi::Object& o);

}  // namespace qwen
