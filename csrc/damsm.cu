// damsm_word_similarity: S[j, i] for every image j and caption i without a B x B x R x T tensor
// (the DAMSM word similarity of Xu et al., CVPR 2018; words_loss in the original's miscc/losses.py).
//
// Forward: a block (256 threads) per (caption i, image j). The caption's words (D x L, L <= 32)
// sit in shared memory; the image's regions stream through in tiles of 32. Per tile:
//   1. scores s[r, k] = v_r . e_k      (lane = region, warp = 4 words; D-long dot products)
//   2. a = softmax over words, z = gamma1 * a          (one lane per region)
//   3. online softmax over regions per word: running max m_k and sum l_k (one warp per word)
//   4. c_k = c_k * exp(m_old - m_new) + sum_r exp(z - m_new) v_r    (thread per feature d)
// then c_k /= l_k, R_k = cos(c_k, e_k) (norm product clamped at 1e-8), S = log sum_k exp(gamma2 R_k).
//
// Backward (recomputation, no stored attention): a block per (caption group g, image j) loops
// over its captions; per pair it reruns the forward pass for m_k, l_k, c_k, forms dR, dc_k, de_k,
// then a second pass over region tiles recomputes s, a, alpha and accumulates
//   grad_v[d, r] += sum_k alpha[k, r] dc[d, k] + ds[r, k] e[d, k]   (block-exclusive partial per
//                   group: plain read-modify-write, summed over groups in order at the end)
//   grad_e[d, k] += de[d, k] + sum_r ds[r, k] v[d, r]               (fp32 atomics, once per pair)
#include "common.cuh"

