#include "addon/convert.h"

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
  return b;
}

}  // namespace qwen
