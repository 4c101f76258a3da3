#include "addon/convert.h"

#include <algorithm>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstdint>

#include "core/pick.h"

namespace qwen {

ModelConfig config_from_js(const Napi::Object& o) {
  ModelConfig c;
  c.hidden = int(num(o, "hidden"));
  c.n_layers = int(num(o, "nLayers"));
  c.n_heads = int(num(o, "nHeads"));
  c.head_dim = int(num(o, "headDim"));
  c.ffn = int(num(o, "ffn"));
  c.vocab = int(num(o, "vocab"));
  c.seq_length = int(num(o, "seqLength"));
  c.rotary_dims = int(num(o, "rotaryDims"));
  c.eps = float(num(o, "eps"));
  c.rope_base = num(o, "ropeBase");
  c.dynamic_ntk = boolean(o, "dynamicNtk");
  c.logn = boolean(o, "logn");
  return c;
}

BackendOptions backend_from_js(const Napi::Object& o) {
  BackendOptions b;
  b.device = str(o, "device", "cpu");
  b.dtype = str(o, "dtype", "auto");
  Napi::Value t = o.Get("threads");
  b.threads = t.IsNumber() ? t.As<Napi::Number>().Int32Value() : 0;
  b.cpu_isa = str(o, "cpuIsa", "");
  Napi::Value sw = o.Get("switches");
  if (sw.IsObject()) {  // { NAME: "0" | "1" } (lib/model/model.ts checks the names against BACKEND_SWITCHES)
    Napi::Object so = sw.As<Napi::Object>();
    Napi::Array keys = so.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = so.Get(k);
      const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
      if (s != "0" && s != "1") throw Napi::TypeError::New(o.Env(), "switches." + k + " must be '0' or '1'");
      b.switches[k] = s;
    }
  }
  return b;
}

// pick: { repetitionPenalty, presencePenalty, frequencyPenalty, ids: Int32Array, counts: Int32Array, vocabLimit,
//         topLogprobs?, doSample?, temperature, topK, topP, u } -> PickHold (the ops harness's form; a model step
//         sends the packed rows of PickField instead). The four sampling fields are read only with doSample true.
std::unique_ptr<PickHold> pick_from_js(const Napi::Object& o, int V) {
  Napi::Env env = o.Env();
  auto i32 = [&](const char* key) {
    Napi::Value v = need(o, key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, std::string("pick.") + key + " must be an Int32Array");
    return v.As<Napi::Int32Array>();
  };
  Napi::Int32Array ids = i32("ids"), counts = i32("counts");
  double f[kPickFields];
  f[kPfRepetition] = num(o, "repetitionPenalty");
  f[kPfPresence] = num(o, "presencePenalty");
  f[kPfFrequency] = num(o, "frequencyPenalty");
  f[kPfVocabLimit] = num(o, "vocabLimit");
  Napi::Value top = o.Get("topLogprobs");
  f[kPfTopLogprobs] = top.IsUndefined() ? -1 : top.IsNumber() ? top.As<Napi::Number>().DoubleValue() : NAN;
  if (!top.IsUndefined() && !(f[kPfTopLogprobs] >= 0))  // -1 is the packed form's "none", not a value of this one
    throw Napi::RangeError::New(env, "pick.topLogprobs must be an integer in [0, 20]");
  Napi::Value ds = o.Get("doSample");
  if (!ds.IsUndefined() && !ds.IsBoolean()) throw Napi::TypeError::New(env, "pick.doSample must be a boolean");
  f[kPfDoSample] = ds.IsBoolean() && ds.As<Napi::Boolean>().Value() ? 1 : 0;
  f[kPfTemperature] = f[kPfDoSample] ? num(o, "temperature") : 1;
  f[kPfTopK] = f[kPfDoSample] ? num(o, "topK") : 0;
  f[kPfTopP] = f[kPfDoSample] ? num(o, "topP") : 1;
  f[kPfU] = f[kPfDoSample] ? num(o, "u") : 0;
  f[kPfListMode] = kListGiven;
  if (ids.ElementLength() != counts.ElementLength())
    throw Napi::RangeError::New(env, "pick.ids and pick.counts differ in length");
  PickIdSet seen(V);
  return make_pick(env, f, ids.Data(), counts.Data(), ids.ElementLength(), V, seen);
}

std::unique_ptr<PickHold> make_pick(Napi::Env env, const double* f, const int32_t* ids, const int32_t* counts,
                                    size_t n, int V, PickIdSet& seen) {
  auto p = std::make_unique<PickHold>();
  pick_fields(env, f, V, p->spec);
  // The copies are what is checked and used (the caller's arrays may be JS memory that changes under us).
  p->ids.assign(ids, ids + n);
  p->counts.assign(counts, counts + n);
  ids = p->ids.data();
  counts = p->counts.data();
  // Distinct and in [0, V): O(n) with the caller's bitmap, which is left cleared again for the next pick.
  size_t in = 0;  // ids[0, in) are in `seen`
  const char* why = nullptr;
  for (; in < n; ++in) {
    const int32_t id = ids[in];
    if (id < 0 || id >= V) why = "pick.ids must be in [0, vocab)";
    else if (!seen.insert(id)) why = "pick.ids must be distinct";
    if (why) break;
  }
  for (size_t i = 0; i < in; ++i) seen.erase(ids[i]);
  if (why) throw Napi::RangeError::New(env, why);
  for (size_t i = 0; i < n; ++i)
    if (counts[i] < 0) throw Napi::RangeError::New(env, "pick.counts must be >= 0");
  p->point();
  return p;
}