namespace attngan {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;               // regions per tile (one lane each)
constexpr int kVStride = kTile + 1;     // padded row of the region tile
constexpr int kMaxWords = kDamsmMaxWords;
constexpr double kCosEps = 1e-8;

// Offsets (in accumulator elements) of the shared buffers; every buffer starts 4-aligned.
struct Layout {
  int64_t e, c, dc, v, sc, da, w, ds, vec, red, total;
};

__host__ __device__ inline Layout make_layout(int64_t D, int64_t ts, bool backward) {
  Layout L{};
  int64_t at = 0;
  auto take = [&at](int64_t n) {
    const int64_t here = at;
    at += (n + 3) / 4 * 4;
    return here;
  };
  L.e = take(D * ts);
  L.c = take(D * ts);
  L.dc = backward ? take(D * ts) : 0;
  L.v = take(D * kVStride);
  L.sc = take(kMaxWords * kVStride);
  L.da = backward ? take(kMaxWords * kVStride) : 0;
  L.w = take(kTile * ts);
  L.ds = backward ? take(kTile * ts) : 0;
  L.vec = take(8 * kMaxWords);  // m, l, scale, cos, nc, ne, dr, dk
  L.red = take(kWarps * kMaxWords);
  L.total = at;
  return L;
}

template <typename A>
struct Smem {
  A *e, *c, *dc, *v, *sc, *da, *w, *ds, *m, *l, *scale, *cos, *nc, *ne, *dr, *dk, *red;
};

template <typename A>
__device__ Smem<A> carve(unsigned char* raw, int64_t D, int64_t ts, bool backward) {
  A* base = reinterpret_cast<A*>(raw);
  const Layout L = make_layout(D, ts, backward);
  Smem<A> s;
  s.e = base + L.e;
  s.c = base + L.c;
  s.dc = base + L.dc;
  s.v = base + L.v;
  s.sc = base + L.sc;
  s.da = base + L.da;
  s.w = base + L.w;
  s.ds = base + L.ds;
  A* vec = base + L.vec;
  s.m = vec;
  s.l = vec + kMaxWords;
  s.scale = vec + 2 * kMaxWords;
  s.cos = vec + 3 * kMaxWords;
  s.nc = vec + 4 * kMaxWords;
  s.ne = vec + 5 * kMaxWords;
  s.dr = vec + 6 * kMaxWords;
  s.dk = vec + 7 * kMaxWords;
  s.red = base + L.red;
  return s;
}

__device__ __forceinline__ int caption_length(const int64_t* cap_lens, int i, int T_) {
  const int64_t len = cap_lens[i];
  return static_cast<int>(len < 1 ? 1 : (len > T_ ? T_ : len));
}

// Words of caption i into e (zeros beyond L), zero context accumulators and region weights.
template <typename T, typename A>
__device__ void load_caption(const T* words_i, int D, int T_, int L, int ts, const Smem<A>& s) {
  for (int idx = threadIdx.x; idx < D * ts; idx += kThreads) {
    const int d = idx / ts;
    const int k = idx - d * ts;
    s.e[idx] = k < L ? load_acc(words_i + static_cast<int64_t>(d) * T_ + k) : A(0);
    s.c[idx] = A(0);
  }
  for (int idx = threadIdx.x; idx < kTile * ts; idx += kThreads) s.w[idx] = A(0);
  if (threadIdx.x < kMaxWords) {
    s.m[threadIdx.x] = neg_inf<A>();
    s.l[threadIdx.x] = A(0);
  }
}

// v[d * kVStride + r] = img_local[j, d, r0 + r] (zeros past the last region).
template <typename T, typename A>
__device__ void load_tile(const T* img_j, int D, int R, int r0, int rt, A* v) {
  for (int idx = threadIdx.x; idx < D * kTile; idx += kThreads) {
    const int d = idx / kTile;
    const int r = idx - d * kTile;
    v[d * kVStride + r] = r < rt ? load_acc(img_j + static_cast<int64_t>(d) * R + r0 + r) : A(0);
  }
}

// Lane r of warp w: out_q = sum_d v[d, r] * x[d, 4w + q] for q < 4 (x is D x ts).
template <typename A>
__device__ __forceinline__ void tile_dot4(const A* v, const A* x, int D, int ts, int lane, int k0,
                                          A (&out)[4]) {
  out[0] = out[1] = out[2] = out[3] = A(0);
  for (int d = 0; d < D; ++d) {
    const A vv = v[d * kVStride + lane];
    A x0, x1, x2, x3;
    load4(x + d * ts + k0, x0, x1, x2, x3);
    out[0] += vv * x0;
    out[1] += vv * x1;
    out[2] += vv * x2;
    out[3] += vv * x3;
  }
}

// Pass over the image's regions: c (unnormalised), m, l for caption (e, L). Ends synchronised.
template <typename T, typename A>
__device__ void attend_regions(const T* img_j, int D, int R, int L, int ts, A gamma1,
                               const Smem<A>& s) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int r0 = 0; r0 < R; r0 += kTile) {
    const int rt = min(kTile, R - r0);
    __syncthreads();
    load_tile(img_j, D, R, r0, rt, s.v);
    __syncthreads();
    // 1. scores
    for (int k0 = 4 * warp; k0 < L; k0 += 4 * kWarps) {
      A out[4];
      tile_dot4(s.v, s.e, D, ts, lane, k0, out);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (k0 + q < L) s.sc[(k0 + q) * kVStride + lane] = out[q];
      }
    }
    __syncthreads();
    // 2. softmax over words, z = gamma1 * a (-inf for regions past the end)
    if (warp == 0) {
      A mx = neg_inf<A>();
      for (int k = 0; k < L; ++k) mx = max_(mx, s.sc[k * kVStride + lane]);
      A sum = A(0);
      for (int k = 0; k < L; ++k) sum += exp_(s.sc[k * kVStride + lane] - mx);
      const A inv = A(1) / sum;
      for (int k = 0; k < L; ++k) {
        const A a = exp_(s.sc[k * kVStride + lane] - mx) * inv;
        s.sc[k * kVStride + lane] = lane < rt ? gamma1 * a : neg_inf<A>();
      }
    }
    __syncthreads();
    // 3. online softmax over regions, one warp per word
    for (int k = warp; k < L; k += kWarps) {
      const A z = s.sc[k * kVStride + lane];
      const A m_old = s.m[k];
      const A m_new = max_(m_old, warp_max(z));
      const A p = lane < rt ? exp_(z - m_new) : A(0);
      const A psum = warp_sum(p);
      s.w[lane * ts + k] = p;
      if (lane == 0) {
        const A scale = exp_(m_old - m_new);
        s.scale[k] = scale;
        s.l[k] = s.l[k] * scale + psum;
        s.m[k] = m_new;
      }
    }
    __syncthreads();
    // 4. rescale and accumulate the contexts, one thread per feature
    for (int d = threadIdx.x; d < D; d += kThreads) {
      A acc[kMaxWords];
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) acc[k] = k < L ? s.c[d * ts + k] * s.scale[k] : A(0);
      for (int r = 0; r < rt; ++r) {
        const A vv = s.v[d * kVStride + r];
#pragma unroll
        for (int j = 0; j < kMaxWords / 4; ++j) {
          if (4 * j < L) {
            A w0, w1, w2, w3;
            load4(s.w + r * ts + 4 * j, w0, w1, w2, w3);
            acc[4 * j] += w0 * vv;
            acc[4 * j + 1] += w1 * vv;
            acc[4 * j + 2] += w2 * vv;
            acc[4 * j + 3] += w3 * vv;
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) {
        if (k < L) s.c[d * ts + k] = acc[k];
      }
    }
  }
  __syncthreads();
}

