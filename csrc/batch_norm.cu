// batch_norm_act: BatchNorm fused with GLU (mode glu) or a residual add (mode add).
//
// x is viewed as outer (M) x C x inner (K): NCHW -> (B, C, H*W), channels-last / B x C ->
// (B*H*W or B, C, 1). y has Cout = C/2 (glu: y = z[:, :Cout] * sigmoid(z[:, Cout:])) or C channels.
//
// Reductions (deterministic, no atomics): a block per (channel tile, split of the M*K values of a
// channel); K > 1 -> one channel per block, threads along the contiguous inner axis; K == 1 ->
// 32 channels per block, a warp along the contiguous channel axis and 8 warps over rows. Each block
// writes per-channel partial sums; a finalize kernel adds the splits in order.
//   forward (training): sums of x - x[first] and its square (shifted sums, fp32), -> mean, biased
//                       var, and the per-channel scale = w / sqrt(var + eps), shift = b - mean*scale;
//   backward: sum dz and sum dz * xhat, dz recomputed from x and grad_y (GLU derivative included).
// Elementwise passes (forward: normalise + affine + GLU / + residual; backward: grad_x) run over
// groups of 16 bytes when the contiguous run and the pointers allow it, scalar otherwise.
#include <initializer_list>
#include <type_traits>

#include "common.cuh"

