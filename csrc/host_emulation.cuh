// Host emulation of the CUDA features the kernels use, for running csrc/*.cu on a CPU in tests
// (tests/test_cuda_compile.py). Not part of the extension build.
//
// The test translates each kernel file to C++ (a launch `k<<<grid, block, smem, stream>>>(args)`
// becomes `emu::launch(k, grid, block, smem, stream, args)`, dynamic shared memory becomes
// emu::dynamic_smem(), 16-byte vector accesses go through emu::aligned, which aborts on a
// misaligned address as the GPU would fault) and compiles it with g++ -std=c++20 and this header
// forced in first. One std::thread per CUDA thread; the blocks of a launch run one after another;
// __syncthreads is a block barrier and a warp shuffle exchanges through a per-warp barrier, so a
// divergent barrier or shuffle deadlocks here as it would hang on the GPU. Static __shared__
// arrays become function statics (one block runs at a time). Compile exactly one translation
// unit with ATTNGAN_EMU_DEFINE_RUNTIME to define the CUDA runtime calls the launchers make.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

using std::max;
using std::min;

namespace emu {

inline thread_local uint3 tl_thread_idx, tl_block_idx;
inline dim3 g_block_dim, g_grid_dim;
inline std::vector<unsigned char> g_smem;
inline std::unique_ptr<std::barrier<>> g_block_barrier;

struct Warp {
  std::unique_ptr<std::barrier<>> barrier;
  uint64_t slot[32];
};
inline std::vector<Warp> g_warps;
inline std::mutex g_atomic_mutex;

template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t,
                   Args... args) {
  const unsigned threads = block.x * block.y * block.z;
  if (block.y != 1 || block.z != 1 || threads % 32 != 0) return cudaErrorInvalidValue;
  g_block_dim = block;
  g_grid_dim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_smem.assign(smem + 16, 0xCD);  // not zero: the kernels must initialise what they read
        g_block_barrier = std::make_unique<std::barrier<>>(threads);
        g_warps.clear();
        g_warps.resize(threads / 32);
        for (auto& w : g_warps) w.barrier = std::make_unique<std::barrier<>>(32);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([=] {
            tl_thread_idx = make_uint3(t, 0, 0);
            tl_block_idx = make_uint3(bx, by, bz);
            kernel(args...);
          });
        }
        for (auto& th : pool) th.join();
      }
    }
  }
  return cudaSuccess;
}

inline unsigned char* dynamic_smem() {
  const auto p = reinterpret_cast<uintptr_t>(g_smem.data());
  return reinterpret_cast<unsigned char*>((p + 15) & ~uintptr_t{15});
}

template <typename V, typename P>
V* aligned(P* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
    std::fprintf(stderr, "emulation: misaligned 16-byte access at %p\n", (const void*)p);
    std::abort();
  }
  return reinterpret_cast<V*>(const_cast<std::remove_const_t<P>*>(p));
}

}  // namespace emu

#define threadIdx (emu::tl_thread_idx)
#define blockIdx (emu::tl_block_idx)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)

inline void __syncthreads() { emu::g_block_barrier->arrive_and_wait(); }

template <typename V>
V __shfl_xor_sync(unsigned, V v, int lane_mask) {
  static_assert(sizeof(V) <= sizeof(uint64_t));
  emu::Warp& w = emu::g_warps[threadIdx.x / 32];
  const int lane = threadIdx.x % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  w.slot[lane] = bits;
  w.barrier->arrive_and_wait();
  V out;
  std::memcpy(&out, &w.slot[lane ^ lane_mask], sizeof(V));
  w.barrier->arrive_and_wait();
  return out;
}

template <typename V>
V atomicAdd(V* p, V v) {
  const std::lock_guard<std::mutex> lock(emu::g_atomic_mutex);
  const V old = *p;
  *p = old + v;
  return old;
}

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline double __longlong_as_double(long long i) {
  double f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }

template <typename R, typename... P>
cudaError_t cudaFuncSetAttribute(R (*)(P...), cudaFuncAttribute, int) {
  return cudaSuccess;
}

#ifdef ATTNGAN_EMU_DEFINE_RUNTIME
extern "C" {
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
}
#endif