// cos[k] = cos(c_k / l_k, e_k), nc[k] = |c_k / l_k|, ne[k] = |e_k|. Ends synchronised.
template <typename A>
__device__ void cosines(int D, int L, int ts, const Smem<A>& s) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int k = warp; k < L; k += kWarps) {
    const A inv_l = A(1) / s.l[k];
    A dot = A(0), cc = A(0), ee = A(0);
    for (int d = lane; d < D; d += 32) {
      const A c = s.c[d * ts + k] * inv_l;
      const A e = s.e[d * ts + k];
      dot += c * e;
      cc += c * c;
      ee += e * e;
    }
    dot = warp_sum(dot);
    cc = warp_sum(cc);
    ee = warp_sum(ee);
    if (lane == 0) {
      const A nc = sqrt_(cc), ne = sqrt_(ee);
      s.nc[k] = nc;
      s.ne[k] = ne;
      s.cos[k] = dot / max_(nc * ne, A(kCosEps));
    }
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    damsm_forward_kernel(const T* __restrict__ img_local, const T* __restrict__ words,
                         const int64_t* __restrict__ cap_lens, double gamma1, double gamma2,
                         acc_t<T>* __restrict__ sim, int B, int D, int R, int T_) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ts = static_cast<int>(round_up(T_, 4));
  const Smem<A> s = carve<A>(smem_raw, D, ts, false);
  const int i = blockIdx.x;  // caption
  const int j = blockIdx.y;  // image
  const int L = caption_length(cap_lens, i, T_);
  load_caption(words + static_cast<int64_t>(i) * D * T_, D, T_, L, ts, s);
  attend_regions(img_local + static_cast<int64_t>(j) * D * R, D, R, L, ts,
                 static_cast<A>(gamma1), s);
  cosines(D, L, ts, s);
  if (threadIdx.x < 32) {
    const int k = threadIdx.x;
    const A x = k < L ? static_cast<A>(gamma2) * s.cos[k] : neg_inf<A>();
    const A mx = warp_max(x);
    const A sum = warp_sum(k < L ? exp_(x - mx) : A(0));
    if (k == 0) sim[static_cast<int64_t>(j) * B + i] = mx + log_(sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    damsm_backward_kernel(const acc_t<T>* __restrict__ grad_sim, const T* __restrict__ img_local,
                          const T* __restrict__ words, const int64_t* __restrict__ cap_lens,
                          double gamma1_d, double gamma2_d, acc_t<T>* __restrict__ gv_part,
                          acc_t<T>* __restrict__ ge_acc, int B, int D, int R, int T_) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ts = static_cast<int>(round_up(T_, 4));
  const Smem<A> s = carve<A>(smem_raw, D, ts, true);
  const A gamma1 = static_cast<A>(gamma1_d), gamma2 = static_cast<A>(gamma2_d);
  const A eps = static_cast<A>(kCosEps);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int j = blockIdx.y;  // image
  const T* img_j = img_local + static_cast<int64_t>(j) * D * R;
  A* gv_j = gv_part + (static_cast<int64_t>(blockIdx.x) * B + j) * D * R;

  for (int i = blockIdx.x; i < B; i += gridDim.x) {  // captions of this group
    const A g = grad_sim[static_cast<int64_t>(j) * B + i];
    if (g == A(0)) continue;  // every gradient term of the pair is proportional to g
    const int L = caption_length(cap_lens, i, T_);
    __syncthreads();
    load_caption(words + static_cast<int64_t>(i) * D * T_, D, T_, L, ts, s);
    attend_regions(img_j, D, R, L, ts, gamma1, s);
    cosines(D, L, ts, s);
    // dR_k = g * gamma2 * softmax_k(gamma2 * R)
    if (warp == 0) {
      const A x = lane < L ? gamma2 * s.cos[lane] : neg_inf<A>();
      const A mx = warp_max(x);
      const A ex = lane < L ? exp_(x - mx) : A(0);
      const A sum = warp_sum(ex);
      if (lane < kMaxWords) s.dr[lane] = g * gamma2 * ex / sum;
    }
    __syncthreads();
    // dc[d, k] (zero beyond L) and the partial sums of dk[k] = dc_k . c_k
    {
      A dk_part[kMaxWords];
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) dk_part[k] = A(0);
      for (int d = threadIdx.x; d < D; d += kThreads) {
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          if (k < ts) {
            A dc = A(0);
            if (k < L) {
              const A c = s.c[d * ts + k] / s.l[k];
              const A e = s.e[d * ts + k];
              const A prod = s.nc[k] * s.ne[k];
              const A den = max_(prod, eps);
              const A nc = max_(s.nc[k], eps);
              const A scale_c = prod <= eps ? A(0) : s.cos[k] / (nc * nc);
              dc = s.dr[k] * (e / den - scale_c * c);
              dk_part[k] += dc * c;
            }
            s.dc[d * ts + k] = dc;
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) {
        const A v = warp_sum(dk_part[k]);
        if (lane == 0) s.red[warp * kMaxWords + k] = v;
      }
    }
    __syncthreads();
    if (threadIdx.x < kMaxWords) {
      A v = A(0);
      for (int w = 0; w < kWarps; ++w) v += s.red[w * kMaxWords + threadIdx.x];
      s.dk[threadIdx.x] = v;
    }
    // c becomes the grad_e accumulator, starting at the cosine's gradient de[d, k].
    for (int d = threadIdx.x; d < D; d += kThreads) {
      for (int k = 0; k < L; ++k) {
        const A c = s.c[d * ts + k] / s.l[k];
        const A e = s.e[d * ts + k];
        const A prod = s.nc[k] * s.ne[k];
        const A den = max_(prod, eps);
        const A ne = max_(s.ne[k], eps);
        const A scale_e = prod <= eps ? A(0) : s.cos[k] / (ne * ne);
        s.c[d * ts + k] = s.dr[k] * (c / den - scale_e * e);
      }
    }
    for (int r0 = 0; r0 < R; r0 += kTile) {
      const int rt = min(kTile, R - r0);
      __syncthreads();
      load_tile(img_j, D, R, r0, rt, s.v);
      __syncthreads();
      // scores and d alpha[k, r] = dc_k . v_r
      for (int k0 = 4 * warp; k0 < L; k0 += 4 * kWarps) {
        A sc[4], da[4];
        tile_dot4(s.v, s.e, D, ts, lane, k0, sc);
        tile_dot4(s.v, s.dc, D, ts, lane, k0, da);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (k0 + q < L) {
            s.sc[(k0 + q) * kVStride + lane] = sc[q];
            s.da[(k0 + q) * kVStride + lane] = da[q];
          }
        }
      }
      __syncthreads();
      // per region: a, alpha, then ds through both softmaxes
      if (warp == 0) {
        const int r = lane;
        A a[kMaxWords], dA[kMaxWords];
        A mx = neg_inf<A>();
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          if (k < L) mx = max_(mx, s.sc[k * kVStride + r]);
        }
        A sum = A(0);
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          a[k] = k < L ? exp_(s.sc[k * kVStride + r] - mx) : A(0);
          sum += a[k];
        }
        const A inv = A(1) / sum;
        A a_da = A(0);
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          a[k] *= inv;
          A alpha = A(0);
          dA[k] = A(0);
          if (k < L) {
            alpha = exp_(gamma1 * a[k] - s.m[k]) / s.l[k];
            dA[k] = gamma1 * alpha * (s.da[k * kVStride + r] - s.dk[k]);
          }
          a_da += a[k] * dA[k];
          if (k < ts) s.w[r * ts + k] = r < rt ? alpha : A(0);
        }
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          if (k < ts) s.ds[r * ts + k] = (r < rt && k < L) ? a[k] * (dA[k] - a_da) : A(0);
        }
      }
      __syncthreads();
      // grad_v[d, r0 + r] += sum_k alpha[r, k] dc[d, k] + ds[r, k] e[d, k]: lane = region
      {
        A al[kMaxWords], dsr[kMaxWords];
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          al[k] = k < L ? s.w[lane * ts + k] : A(0);
          dsr[k] = k < L ? s.ds[lane * ts + k] : A(0);
        }
        for (int d = warp; d < D; d += kWarps) {
          A acc = A(0);
#pragma unroll
          for (int q = 0; q < kMaxWords / 4; ++q) {
            if (4 * q < L) {
              A c0, c1, c2, c3, e0, e1, e2, e3;
              load4(s.dc + d * ts + 4 * q, c0, c1, c2, c3);
              load4(s.e + d * ts + 4 * q, e0, e1, e2, e3);
              acc += al[4 * q] * c0 + al[4 * q + 1] * c1 + al[4 * q + 2] * c2 +
                     al[4 * q + 3] * c3 + dsr[4 * q] * e0 + dsr[4 * q + 1] * e1 +
                     dsr[4 * q + 2] * e2 + dsr[4 * q + 3] * e3;
            }
          }
          if (lane < rt) gv_j[static_cast<int64_t>(d) * R + r0 + lane] += acc;
        }
      }
      // grad_e[d, k] += sum_r ds[r, k] v[d, r]: thread per feature
      for (int d = threadIdx.x; d < D; d += kThreads) {
        A acc[kMaxWords];
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) acc[k] = A(0);
        for (int r = 0; r < rt; ++r) {
          const A vv = s.v[d * kVStride + r];
#pragma unroll
          for (int q = 0; q < kMaxWords / 4; ++q) {
            if (4 * q < L) {
              A d0, d1, d2, d3;
              load4(s.ds + r * ts + 4 * q, d0, d1, d2, d3);
              acc[4 * q] += d0 * vv;
              acc[4 * q + 1] += d1 * vv;
              acc[4 * q + 2] += d2 * vv;
              acc[4 * q + 3] += d3 * vv;
            }
          }
        }