namespace attngan {
namespace {

constexpr int kThreads = 256;
constexpr int kStats = 0, kGradGlu = 1, kGradAdd = 2;

// Per-channel parameter arrays in the workspace (acc), each C long.
struct Params {
  int64_t scale, shift, invstd, mean, k1, k2, k3, partial;
};

__host__ __device__ inline Params params_layout(int64_t C) {
  return Params{0, C, 2 * C, 3 * C, 4 * C, 5 * C, 6 * C, 7 * C};
}

int64_t reduce_units(int kind, int64_t C) { return kind == kGradGlu ? C / 2 : C; }

int reduce_splits(BatchNormSizes s, int kind, int num_sms) {
  const int ux = s.inner == 1 ? 32 : 1;
  const int64_t blocks_x = ceil_div(reduce_units(kind, s.channels), ux);
  const int64_t values = s.outer * s.inner;
  const int64_t workers = kThreads / ux;
  int64_t splits = ceil_div(4 * static_cast<int64_t>(num_sms > 0 ? num_sms : 108), blocks_x);
  const int64_t most = ceil_div(values, workers * 16);  // at least ~16 values per thread
  if (splits > most) splits = most;
  if (splits > 1024) splits = 1024;
  return static_cast<int>(splits < 1 ? 1 : splits);
}

template <typename T, typename A, int V>
__device__ __forceinline__ void load_vec(const T* p, A (&out)[V]) {
  if constexpr (V > 1) {
    const Vec16<T> v = *reinterpret_cast<const Vec16<T>*>(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = Num<T>::to_acc(v.v[i]);
  } else {
    out[0] = load_acc(p);
  }
}

template <typename T, typename A, int V>
__device__ __forceinline__ void store_vec(T* p, const A (&in)[V]) {
  if constexpr (V > 1) {
    Vec16<T> v;
#pragma unroll
    for (int i = 0; i < V; ++i) v.v[i] = Num<T>::from_acc(in[i]);
    *reinterpret_cast<Vec16<T>*>(p) = v;
  } else {
    store_acc(p, in[0]);
  }
}

// Partial sums per channel over one split of its M*K values. kUX channels per block.
// kStats: (x - x[first], (x - x[first])^2) per channel of x;
// kGradGlu: per output channel c, (dz, dz * xhat) of channels c and c + C/2;
// kGradAdd: (dz, dz * xhat) per channel with dz = grad_y.
template <typename T, int kKind, int kUX>
__global__ void __launch_bounds__(kThreads)
    bn_reduce_kernel(const T* __restrict__ x, const T* __restrict__ grad_y,
                     acc_t<T>* __restrict__ ws, int64_t M, int C, int64_t K, int splits) {
  using A = acc_t<T>;
  constexpr int kNV = kKind == kGradGlu ? 4 : 2;
  constexpr int kWorkers = kThreads / kUX;
  __shared__ A red[kThreads / 32][32][kNV];
  const Params P = params_layout(C);
  const int units = kKind == kGradGlu ? C / 2 : C;
  const int half = C / 2;
  const int tid = threadIdx.x;
  const int u = blockIdx.x * kUX + (kUX == 1 ? 0 : tid % kUX);
  const int worker = kUX == 1 ? tid : tid / kUX;
  const bool active = u < units;
  const int64_t values = M * K;
  const int64_t chunk = (values + splits - 1) / splits;
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < values ? begin + chunk : values;

  A sum[kNV];
#pragma unroll
  for (int v = 0; v < kNV; ++v) sum[v] = A(0);
  if (active) {
    const int ca = u;
    const int cb = u + half;
    A first = A(0), sc_a = A(0), sh_a = A(0), sc_b = A(0), sh_b = A(0);
    A mu_a = A(0), inv_a = A(0), mu_b = A(0), inv_b = A(0);
    if (kKind == kStats) first = load_acc(x + static_cast<int64_t>(ca) * K);
    if (kKind != kStats) {
      mu_a = ws[P.mean + ca];
      inv_a = ws[P.invstd + ca];
    }
    if (kKind == kGradGlu) {
      sc_a = ws[P.scale + ca];
      sh_a = ws[P.shift + ca];
      sc_b = ws[P.scale + cb];
      sh_b = ws[P.shift + cb];
      mu_b = ws[P.mean + cb];
      inv_b = ws[P.invstd + cb];
    }
    const int y_channels = kKind == kGradGlu ? half : C;
    for (int64_t e = begin + worker; e < end; e += kWorkers) {
      const int64_t m = e / K;
      const int64_t k = e - m * K;
      const int64_t xa = (m * C + ca) * K + k;
      if (kKind == kStats) {
        const A d = load_acc(x + xa) - first;
        sum[0] += d;
        sum[1] += d * d;
      } else {
        const A g = load_acc(grad_y + (m * y_channels + u) * K + k);
        const A va = load_acc(x + xa);
        if (kKind == kGradAdd) {
          sum[0] += g;
          sum[1] += g * (va - mu_a) * inv_a;
        } else {
          const A vb = load_acc(x + xa + static_cast<int64_t>(half) * K);
          const A za = va * sc_a + sh_a;
          const A sig = sigmoid_(vb * sc_b + sh_b);
          const A dza = g * sig;
          const A dzb = g * za * sig * (A(1) - sig);
          sum[0] += dza;
          sum[1] += dza * (va - mu_a) * inv_a;
          sum[2] += dzb;
          sum[3] += dzb * (vb - mu_b) * inv_b;
        }
      }
    }
  }
  const int lane = tid & 31;
  const int warp = tid >> 5;
  if (kUX == 1) {
#pragma unroll
    for (int v = 0; v < kNV; ++v) sum[v] = warp_sum(sum[v]);
  }
  if (kUX != 1 || lane == 0) {
#pragma unroll
    for (int v = 0; v < kNV; ++v) red[warp][kUX == 1 ? 0 : lane][v] = sum[v];
  }
  __syncthreads();
  if (tid < kUX && active) {
    A total[kNV];
#pragma unroll
    for (int v = 0; v < kNV; ++v) {
      total[v] = A(0);
      for (int w = 0; w < kThreads / 32; ++w) total[v] += red[w][tid][v];
    }
    A* out = ws + P.partial + static_cast<int64_t>(blockIdx.y) * C * 2;
    out[2 * u] = total[0];
    out[2 * u + 1] = total[1];
    if (kKind == kGradGlu) {
      out[2 * (u + half)] = total[2];
      out[2 * (u + half) + 1] = total[3];
    }
  }
}

// Training forward: mean, biased var from the split partials; scale and shift for the apply pass.
template <typename T>
__global__ void bn_stats_finalize_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ weight,
                                         const acc_t<T>* __restrict__ bias,
                                         acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ var,
                                         acc_t<T>* __restrict__ ws, int C, int64_t K, int64_t n,
                                         int splits, double eps) {
  using A = acc_t<T>;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Params P = params_layout(C);
  A s1 = A(0), s2 = A(0);
  for (int sp = 0; sp < splits; ++sp) {
    s1 += ws[P.partial + (static_cast<int64_t>(sp) * C + c) * 2];
    s2 += ws[P.partial + (static_cast<int64_t>(sp) * C + c) * 2 + 1];
  }
  const A d = s1 / static_cast<A>(n);
  const A mu = load_acc(x + static_cast<int64_t>(c) * K) + d;
  const A v = max_(s2 / static_cast<A>(n) - d * d, A(0));
  mean[c] = mu;
  var[c] = v;
  const A scale = (weight ? weight[c] : A(1)) * rsqrt_(v + static_cast<A>(eps));
  ws[P.scale + c] = scale;
  ws[P.shift + c] = (bias ? bias[c] : A(0)) - mu * scale;
}

// scale, shift, invstd, mean from given statistics (eval forward; backward).
template <typename A>
__global__ void bn_params_kernel(const A* __restrict__ weight, const A* __restrict__ bias,
                                 const A* __restrict__ mean, const A* __restrict__ var,
                                 A* __restrict__ ws, int C, double eps) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Params P = params_layout(C);
  const A invstd = rsqrt_(var[c] + static_cast<A>(eps));
  const A scale = (weight ? weight[c] : A(1)) * invstd;
  ws[P.scale + c] = scale;
  ws[P.shift + c] = (bias ? bias[c] : A(0)) - mean[c] * scale;
  ws[P.invstd + c] = invstd;
  ws[P.mean + c] = mean[c];
}

// Backward: grad_weight, grad_bias and the grad_x coefficients
// grad_x = k1 * (dz - k2 - xhat * k3), k1 = w * invstd, k2 = mean(dz), k3 = mean(dz * xhat).
template <typename A>
__global__ void bn_grad_finalize_kernel(const A* __restrict__ weight, A* __restrict__ grad_weight,
                                        A* __restrict__ grad_bias, A* __restrict__ ws, int C,
                                        int64_t n, int splits, bool training) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Params P = params_layout(C);
  A sdz = A(0), sdzx = A(0);
  for (int sp = 0; sp < splits; ++sp) {
    sdz += ws[P.partial + (static_cast<int64_t>(sp) * C + c) * 2];
    sdzx += ws[P.partial + (static_cast<int64_t>(sp) * C + c) * 2 + 1];
  }
  if (grad_weight) grad_weight[c] = sdzx;
  if (grad_bias) grad_bias[c] = sdz;
  ws[P.k1 + c] = (weight ? weight[c] : A(1)) * ws[P.invstd + c];
  ws[P.k2 + c] = training ? sdz / static_cast<A>(n) : A(0);
  ws[P.k3 + c] = training ? sdzx / static_cast<A>(n) : A(0);
}

