// JS value -> plain struct conversions for the addon. lib/ validates user input; these helpers only guard against
// a programming error in lib/ (wrong types) with a TypeError instead of a crash.
#pragma once
#include <napi.h>

#include <cstdint>
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

// The packed pick request of a model step: one row of kPickFields doubles per pick (lib/native/stepPack.ts writes
// them in this order), its penalty ids and counts in separate Int32Arrays.
enum PickField {
  kPfVocabLimit, kPfTopLogprobs /* -1: none */, kPfDoSample /* 0 | 1 */, kPfTemperature, kPfTopK, kPfTopP, kPfU,
  kPfRepetition, kPfPresence, kPfFrequency, kPickFields
};

// A bitmap over [0, V) that make_pick uses to check ids for repeats; one per step, cleared by each use.
class PickIdSet {
 public:
  explicit PickIdSet(int V) : w_((size_t(V) + 63) / 64, 0) {}
  bool insert(int32_t id) {
    uint64_t& w = w_[size_t(id) >> 6];
    const uint64_t bit = uint64_t(1) << (id & 63);
    if (w & bit) return false;
    w |= bit;
    return true;
  }
  void erase(int32_t id) { w_[size_t(id) >> 6] &= ~(uint64_t(1) << (id & 63)); }

 private:
  std::vector<uint64_t> w_;
};

// Validates one pick (f: kPickFields values; ids / counts: n each) and copies it; RangeError / TypeError naming the
// field otherwise. `seen` must be clear on entry and is clear again on return, thrown or not.
std::unique_ptr<PickHold> make_pick(Napi::Env env, const double* f, const int32_t* ids, const int32_t* counts,
                                    size_t n, int V, PickIdSet& seen);
Napi::Object pick_to_js(Napi::Env env, const PickResult& p, const PickSpec& s);
BackendOptions backend_from_js(const Napi::Object& o);

}  // namespace qwen
