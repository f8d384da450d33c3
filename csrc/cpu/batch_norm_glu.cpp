// Fused BatchNorm + GLU on pixel rows (see batch_norm_glu.h). The rows are processed in tiles of
// about kTile floats, converted to float32 on the way in; per-channel parameters are repeated
// over a tile's rows so that the normalisation is one flat loop, and the GLU loops are compiled
// for the common half widths (4 ... 64 channels) so that they vectorise too. Threads: torch's
// intra-op pool (at::parallel_for), one partial sum per chunk of rows, added in float64.
#include "batch_norm_glu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace attngan_cpu {
namespace {

constexpr int64_t kTile = 2048;  // floats per tile buffer
constexpr int64_t kFold = 32;    // tiles summed in float32 before they are added in float64

// exp(x), branch-free so that loops over it vectorise: Cody-Waite range reduction and a degree-6
// polynomial (relative error below 2e-7 on [-87, 88]; x is clamped to that range).
inline float vexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return p * scale;
}

inline float sigmoid(float g) { return 1.0f / (1.0f + vexp(-g)); }

template <typename T>
inline void to_float(const T* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <typename T>
inline void from_float(const float* __restrict src, T* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

// A per-channel vector (C2 floats) repeated over `rows` rows.
std::vector<float> tiled(const float* v, int64_t C2, int64_t rows) {
  std::vector<float> t(rows * C2);
  for (int64_t r = 0; r < rows; ++r) std::copy(v, v + C2, t.begin() + r * C2);
  return t;
}

// Rows per tile for C2 channels.
int64_t tile_rows(int64_t C2) { return std::max<int64_t>(1, kTile / C2); }

// Chunks of rows with their own partial sums: one per thread, none smaller than 256 rows.
int64_t chunk_count(int64_t P) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), P / 256));
}

// Adds the tile-shaped float32 accumulators into per-channel float64 sums and clears them.
void fold(std::vector<float>& acc, int64_t C2, double* sums) {
  for (size_t i = 0; i < acc.size(); ++i) sums[i % C2] += acc[i];
  std::fill(acc.begin(), acc.end(), 0.0f);
}

// The GLU of each row [a | g] of z (rows x 2C floats): out (rows x C) = a * sigmoid(g).
// KC > 0 fixes C at compile time (the per-row loops then vectorise); KC == 0 reads it from C_.
template <int KC>
inline void glu_rows(const float* __restrict z, float* __restrict out, int64_t rows, int64_t C_) {
  const int64_t C = KC > 0 ? KC : C_;
  for (int64_t p = 0; p < rows; ++p) {
    const float* __restrict zr = z + p * 2 * C;
    float* __restrict o = out + p * C;
    for (int64_t c = 0; c < C; ++c) o[c] = zr[c] * sigmoid(zr[C + c]);
  }
}

// The GLU's gradient (rows x 2C) for grad_y (rows x C) at z (rows x 2C).
template <int KC>
inline void glu_grad_rows(const float* __restrict z, const float* __restrict gy,
                          float* __restrict gz, int64_t rows, int64_t C_) {
  const int64_t C = KC > 0 ? KC : C_;
  for (int64_t p = 0; p < rows; ++p) {
    const float* __restrict zr = z + p * 2 * C;
    const float* __restrict g = gy + p * C;
    float* __restrict o = gz + p * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      const float s = sigmoid(zr[C + c]);
      o[c] = g[c] * s;
      o[C + c] = g[c] * zr[c] * s * (1.0f - s);
    }
  }
}

// Sums over the P rows of x of (x - shift) and (x - shift)^2 per channel, in float64 (the shift,
// one row of x, keeps the variance free of cancellation when |mean| >> std).
template <typename T>
void shifted_sums(const T* x, int64_t P, int64_t C2, const float* shift, double* s1, double* s2) {
  const int64_t R = tile_rows(C2), L = R * C2;
  const std::vector<float> sh = tiled(shift, C2, R);
  const int64_t chunks = chunk_count(P);
  std::vector<double> part(chunks * 2 * C2, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> buf(L), a1(L, 0.0f), a2(L, 0.0f);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = P * k / chunks, r1 = P * (k + 1) / chunks;
      double* d1 = part.data() + k * 2 * C2;
      int64_t tiles = 0;
      for (int64_t r = r0; r < r1; r += R) {
        const int64_t n = std::min(R, r1 - r) * C2;
        to_float(x + r * C2, buf.data(), n);
        const float* __restrict b = buf.data();
        const float* __restrict shp = sh.data();
        float* __restrict q1 = a1.data();
        float* __restrict q2 = a2.data();
        for (int64_t i = 0; i < n; ++i) {
          const float d = b[i] - shp[i];
          q1[i] += d;
          q2[i] += d * d;
        }
        if (++tiles == kFold || r + R >= r1) {
          fold(a1, C2, d1);
          fold(a2, C2, d1 + C2);
          tiles = 0;
        }
      }
    }
  });
  std::fill(s1, s1 + C2, 0.0);
  std::fill(s2, s2 + C2, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t c = 0; c < C2; ++c) {
      s1[c] += part[k * 2 * C2 + c];
      s2[c] += part[k * 2 * C2 + C2 + c];
    }
  }
}

