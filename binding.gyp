{
  "targets": [{
    "target_name": "qwen",
    "sources": ["<!@(node -p \"['cpp/core','cpp/cpu','cpp/addon'].flatMap(d=>require('fs').readdirSync(d).filter(f=>f.endsWith('.cc')).map(f=>d+'/'+f)).join(' ')\")"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "cpp"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-mavx2", "-mfma", "-mf16c", "-pthread"],
    "libraries": ["-lpthread"]
  }]
}
