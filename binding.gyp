{
  "targets": [
    {
      "target_name": "neurotap",
      "sources": [
        "native/addon.cc",
        "native/api/backward-wrap.cc",
        "native/api/cache-wrap.cc",
        "native/api/js-hooks.cc",
        "native/api/model-wrap.cc",
        "native/api/run-buffers.cc",
        "native/api/run-options.cc",
        "native/api/sae-wrap.cc",
        "native/api/worker.cc",
        "native/engine/backward.cc",
        "native/engine/backward-layer.cc",
        "native/engine/backend.cc",
        "native/engine/cache-ops.cc",
        "native/engine/config.cc",
        "native/engine/edits.cc",
        "native/engine/hooks.cc",
        "native/engine/model.cc",
        "native/engine/model-sae.cc",
        "native/engine/pass.cc",
        "native/engine/sae.cc",
        "native/engine/sampling.cc",
        "native/engine/weights.cc",
        "native/io/json.cc",
        "native/io/safetensors.cc",
        "native/ops/attention.cc",
        "native/ops/attention-backward.cc",
        "native/ops/attention-simd.cc",
        "native/ops/attention-tiled.cc",
        "native/ops/elementwise-backward.cc",
        "native/ops/cpu-backend.cc",
        "native/ops/cpu-features.cc",
        "native/ops/elementwise.cc",
        "native/ops/elementwise-simd.cc",
        "native/ops/fma-tile.cc",
        "native/ops/gemm.cc",
        "native/ops/gemm-amx.cc",
        "native/ops/gemm-backward.cc",
        "native/ops/gemm-bf16.cc",
        "native/ops/gemm-packed.cc",
        "native/ops/thread-pool.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "libraries": ["-ldl"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17", "/O2"] }
      }
    }
  ]
}
