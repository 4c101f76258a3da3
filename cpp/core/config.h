// Model hyper-parameters the engine needs, already validated by lib/model/config.ts.
#pragma once
#include <cstdint>

namespace qwen {

struct ModelConfig {
  int hidden = 0;         // H = hidden_size (4096)
  int n_layers = 0;       // num_hidden_layers (32)
  int n_heads = 0;        // num_attention_heads (32); plain MHA
  int head_dim = 0;       // kv_channels (128); n_heads * head_dim == H
  int ffn = 0;            // F = intermediate_size / 2 (11008): width of w1 and w2
  int vocab = 0;          // V = vocab_size (151936) rows of wte and lm_head
  int seq_length = 0;     // S: threshold for dynamic NTK and logN (8192)
  int rotary_dims = 0;    // head_dim * rotary_pct (128): leading dims of each head that rotate
  float eps = 1e-6f;      // layer_norm_epsilon
  double rope_base = 10000.0;
  bool dynamic_ntk = true;
  bool logn = true;
};

// The reference's logN table covers positions 0..32766; a longer sequence crashes it, so we refuse it.
constexpr int kMaxPositions = 32767;

}  // namespace qwen