#pragma unroll
        for (int k = 0; k < kMaxWords; ++k) {
          if (k < L) s.c[d * ts + k] += acc[k];
        }
      }
    }
    __syncthreads();
    A* ge_i = ge_acc + static_cast<int64_t>(i) * D * T_;
    for (int idx = threadIdx.x; idx < D * L; idx += kThreads) {
      const int d = idx / L;
      const int k = idx - d * L;
      atomicAdd(ge_i + static_cast<int64_t>(d) * T_ + k, s.c[d * ts + k]);
    }
  }
}

// grad_img_local = sum of the group partials (in order); grad_words = the accumulator, cast.
template <typename T>
__global__ void damsm_finish_kernel(const acc_t<T>* __restrict__ gv_part,
                                    const acc_t<T>* __restrict__ ge_acc,
                                    T* __restrict__ grad_img_local, T* __restrict__ grad_words,
                                    int groups, int64_t img_elems, int64_t word_elems) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < img_elems + word_elems; idx += stride) {
    if (idx < img_elems) {
      A v = A(0);
      for (int grp = 0; grp < groups; ++grp) v += gv_part[grp * img_elems + idx];
      store_acc(grad_img_local + idx, v);
    } else {
      store_acc(grad_words + (idx - img_elems), ge_acc[idx - img_elems]);
    }
  }
}

}  // namespace