// Forward elementwise pass over y: V consecutive outputs per step (V > 1 only when aligned).
template <typename T, bool kGlu, int V>
__global__ void __launch_bounds__(kThreads)
    bn_apply_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                    const acc_t<T>* __restrict__ ws, T* __restrict__ y, int64_t M, int C,
                    int64_t K) {
  using A = acc_t<T>;
  const Params P = params_layout(C);
  const int cout = kGlu ? C / 2 : C;
  const int64_t row = static_cast<int64_t>(cout) * K;
  const int64_t groups = M * row / V;
  for (int64_t grp = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; grp < groups;
       grp += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = grp * V;
    const int64_t m = o / row;
    const int c0 = static_cast<int>((o - m * row) / K);
    const int64_t xa = o + m * (C - cout) * K;
    A va[V], out[V];
    load_vec<T, A, V>(x + xa, va);
    if constexpr (kGlu) {
      A vb[V];
      load_vec<T, A, V>(x + xa + static_cast<int64_t>(cout) * K, vb);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int c = K == 1 ? c0 + i : c0;
        const A za = va[i] * ws[P.scale + c] + ws[P.shift + c];
        const A zb = vb[i] * ws[P.scale + c + cout] + ws[P.shift + c + cout];
        out[i] = za * sigmoid_(zb);
      }
    } else {
      A vr[V];
      load_vec<T, A, V>(residual + o, vr);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int c = K == 1 ? c0 + i : c0;
        out[i] = va[i] * ws[P.scale + c] + ws[P.shift + c] + vr[i];
      }
    }
    store_vec<T, A, V>(y + o, out);
  }
}