template <typename T, int KC>
void forward_impl(const T* x, T* y, int64_t P, int64_t C2, bool training, float* mean, float* var,
                  const float* w, const float* b, float eps) {
  const int64_t C = C2 / 2;
  if (training) {
    std::vector<float> shift(C2);
    to_float(x, shift.data(), C2);
    std::vector<double> s1(C2), s2(C2);
    shifted_sums(x, P, C2, shift.data(), s1.data(), s2.data());
    for (int64_t c = 0; c < C2; ++c) {
      const double d = s1[c] / P;
      mean[c] = static_cast<float>(shift[c] + d);
      var[c] = static_cast<float>(std::max(0.0, s2[c] / P - d * d));
    }
  }
  std::vector<float> scale(C2), shift(C2);
  for (int64_t c = 0; c < C2; ++c) {
    scale[c] = w[c] / std::sqrt(var[c] + eps);
    shift[c] = b[c] - mean[c] * scale[c];
  }
  const int64_t R = tile_rows(C2);
  const std::vector<float> sc = tiled(scale.data(), C2, R), sh = tiled(shift.data(), C2, R);
  at::parallel_for(0, (P + R - 1) / R, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> z(R * C2), out(R * C);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t * R, rows = std::min(R, P - r), n = rows * C2;
      to_float(x + r * C2, z.data(), n);
      float* __restrict zp = z.data();
      const float* __restrict a = sc.data();
      const float* __restrict s = sh.data();
      for (int64_t i = 0; i < n; ++i) zp[i] = zp[i] * a[i] + s[i];
      glu_rows<KC>(zp, out.data(), rows, C);
      from_float(out.data(), y + r * C, rows * C);
    }
  });
}

template <typename T, int KC>
void backward_impl(const T* gy, const T* x, T* gx, int64_t P, int64_t C2, bool training,
                   const float* mean, const float* var, const float* w, const float* b, float eps,
                   float* gw, float* gb) {
  const int64_t C = C2 / 2, R = tile_rows(C2), L = R * C2;
  std::vector<float> invstd(C2), scale(C2), shift(C2);
  for (int64_t c = 0; c < C2; ++c) {
    invstd[c] = 1.0f / std::sqrt(var[c] + eps);
    scale[c] = w[c] * invstd[c];
    shift[c] = b[c] - mean[c] * scale[c];
  }
  const std::vector<float> sc = tiled(scale.data(), C2, R), sh = tiled(shift.data(), C2, R);
  const std::vector<float> mt = tiled(mean, C2, R), it = tiled(invstd.data(), C2, R);
  // One tile's GLU gradient gz (into xf's place: z) and normalised map xh, from x and grad_y.
  auto tile_grads = [&](int64_t r, int64_t rows, float* xf, float* gyf, float* gz, float* xh) {
    const int64_t n = rows * C2;
    to_float(x + r * C2, xf, n);
    to_float(gy + r * C, gyf, rows * C);
    const float* __restrict a = sc.data();
    const float* __restrict s = sh.data();
    const float* __restrict m = mt.data();
    const float* __restrict is = it.data();
    for (int64_t i = 0; i < n; ++i) {
      xh[i] = (xf[i] - m[i]) * is[i];
      xf[i] = xf[i] * a[i] + s[i];
    }
    glu_grad_rows<KC>(xf, gyf, gz, rows, C);
  };
  // Pass 1: per channel, the sums of gz and gz * xhat.
  const int64_t chunks = chunk_count(P);
  std::vector<double> part(chunks * 2 * C2, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> xf(L), gyf(R * C), gz(L), xh(L), a1(L, 0.0f), a2(L, 0.0f);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = P * k / chunks, r1 = P * (k + 1) / chunks;
      double* d1 = part.data() + k * 2 * C2;
      int64_t tiles = 0;
      for (int64_t r = r0; r < r1; r += R) {
        const int64_t rows = std::min(R, r1 - r), n = rows * C2;
        tile_grads(r, rows, xf.data(), gyf.data(), gz.data(), xh.data());
        const float* __restrict g = gz.data();
        const float* __restrict h = xh.data();
        float* __restrict q1 = a1.data();
        float* __restrict q2 = a2.data();
        for (int64_t i = 0; i < n; ++i) {
          q1[i] += g[i];
          q2[i] += g[i] * h[i];
        }
        if (++tiles == kFold || r + R >= r1) {
          fold(a1, C2, d1);
          fold(a2, C2, d1 + C2);
          tiles = 0;
        }
      }
    }
  });
  std::vector<double> sum_gz(C2, 0.0), sum_gzx(C2, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t c = 0; c < C2; ++c) {
      sum_gz[c] += part[k * 2 * C2 + c];
      sum_gzx[c] += part[k * 2 * C2 + C2 + c];
    }
  }
  // Pass 2: grad_x = w invstd (gz - mean(gz) - xhat mean(gz xhat)) in training, w invstd gz in eval.
  std::vector<float> k2(C2), k3(C2);
  for (int64_t c = 0; c < C2; ++c) {
    gw[c] = static_cast<float>(sum_gzx[c]);
    gb[c] = static_cast<float>(sum_gz[c]);
    k2[c] = training ? static_cast<float>(sum_gz[c] / P) : 0.0f;
    k3[c] = training ? static_cast<float>(sum_gzx[c] / P) : 0.0f;
  }
  const std::vector<float> k2t = tiled(k2.data(), C2, R), k3t = tiled(k3.data(), C2, R);
  at::parallel_for(0, (P + R - 1) / R, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> xf(L), gyf(R * C), gz(L), xh(L);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t * R, rows = std::min(R, P - r), n = rows * C2;
      tile_grads(r, rows, xf.data(), gyf.data(), gz.data(), xh.data());
      float* __restrict o = xf.data();
      const float* __restrict g = gz.data();
      const float* __restrict h = xh.data();
      const float* __restrict q1 = sc.data();
      const float* __restrict q2 = k2t.data();
      const float* __restrict q3 = k3t.data();
      for (int64_t i = 0; i < n; ++i) o[i] = q1[i] * (g[i] - q2[i] - h[i] * q3[i]);
      from_float(o, gx + r * C2, n);
    }
  });
}