size_t damsm_shared_bytes(DType dtype, DamsmSizes s, bool backward) {
  const Layout L = make_layout(s.dim, round_up(s.words, 4), backward);
  return static_cast<size_t>(L.total) * acc_bytes(dtype);
}

int damsm_backward_groups(DamsmSizes s, int num_sms) {
  const int64_t want = ceil_div(2 * static_cast<int64_t>(num_sms > 0 ? num_sms : 108), s.batch);
  return static_cast<int>(want < 1 ? 1 : (want < s.batch ? want : s.batch));
}

size_t damsm_backward_workspace(DType dtype, DamsmSizes s, int num_sms) {
  const int64_t img = s.batch * s.dim * s.regions;
  const int64_t wrd = s.batch * s.dim * s.words;
  return static_cast<size_t>(damsm_backward_groups(s, num_sms) * img + wrd) * acc_bytes(dtype);
}

cudaError_t damsm_forward(DType dtype, const void* img_local, const void* words,
                          const int64_t* cap_lens, double gamma1, double gamma2, void* sim,
                          DamsmSizes s, cudaStream_t stream) {
  if (s.words > kMaxWords) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const size_t smem = damsm_shared_bytes(dtype, s, false);
    ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(damsm_forward_kernel<T>, smem));
    const dim3 grid(static_cast<unsigned>(s.batch), static_cast<unsigned>(s.batch));
    damsm_forward_kernel<T><<<grid, kThreads, smem, stream>>>(
        static_cast<const T*>(img_local), static_cast<const T*>(words), cap_lens, gamma1, gamma2,
        static_cast<acc_t<T>*>(sim), static_cast<int>(s.batch), static_cast<int>(s.dim),
        static_cast<int>(s.regions), static_cast<int>(s.words));
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

