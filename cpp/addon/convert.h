// JS value -> plain struct conversions for the addon. lib/ validates user input; these helpers only guard against
// a programming error in lib/ (wrong types) with a TypeError instead of a crash.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
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
  void point();  // spec.ids / counts / n_ids <- the vectors
  // kListAdd: the sequence's kept list as of this step, shared (copy-on-write: HeldPenalties copies it before changing
  // it while a step still holds it); spec points into these instead of ids / counts.
  std::shared_ptr<const std::vector<int32_t>> kept_ids, kept_counts;
};
std::unique_ptr<PickHold> pick_from_js(const Napi::Object& o, int V);

// The packed pick request of a model step: one row of kPickFields doubles per pick (lib/native/stepPack.ts writes
// them in this order), its penalty ids and counts in separate Int32Arrays.
enum PickField {
  kPfVocabLimit, kPfTopLogprobs /* -1: none */, kPfDoSample /* 0 | 1 */, kPfTemperature, kPfTopK, kPfTopP, kPfU,
  kPfRepetition, kPfPresence, kPfFrequency, kPfListMode /* PickListMode */, kPickFields
};
// How a pick row's penalty entries make its list (lib/native/stepPack.ts PICK_LIST_MODES):
//  - kListGiven: they are the list;
//  - kListHold: they are the list, and the sequence keeps it for later kListAdd picks;
//  - kListAdd: the list the sequence keeps, with each entry (id, c) added: count + c, or a new entry (id, c); ids may
//    repeat (applied in order). The list is then kept so. O(entries) per step instead of O(list) for a sequence
//    whose list only grows (Sampler.pickRequest's: the prompt once, then the generated ids).
enum PickListMode { kListGiven = 0, kListAdd = 1, kListHold = 2 };

// The scalar fields of a packed pick row, checked, into s (its ids / counts / n_ids untouched).
void pick_fields(Napi::Env env, const double* f, int V, PickSpec& s);

// A sequence's penalty list between steps (kListHold, kListAdd): distinct ids, slot: id -> index. The vectors are
// shared with the steps that use them (PickHold::kept_*) and copied before a change while shared, so adding to the
// list is O(added) when no step holds the old one (the scheduler's case: one step at a time) and still safe when one
// does.
struct HeldPenalties {
  bool valid = false;
  std::shared_ptr<std::vector<int32_t>> ids, counts;
  std::unordered_map<int32_t, int32_t> slot;
  void assign(std::vector<int32_t> ids, std::vector<int32_t> counts);
  // Each entry (ids[k], counts[k]) in order: count + c, or a new entry. A throw (allocation) leaves it invalid.
  void add(const std::vector<int32_t>& ids, const std::vector<int32_t>& counts);
  void lend(PickHold& h) const;  // h's spec <- the list as it is now

 private:
  void own();  // unshare the vectors from any step still holding them
  void add_one(int32_t id, int32_t count);
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