// The forward / backward instance for a half width C: a compiled-in C for 4 ... 64, else runtime.
template <typename T>
auto forward_for(int64_t C) {
  switch (C) {
    case 4: return &forward_impl<T, 4>;
    case 8: return &forward_impl<T, 8>;
    case 16: return &forward_impl<T, 16>;
    case 32: return &forward_impl<T, 32>;
    case 64: return &forward_impl<T, 64>;
    default: return &forward_impl<T, 0>;
  }
}

template <typename T>
auto backward_for(int64_t C) {
  switch (C) {
    case 4: return &backward_impl<T, 4>;
    case 8: return &backward_impl<T, 8>;
    case 16: return &backward_impl<T, 16>;
    case 32: return &backward_impl<T, 32>;
    case 64: return &backward_impl<T, 64>;
    default: return &backward_impl<T, 0>;
  }
}

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_glu_rows_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean,
    const at::Tensor& var, bool training, double eps) {
  const int64_t P = x.size(0), C2 = x.size(1);
  const auto opts = x.options().dtype(at::kFloat);
  at::Tensor m = training ? at::empty({C2}, opts) : f32(mean).clone();
  at::Tensor v = training ? at::empty({C2}, opts) : f32(var).clone();
  at::Tensor y = at::empty({P, C2 / 2}, x.options());
  const at::Tensor w = f32(weight), b = f32(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "batch_norm_glu_rows_forward", [&] {
    forward_for<scalar_t>(C2 / 2)(x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), P, C2,
                                  training, m.data_ptr<float>(), v.data_ptr<float>(),
                                  w.const_data_ptr<float>(), b.const_data_ptr<float>(),
                                  static_cast<float>(eps));
  });
  return {y, m, v};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_glu_rows_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& var, bool training, double eps) {
  const int64_t P = x.size(0), C2 = x.size(1);
  at::Tensor gx = at::empty({P, C2}, x.options());
  at::Tensor gw = at::empty({C2}, x.options().dtype(at::kFloat));
  at::Tensor gb = at::empty({C2}, x.options().dtype(at::kFloat));
  const at::Tensor w = f32(weight), b = f32(bias), m = f32(mean), v = f32(var);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "batch_norm_glu_rows_backward", [&] {
    backward_for<scalar_t>(C2 / 2)(grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                   gx.data_ptr<scalar_t>(), P, C2, training, m.const_data_ptr<float>(),
                                   v.const_data_ptr<float>(), w.const_data_ptr<float>(),
                                   b.const_data_ptr<float>(), static_cast<float>(eps),
                                   gw.data_ptr<float>(), gb.data_ptr<float>());
  });
  return {gx, gw, gb};
}

}  // namespace attngan_cpu