void pick_fields(Napi::Env env, const double* f, int V, PickSpec& s) {
  s.repetition = f[kPfRepetition];
  s.presence = f[kPfPresence];
  s.frequency = f[kPfFrequency];
  const double limit = f[kPfVocabLimit];
  if (!(limit >= 1 && limit <= V && limit == std::floor(limit)))
    throw Napi::RangeError::New(env, "pick.vocabLimit must be an integer in [1, vocab]");
  s.vocab_limit = int(limit);
  if (!(s.repetition > 0) || !std::isfinite(s.repetition) || !std::isfinite(s.presence) || !std::isfinite(s.frequency))
    throw Napi::RangeError::New(env, "pick penalties must be finite (repetitionPenalty > 0)");
  const double t = f[kPfTopLogprobs];
  if (t != -1) {
    if (!(t >= 0 && t <= kMaxPickTop && t == std::floor(t)))
      throw Napi::RangeError::New(env, "pick.topLogprobs must be an integer in [0, 20]");
    s.top_n = int(t);
  }
  if (f[kPfDoSample] != 0 && f[kPfDoSample] != 1) throw Napi::TypeError::New(env, "pick.doSample must be a boolean");
  s.do_sample = f[kPfDoSample] == 1;
  if (s.do_sample) {  // lib/model checkPick validated these; a programming error in lib/ still gets an exception
    s.temperature = f[kPfTemperature];
    const double k = f[kPfTopK];
    s.top_p = f[kPfTopP];
    s.u = f[kPfU];
    if (!(s.temperature > 0) || !std::isfinite(s.temperature))
      throw Napi::RangeError::New(env, "pick.temperature must be a finite number > 0");
    if (!(k >= 0 && k <= 2147483647.0 && k == std::floor(k)))
      throw Napi::RangeError::New(env, "pick.topK must be an integer >= 0");
    s.top_k = int(k);
    if (!(s.top_p > 0 && s.top_p <= 1)) throw Napi::RangeError::New(env, "pick.topP must be a number in (0, 1]");
    if (!(s.u >= 0 && s.u < 1)) throw Napi::RangeError::New(env, "pick.u must be a number in [0, 1)");
    if (s.vocab_limit > kPickIdSpan) throw Napi::RangeError::New(env, "pick: sampling supports at most 2^20 token ids");
  }
  assert(pick_sample_ok(s));
}

void PickHold::point() {
  spec.ids = ids.data();
  spec.counts = counts.data();
  spec.n_ids = int(ids.size());
}

void HeldPenalties::assign(std::vector<int32_t> new_ids, std::vector<int32_t> new_counts) {
  valid = false;  // until the whole state is rebuilt (a bad_alloc below leaves it unusable, not inconsistent)
  auto i = std::make_shared<std::vector<int32_t>>(std::move(new_ids));
  auto c = std::make_shared<std::vector<int32_t>>(std::move(new_counts));
  std::unordered_map<int32_t, int32_t> m;
  m.reserve(i->size() * 2);
  for (size_t k = 0; k < i->size(); ++k) m.emplace((*i)[k], int32_t(k));
  ids = std::move(i);
  counts = std::move(c);
  slot = std::move(m);
  valid = true;
}

void HeldPenalties::own() {
  if (ids.use_count() > 1) ids = std::make_shared<std::vector<int32_t>>(*ids);
  if (counts.use_count() > 1) counts = std::make_shared<std::vector<int32_t>>(*counts);
}

void HeldPenalties::add(const std::vector<int32_t>& add_ids, const std::vector<int32_t>& add_counts) {
  valid = false;  // until every entry is in
  own();
  for (size_t k = 0; k < add_ids.size(); ++k) add_one(add_ids[k], add_counts[k]);
  valid = true;
}

void HeldPenalties::add_one(int32_t id, int32_t count) {
  auto it = slot.find(id);
  if (it == slot.end()) {
    ids->push_back(id);
    counts->push_back(count);
    slot.emplace(id, int32_t(ids->size() - 1));
  } else {
    int32_t& c = (*counts)[size_t(it->second)];
    c = int32_t(std::min<int64_t>(int64_t(c) + count, INT32_MAX));  // saturates: a count is never negative
  }
}

void HeldPenalties::lend(PickHold& h) const {
  h.kept_ids = ids;
  h.kept_counts = counts;
  h.spec.ids = ids->data();
  h.spec.counts = counts->data();
  h.spec.n_ids = int(ids->size());
}

Napi::Object pick_to_js(Napi::Env env, const PickResult& p, const PickSpec& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", p.id);
  if (p.id >= 0 && s.top_n >= 0) {
    o.Set("logprob", p.logprob);
    if (s.top_n > 0) {
      Napi::Array top = Napi::Array::New(env, size_t(p.n_top));
      for (int t = 0; t < p.n_top; ++t) {
        Napi::Object e = Napi::Object::New(env);
        e.Set("id", p.top_ids[t]);
        e.Set("logprob", p.top_logprobs[t]);
        top.Set(uint32_t(t), e);
      }
      o.Set("top", top);
    }
  }
  return o;
}

}  // namespace qwen