cudaError_t damsm_backward(DType dtype, const void* grad_sim, const void* img_local,
                           const void* words, const int64_t* cap_lens, double gamma1,
                           double gamma2, void* grad_img_local, void* grad_words, void* workspace,
                           DamsmSizes s, int num_sms, cudaStream_t stream) {
  if (s.words > kMaxWords) return cudaErrorInvalidValue;
  ATTNGAN_RETURN_IF_ERROR(
      cudaMemsetAsync(workspace, 0, damsm_backward_workspace(dtype, s, num_sms), stream));
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int groups = damsm_backward_groups(s, num_sms);
    const int64_t img = s.batch * s.dim * s.regions;
    A* gv_part = static_cast<A*>(workspace);
    A* ge_acc = gv_part + groups * img;
    const size_t smem = damsm_shared_bytes(dtype, s, true);
    ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(damsm_backward_kernel<T>, smem));
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(s.batch));
    damsm_backward_kernel<T><<<grid, kThreads, smem, stream>>>(
        static_cast<const A*>(grad_sim), static_cast<const T*>(img_local),
        static_cast<const T*>(words), cap_lens, gamma1, gamma2, gv_part, ge_acc,
        static_cast<int>(s.batch), static_cast<int>(s.dim), static_cast<int>(s.regions),
        static_cast<int>(s.words));
    ATTNGAN_CHECK_LAUNCH();
    const int64_t wrd = s.batch * s.dim * s.words;
    const int64_t blocks = ceil_div(img + wrd, 256);
    damsm_finish_kernel<T><<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0,
                             stream>>>(gv_part, ge_acc, static_cast<T*>(grad_img_local),
                                       static_cast<T*>(grad_words), groups, img, wrd);
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

}  // namespace attngan