// Backward elementwise pass: grad_x of both halves (glu) or of x (add), per group of outputs.
template <typename T, bool kGlu, int V>
__global__ void __launch_bounds__(kThreads)
    bn_grad_x_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                     const acc_t<T>* __restrict__ ws, T* __restrict__ grad_x, int64_t M, int C,
                     int64_t K) {
  using A = acc_t<T>;
  const Params P = params_layout(C);
  const int cout = kGlu ? C / 2 : C;
  const int64_t row = static_cast<int64_t>(cout) * K;
  const int64_t groups = M * row / V;
  for (int64_t grp = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; grp < groups;
       grp += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = grp * V;
    const int64_t m = o / row;
    const int c0 = static_cast<int>((o - m * row) / K);
    const int64_t xa = o + m * (C - cout) * K;
    A g[V], va[V], ga[V];
    load_vec<T, A, V>(grad_y + o, g);
    load_vec<T, A, V>(x + xa, va);
    if constexpr (kGlu) {
      A vb[V], gb[V];
      load_vec<T, A, V>(x + xa + static_cast<int64_t>(cout) * K, vb);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int ca = K == 1 ? c0 + i : c0;
        const int cb = ca + cout;
        const A za = va[i] * ws[P.scale + ca] + ws[P.shift + ca];
        const A sig = sigmoid_(vb[i] * ws[P.scale + cb] + ws[P.shift + cb]);
        const A dza = g[i] * sig;
        const A dzb = g[i] * za * sig * (A(1) - sig);
        const A xha = (va[i] - ws[P.mean + ca]) * ws[P.invstd + ca];
        const A xhb = (vb[i] - ws[P.mean + cb]) * ws[P.invstd + cb];
        ga[i] = ws[P.k1 + ca] * (dza - ws[P.k2 + ca] - xha * ws[P.k3 + ca]);
        gb[i] = ws[P.k1 + cb] * (dzb - ws[P.k2 + cb] - xhb * ws[P.k3 + cb]);
      }
      store_vec<T, A, V>(grad_x + xa + static_cast<int64_t>(cout) * K, gb);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int c = K == 1 ? c0 + i : c0;
        const A xh = (va[i] - ws[P.mean + c]) * ws[P.invstd + c];
        ga[i] = ws[P.k1 + c] * (g[i] - ws[P.k2 + c] - xh * ws[P.k3 + c]);
      }
    }
    store_vec<T, A, V>(grad_x + xa, ga);
  }
}

unsigned elementwise_blocks(int64_t groups, int num_sms) {
  const int64_t cap = 32 * static_cast<int64_t>(num_sms > 0 ? num_sms : 108);
  const int64_t want = ceil_div(groups, kThreads);
  return static_cast<unsigned>(want < 1 ? 1 : (want < cap ? want : cap));
}

// Whether 16-byte groups are possible: the contiguous run of y (K, or Cout channels when K == 1)
// splits into whole vectors and every pointer is 16-byte aligned.
template <typename T>
bool can_vectorise(BatchNormSizes s, int64_t cout, std::initializer_list<const void*> ptrs) {
  constexpr int V = Vec16<T>::kSize;
  const int64_t run = s.inner > 1 ? s.inner : cout;
  if (run % V != 0) return false;
  for (const void* p : ptrs) {
    if (p != nullptr && !is_aligned16(p)) return false;
  }
  return true;
}

// Calls launch(glu, width) with both as compile-time constants (std::integral_constant): the
// four instances (GLU or add, V-wide 16-byte groups or scalars) of an elementwise kernel.
template <int V, typename Launch>
void for_mode_and_width(bool glu, bool vec, Launch&& launch) {
  using Wide = std::integral_constant<int, V>;
  using Scalar = std::integral_constant<int, 1>;
  if (glu && vec) {
    launch(std::true_type{}, Wide{});
  } else if (glu) {
    launch(std::true_type{}, Scalar{});
  } else if (vec) {
    launch(std::false_type{}, Wide{});
  } else {
    launch(std::false_type{}, Scalar{});
  }
}

template <typename T, int kKind>
cudaError_t launch_reduce(const T* x, const T* grad_y, acc_t<T>* ws, BatchNormSizes s, int splits,
                          cudaStream_t stream) {
  const int64_t units = reduce_units(kKind, s.channels);
  const int C = static_cast<int>(s.channels);
  if (s.inner == 1) {
    const dim3 grid(static_cast<unsigned>(ceil_div(units, 32)), static_cast<unsigned>(splits));
    bn_reduce_kernel<T, kKind, 32><<<grid, kThreads, 0, stream>>>(x, grad_y, ws, s.outer, C,
                                                                   s.inner, splits);
  } else {
    const dim3 grid(static_cast<unsigned>(units), static_cast<unsigned>(splits));
    bn_reduce_kernel<T, kKind, 1><<<grid, kThreads, 0, stream>>>(x, grad_y, ws, s.outer, C,
                                                                  s.inner, splits);
  }
  ATTNGAN_CHECK_LAUNCH();
  return cudaSuccess;
}

}  // namespace

size_t batch_norm_workspace(DType dtype, BatchNormSizes s, BnMode mode, bool backward,
                            int num_sms) {
  const int kind = !backward ? kStats : (mode == BnMode::kGlu ? kGradGlu : kGradAdd);
  const int splits = reduce_splits(s, kind, num_sms);
  return static_cast<size_t>(7 * s.channels + 2 * splits * s.channels) * acc_bytes(dtype);
}

