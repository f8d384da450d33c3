// Device helpers shared by the kernels: dtype conversion, accumulation types, warp reductions,
// 16-byte vectors, dtype dispatch and launch-error checks. No torch headers.
//
// torch builds extensions with __CUDA_NO_HALF_CONVERSIONS__ and friends, so every conversion
// between __half / __nv_bfloat16 and float goes through the explicit intrinsics below.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace attngan {

// Element type T -> accumulation type A and conversions between them.
template <typename T>
struct Num;

template <>
struct Num<float> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(float v) { return v; }
  static __device__ __forceinline__ float from_acc(float v) { return v; }
};

template <>
struct Num<double> {
  using Acc = double;
  static __device__ __forceinline__ double to_acc(double v) { return v; }
  static __device__ __forceinline__ double from_acc(double v) { return v; }
};

template <>
struct Num<__half> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
};

template <>
struct Num<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) {
    return __float2bfloat16_rn(v);
  }
};

template <typename T>
using acc_t = typename Num<T>::Acc;

template <typename T>
__device__ __forceinline__ acc_t<T> load_acc(const T* p) {
  return Num<T>::to_acc(*p);
}

template <typename T>
__device__ __forceinline__ void store_acc(T* p, acc_t<T> v) {
  *p = Num<T>::from_acc(v);
}

// Accurate math in the accumulation type.
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }
__device__ __forceinline__ float rsqrt_(float x) { return rsqrtf(x); }
__device__ __forceinline__ double rsqrt_(double x) { return rsqrt(x); }
__device__ __forceinline__ float max_(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_(double a, double b) { return fmax(a, b); }

template <typename A>
__device__ __forceinline__ A pos_inf();

template <>
__device__ __forceinline__ float pos_inf<float>() {
  return __int_as_float(0x7f800000);
}

template <>
__device__ __forceinline__ double pos_inf<double>() {
  return __longlong_as_double(0x7ff0000000000000LL);
}

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -pos_inf<A>();
}

__device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }

// Warp-level reductions over all 32 lanes (every lane gets the result).
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = max_(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Four consecutive accumulators from shared memory; p is 4-element aligned (16 bytes for float).
__device__ __forceinline__ void load4(const float* p, float& a, float& b, float& c, float& d) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  a = v.x;
  b = v.y;
  c = v.z;
  d = v.w;
}

__device__ __forceinline__ void load4(const double* p, double& a, double& b, double& c,
                                      double& d) {
  const double2 v0 = *reinterpret_cast<const double2*>(p);
  const double2 v1 = *reinterpret_cast<const double2*>(p + 2);
  a = v0.x;
  b = v0.y;
  c = v1.x;
  d = v1.y;
}

// 16-byte vector of T for global loads and stores.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

inline bool is_aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & uintptr_t{15}) == 0;
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the element type of dtype.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(TypeTag<float>{});
    case DType::kFloat16:
      return f(TypeTag<__half>{});
    case DType::kBFloat16:
      return f(TypeTag<__nv_bfloat16>{});
    case DType::kFloat64:
      return f(TypeTag<double>{});
  }
  return cudaErrorInvalidValue;
}

// Raise a kernel's dynamic shared memory limit when it needs more than the default 48 KiB.
template <typename Kernel>
cudaError_t allow_shared_bytes(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

}  // namespace attngan

#define ATTNGAN_RETURN_IF_ERROR(...)                \
  do {                                       \
    const cudaError_t attngan_err_ = (__VA_ARGS__); \
    if (attngan_err_ != cudaSuccess) {       \
      return attngan_err_;                   \
    }                                        \
  } while (0)

// After a kernel launch: the launch (configuration) error, if any.
#define ATTNGAN_CHECK_LAUNCH() ATTNGAN_RETURN_IF_ERROR(cudaGetLastError())
