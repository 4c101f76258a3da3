// cuBLAS opened at run time with dlopen (never linked: a missing libcublas must not stop the addon from loading).
// Self-declared prototypes, checked against cublas_api.h 13.1 (see shared/docs/toolchain.md). Search order:
// $QWEN_CUBLAS_PATH -> libcublas.so.13 (LD_LIBRARY_PATH / ldconfig) -> /usr/local/cuda/lib64/libcublas.so.13.
#pragma once
#include <cuda_runtime_api.h>  // cudaStream_t
#include <library_types.h>     // cudaDataType_t: CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14

#include <string>

namespace qwen::cublas {

typedef struct cublasContext* Handle;
typedef int Status;  // 0 = CUBLAS_STATUS_SUCCESS
enum Operation : int { OP_N = 0, OP_T = 1 };
enum ComputeType : int { COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77 };
enum GemmAlgo : int { GEMM_DEFAULT = -1 };
// cublasMath_t: CUBLAS_DEFAULT_MATH = 0 | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16 (without it, split-K
// partial sums of a 16-bit C may be reduced in 16 bits).
enum MathMode : int { MATH_DEFAULT = 0, MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16 };

struct Api {
  bool ok = false;      // library opened and every symbol found
  std::string error;    // why not
  std::string path;     // what was opened
  Status (*create)(Handle*) = nullptr;                   // cublasCreate_v2
  Status (*destroy)(Handle) = nullptr;                   // cublasDestroy_v2
  Status (*set_stream)(Handle, cudaStream_t) = nullptr;  // cublasSetStream_v2
  Status (*set_math_mode)(Handle, MathMode) = nullptr;   // cublasSetMathMode (optional: null if missing)
  Status (*set_workspace)(Handle, void*, size_t) = nullptr;  // cublasSetWorkspace_v2 (optional: null if missing)
  // cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
  //              computeType, algo)
  Status (*gemm_ex)(Handle, Operation, Operation, int, int, int, const void*, const void*, cudaDataType_t, int,
                    const void*, cudaDataType_t, int, const void*, void*, cudaDataType_t, int, ComputeType,
                    GemmAlgo) = nullptr;
};

// Opens the library once (thread-safe); later calls return the same result.
const Api& api();

// "" when QWEN_CUBLAS is unset or anything but "0"; else the reason cuBLAS is switched off.
std::string disabled_by_env();

}  // namespace qwen::cublas