cudaError_t batch_norm_act_forward(DType dtype, BnMode mode, const void* x, const void* residual,
                                   const void* weight, const void* bias, void* mean, void* var,
                                   bool training, double eps, void* y, void* workspace,
                                   BatchNormSizes s, int num_sms, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int C = static_cast<int>(s.channels);
    const auto* xp = static_cast<const T*>(x);
    auto* ws = static_cast<A*>(workspace);
    const auto* w = static_cast<const A*>(weight);
    const auto* b = static_cast<const A*>(bias);
    const unsigned cblocks = static_cast<unsigned>(ceil_div(C, 128));
    if (training) {
      const int splits = reduce_splits(s, kStats, num_sms);
      ATTNGAN_RETURN_IF_ERROR(launch_reduce<T, kStats>(xp, nullptr, ws, s, splits, stream));
      bn_stats_finalize_kernel<T><<<cblocks, 128, 0, stream>>>(
          xp, w, b, static_cast<A*>(mean), static_cast<A*>(var), ws, C, s.inner,
          s.outer * s.inner, splits, eps);
    } else {
      bn_params_kernel<A><<<cblocks, 128, 0, stream>>>(w, b, static_cast<const A*>(mean),
                                                       static_cast<const A*>(var), ws, C, eps);
    }
    ATTNGAN_CHECK_LAUNCH();
    const bool glu = mode == BnMode::kGlu;
    const int64_t cout = glu ? C / 2 : C;
    const auto* rp = static_cast<const T*>(residual);
    auto* yp = static_cast<T*>(y);
    constexpr int V = Vec16<T>::kSize;
    const bool vec = can_vectorise<T>(s, cout, {x, residual, y});
    const int64_t total = s.outer * cout * s.inner;
    const unsigned blocks = elementwise_blocks(vec ? total / V : total, num_sms);
    for_mode_and_width<V>(glu, vec, [&](auto glu_c, auto width_c) {
      constexpr bool kGlu = decltype(glu_c)::value;
      constexpr int kV = decltype(width_c)::value;
      bn_apply_kernel<T, kGlu, kV><<<blocks, kThreads, 0, stream>>>(xp, rp, ws, yp, s.outer, C,
                                                                    s.inner);
    });
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

cudaError_t batch_norm_act_backward(DType dtype, BnMode mode, const void* grad_y, const void* x,
                                    const void* weight, const void* bias, const void* mean,
                                    const void* var, bool training, double eps, void* grad_x,
                                    void* grad_weight, void* grad_bias, void* workspace,
                                    BatchNormSizes s, int num_sms, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int C = static_cast<int>(s.channels);
    const bool glu = mode == BnMode::kGlu;
    const auto* xp = static_cast<const T*>(x);
    const auto* gp = static_cast<const T*>(grad_y);
    auto* ws = static_cast<A*>(workspace);
    const auto* w = static_cast<const A*>(weight);
    const unsigned cblocks = static_cast<unsigned>(ceil_div(C, 128));
    bn_params_kernel<A><<<cblocks, 128, 0, stream>>>(w, static_cast<const A*>(bias),
                                                     static_cast<const A*>(mean),
                                                     static_cast<const A*>(var), ws, C, eps);
    ATTNGAN_CHECK_LAUNCH();
    const int kind = glu ? kGradGlu : kGradAdd;
    const int splits = reduce_splits(s, kind, num_sms);
    if (glu) {
      ATTNGAN_RETURN_IF_ERROR(launch_reduce<T, kGradGlu>(xp, gp, ws, s, splits, stream));
    } else {
      ATTNGAN_RETURN_IF_ERROR(launch_reduce<T, kGradAdd>(xp, gp, ws, s, splits, stream));
    }
    bn_grad_finalize_kernel<A><<<cblocks, 128, 0, stream>>>(
        w, static_cast<A*>(grad_weight), static_cast<A*>(grad_bias), ws, C, s.outer * s.inner,
        splits, training);
    ATTNGAN_CHECK_LAUNCH();
    const int64_t cout = glu ? C / 2 : C;
    auto* gx = static_cast<T*>(grad_x);
    constexpr int V = Vec16<T>::kSize;
    const bool vec = can_vectorise<T>(s, cout, {grad_y, x, grad_x});
    const int64_t total = s.outer * cout * s.inner;
    const unsigned blocks = elementwise_blocks(vec ? total / V : total, num_sms);
    for_mode_and_width<V>(glu, vec, [&](auto glu_c, auto width_c) {
      constexpr bool kGlu = decltype(glu_c)::value;
      constexpr int kV = decltype(width_c)::value;
      bn_grad_x_kernel<T, kGlu, kV><<<blocks, kThreads, 0, stream>>>(gp, xp, ws, gx, s.outer, C,
                                                                     s.inner);
    });
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

}  // namespace attngan
