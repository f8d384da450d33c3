// word_attention: softmax over words of query . source per (sample, region), as the original's
// GlobalAttentionGeneral (code/GlobalAttention.py of taoxugit/AttnGAN).
//
// Forward: a block per (sample b, tile of 128 regions), one thread per region (with regions
// innermost every global access is coalesced; with channels innermost, a channels-last map, each
// thread walks its region's contiguous channels and the lines are reused through L1). Query,
// context, grad_context and grad_query are addressed through their shared strides (sb, sc, sn). The sample's
// source is staged in shared memory in chunks of 32 words; a thread keeps its 32 scores in
// registers. T <= 32: one pass (scores -> lse -> probabilities -> context). T > 32: pass 1 an online
// log-sum-exp over the chunks, pass 2 recomputes each chunk's scores and accumulates the context
// in an fp32 (fp64) workspace.
//
// Backward (deterministic, no atomics): a block per (sample, slice of region tiles of 64 regions),
// one thread per region for the row part (p, dp, ds, grad_query); the block stages q, grad_context,
// p and ds of its tile in shared memory and reduces grad_source = G P^T + Q dS^T over its regions
// into per-block partials, which a last kernel sums in a fixed order. For T > 32 a row kernel first
// computes rowdot = sum_t p dp and grad_query over the word chunks.
#include "common.cuh"

namespace attngan {
namespace {

constexpr int kWordChunk = 32;     // words per chunk (scores of one chunk live in registers)
constexpr int kFwdThreads = 128;   // regions per forward block
constexpr int kBwdThreads = 64;    // regions per backward tile
constexpr int kTileStride = kBwdThreads + 1;  // padded row of the q / grad tiles (no bank conflicts)

struct Chunk {
  int t0, tw, tws;  // first word, words in the chunk, padded row length (multiple of 4)
};

__device__ __forceinline__ Chunk chunk_at(int index, int words) {
  Chunk c;
  c.t0 = index * kWordChunk;
  c.tw = min(kWordChunk, words - c.t0);
  c.tws = (c.tw + 3) & ~3;
  return c;
}

__host__ __device__ inline int padded_chunk(int64_t words) {
  return static_cast<int>(round_up(words < kWordChunk ? words : kWordChunk, 4));
}

// s_sh[c * tws + t] = source[b, c, t0 + t] (zeros beyond the chunk). Whole block.
template <typename T, typename A>
__device__ void load_source_chunk(const T* src_b, int C, int T_, Chunk ch, A* s_sh) {
  for (int idx = threadIdx.x; idx < C * ch.tws; idx += blockDim.x) {
    const int c = idx / ch.tws;
    const int t = idx - c * ch.tws;
    s_sh[idx] = t < ch.tw ? load_acc(src_b + static_cast<int64_t>(c) * T_ + ch.t0 + t) : A(0);
  }
}

// out[t] = sum_c col[c * sc] * s_sh[c * tws + t] for t < tw (col is one region's column of a
// B x C x N tensor, channel stride sc). Optionally stores the column (as A) in
// stage[c * kTileStride].
template <typename T, typename A>
__device__ __forceinline__ void column_dot(const T* col, int64_t sc, int C, bool valid,
                                           const A* s_sh, Chunk ch, A (&out)[kWordChunk],
                                           A* stage) {
#pragma unroll
  for (int t = 0; t < kWordChunk; ++t) out[t] = A(0);
  for (int c = 0; c < C; ++c) {
    const A v = valid ? load_acc(col + static_cast<int64_t>(c) * sc) : A(0);
    if (stage != nullptr) stage[c * kTileStride] = v;
    const A* row = s_sh + c * ch.tws;
#pragma unroll
    for (int j = 0; j < kWordChunk / 4; ++j) {
      if (4 * j < ch.tw) {
        A s0, s1, s2, s3;
        load4(row + 4 * j, s0, s1, s2, s3);
        out[4 * j] += v * s0;
        out[4 * j + 1] += v * s1;
        out[4 * j + 2] += v * s2;
        out[4 * j + 3] += v * s3;
      }
    }
  }
}

// sum_t p[t] * s_sh[c * tws + t] over the chunk.
template <typename A>
__device__ __forceinline__ A row_dot(const A (&p)[kWordChunk], const A* row, Chunk ch) {
  A acc = A(0);
#pragma unroll
  for (int j = 0; j < kWordChunk / 4; ++j) {
    if (4 * j < ch.tw) {
      A s0, s1, s2, s3;
      load4(row + 4 * j, s0, s1, s2, s3);
      acc += p[4 * j] * s0 + p[4 * j + 1] * s1 + p[4 * j + 2] * s2 + p[4 * j + 3] * s3;
    }
  }
  return acc;
}

// Scores of masked words (and words beyond the chunk) become -inf.
template <typename A>
__device__ __forceinline__ void apply_mask(A (&sc)[kWordChunk], const bool* mrow, Chunk ch) {
#pragma unroll
  for (int t = 0; t < kWordChunk; ++t) {
    const bool ok = t < ch.tw && (mrow == nullptr || !mrow[ch.t0 + t]);
    if (!ok) sc[t] = neg_inf<A>();
  }
}

// The mask row of (sample b, region n): per sample, or the original's (b * N + n) mod B.
__device__ __forceinline__ const bool* mask_row(const bool* mask, bool legacy, int b, int B,
                                                int64_t n, int64_t N, int T_) {
  if (mask == nullptr) return nullptr;
  const int64_t row = legacy ? (static_cast<int64_t>(b) * N + n) % B : b;
  return mask + row * T_;
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    wa_forward_kernel(const T* __restrict__ query, const T* __restrict__ source,
                      const bool* __restrict__ mask, bool legacy, T* __restrict__ context,
                      T* __restrict__ attn, acc_t<T>* __restrict__ lse, acc_t<T>* __restrict__ ws,
                      int B, int C, int64_t N, int T_, int64_t qsb, int64_t qsc, int64_t qsn) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* s_sh = reinterpret_cast<A*>(smem_raw);
  const int b = blockIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kFwdThreads + threadIdx.x;
  const bool valid = n < N;
  const int nchunks = (T_ + kWordChunk - 1) / kWordChunk;
  const int64_t q_off = static_cast<int64_t>(b) * qsb + (valid ? n : 0) * qsn;
  const T* q_col = query + q_off;
  const T* src_b = source + static_cast<int64_t>(b) * C * T_;
  const bool* mrow = mask_row(mask, legacy, b, B, valid ? n : 0, N, T_);

  A sc[kWordChunk];
  A m = neg_inf<A>();
  A l = A(0);
  for (int k = 0; k < nchunks; ++k) {  // pass 1: log-sum-exp of the masked scores
    const Chunk ch = chunk_at(k, T_);
    __syncthreads();
    load_source_chunk(src_b, C, T_, ch, s_sh);
    __syncthreads();
    column_dot(q_col, qsc, C, valid, s_sh, ch, sc, static_cast<A*>(nullptr));
    apply_mask(sc, mrow, ch);
    A cm = neg_inf<A>();
#pragma unroll
    for (int t = 0; t < kWordChunk; ++t) cm = max_(cm, sc[t]);
    if (cm != neg_inf<A>()) {
      const A m_new = max_(m, cm);
      A sum = A(0);
#pragma unroll
      for (int t = 0; t < kWordChunk; ++t) sum += exp_(sc[t] - m_new);
      l = l * exp_(m - m_new) + sum;
      m = m_new;
    }
  }
  const A row_lse = l > A(0) ? m + log_(l) : pos_inf<A>();
  if (valid) lse[static_cast<int64_t>(b) * N + n] = row_lse;

  for (int k = 0; k < nchunks; ++k) {  // pass 2: probabilities, attn, context
    const Chunk ch = chunk_at(k, T_);
    if (nchunks > 1) {
      __syncthreads();
      load_source_chunk(src_b, C, T_, ch, s_sh);
      __syncthreads();
      column_dot(q_col, qsc, C, valid, s_sh, ch, sc, static_cast<A*>(nullptr));
      apply_mask(sc, mrow, ch);
    }
#pragma unroll
    for (int t = 0; t < kWordChunk; ++t) sc[t] = exp_(sc[t] - row_lse);  // 0 if masked or empty
    if (!valid) continue;
    if (attn != nullptr) {
      T* a_col = attn + (static_cast<int64_t>(b) * T_ + ch.t0) * N + n;
#pragma unroll
      for (int t = 0; t < kWordChunk; ++t) {
        if (t < ch.tw) store_acc(a_col + static_cast<int64_t>(t) * N, sc[t]);
      }
    }
    for (int c = 0; c < C; ++c) {
      A v = row_dot(sc, s_sh + c * ch.tws, ch);
      const int64_t at = q_off + static_cast<int64_t>(c) * qsc;   // context: query's strides
      const int64_t wat = (static_cast<int64_t>(b) * C + c) * N + n;  // workspace: B x C x N
      if (nchunks == 1) {
        store_acc(context + at, v);
      } else {
        if (k > 0) v += ws[wat];
        if (k == nchunks - 1) {
          store_acc(context + at, v);
        } else {
          ws[wat] = v;
        }
      }
    }
  }
}

// p (probabilities) and dp (d loss / d p) of one region over one word chunk.
template <typename T, typename A>
__device__ __forceinline__ void region_probs(const T* q_col, const T* g_col, const T* ga_col,
                                             int64_t N, int64_t qsc, int C, bool valid,
                                             const A* s_sh, Chunk ch, const bool* mrow, A row_lse,
                                             A (&p)[kWordChunk], A (&dp)[kWordChunk], A* q_stage,
                                             A* g_stage) {
  column_dot(q_col, qsc, C, valid, s_sh, ch, p, q_stage);
  apply_mask(p, mrow, ch);
#pragma unroll
  for (int t = 0; t < kWordChunk; ++t) p[t] = exp_(p[t] - row_lse);
  column_dot(g_col, qsc, C, valid, s_sh, ch, dp, g_stage);
  if (ga_col != nullptr && valid) {
#pragma unroll
    for (int t = 0; t < kWordChunk; ++t) {
      if (t < ch.tw) dp[t] += load_acc(ga_col + static_cast<int64_t>(ch.t0 + t) * N);
    }
  }
}

// T > 32 only: rowdot[b, n] = sum_t p dp over all words, and grad_query (via the workspace).
template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    wa_backward_rows_kernel(const T* __restrict__ grad_context, const T* __restrict__ grad_attn,
                            const T* __restrict__ query, const T* __restrict__ source,
                            const bool* __restrict__ mask, bool legacy,
                            const acc_t<T>* __restrict__ lse, acc_t<T>* __restrict__ rowdot,
                            acc_t<T>* __restrict__ ws, T* __restrict__ grad_query, int B, int C,
                            int64_t N, int T_, int64_t qsb, int64_t qsc, int64_t qsn) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* s_sh = reinterpret_cast<A*>(smem_raw);
  const int b = blockIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kFwdThreads + threadIdx.x;
  const bool valid = n < N;
  const int nchunks = (T_ + kWordChunk - 1) / kWordChunk;
  const int64_t off = static_cast<int64_t>(b) * qsb + (valid ? n : 0) * qsn;  // query's strides
  const int64_t ws_off = static_cast<int64_t>(b) * C * N + n;  // the B x C x N workspace
  const T* ga_col = grad_attn ? grad_attn + static_cast<int64_t>(b) * T_ * N + n : nullptr;
  const T* src_b = source + static_cast<int64_t>(b) * C * T_;
  const bool* mrow = mask_row(mask, legacy, b, B, valid ? n : 0, N, T_);
  const A row_lse = valid ? lse[static_cast<int64_t>(b) * N + n] : pos_inf<A>();

  A p[kWordChunk], dp[kWordChunk];
  A dot = A(0);
  for (int k = 0; k < nchunks; ++k) {
    const Chunk ch = chunk_at(k, T_);
    __syncthreads();
    load_source_chunk(src_b, C, T_, ch, s_sh);
    __syncthreads();
    region_probs(query + off, grad_context + off, ga_col, N, qsc, C, valid, s_sh, ch, mrow,
                 row_lse, p, dp, static_cast<A*>(nullptr), static_cast<A*>(nullptr));
#pragma unroll
    for (int t = 0; t < kWordChunk; ++t) dot += p[t] * dp[t];
  }
  if (valid) rowdot[static_cast<int64_t>(b) * N + n] = dot;
  for (int k = 0; k < nchunks; ++k) {
    const Chunk ch = chunk_at(k, T_);
    __syncthreads();
    load_source_chunk(src_b, C, T_, ch, s_sh);
    __syncthreads();
    region_probs(query + off, grad_context + off, ga_col, N, qsc, C, valid, s_sh, ch, mrow,
                 row_lse, p, dp, static_cast<A*>(nullptr), static_cast<A*>(nullptr));
    if (!valid) continue;
#pragma unroll
    for (int t = 0; t < kWordChunk; ++t) p[t] = p[t] * (dp[t] - dot);  // ds
    for (int c = 0; c < C; ++c) {
      const int64_t wat = ws_off + static_cast<int64_t>(c) * N;
      A v = row_dot(p, s_sh + c * ch.tws, ch);
      if (k > 0) v += ws[wat];
      if (k == nchunks - 1) {
        store_acc(grad_query + off + static_cast<int64_t>(c) * qsc, v);
      } else {
        ws[wat] = v;
      }
    }
  }
}

// Per-block partial of grad_source over a slice of region tiles; with kFused (T <= 32) also the
// row part (rowdot and grad_query) in the same pass.
template <typename T, bool kFused>
__global__ void __launch_bounds__(kBwdThreads)
    wa_backward_kernel(const T* __restrict__ grad_context, const T* __restrict__ grad_attn,
                       const T* __restrict__ query, const T* __restrict__ source,
                       const bool* __restrict__ mask, bool legacy,
                       const acc_t<T>* __restrict__ lse, const acc_t<T>* __restrict__ rowdot,
                       T* __restrict__ grad_query, acc_t<T>* __restrict__ partial, int B, int C,
                       int64_t N, int T_, int64_t qsb, int64_t qsc, int64_t qsn) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int tws_max = padded_chunk(T_);
  const int groups = C < kBwdThreads ? kBwdThreads / C : 1;
  A* s_sh = reinterpret_cast<A*>(smem_raw);               // C x tws
  A* q_sh = s_sh + round_up(C * tws_max, 4);              // C x kTileStride
  A* g_sh = q_sh + round_up(C * kTileStride, 4);          // C x kTileStride
  A* p_sh = g_sh + round_up(C * kTileStride, 4);          // kBwdThreads x tws
  A* ds_sh = p_sh + kBwdThreads * tws_max;                // kBwdThreads x tws
  A* acc_sh = ds_sh + kBwdThreads * tws_max;              // groups x C x tws
  const int b = blockIdx.y;
  const int tid = threadIdx.x;
  const int64_t ntiles = (N + kBwdThreads - 1) / kBwdThreads;
  const int nchunks = (T_ + kWordChunk - 1) / kWordChunk;
  const T* src_b = source + static_cast<int64_t>(b) * C * T_;

  for (int k = 0; k < nchunks; ++k) {
    const Chunk ch = chunk_at(k, T_);
    __syncthreads();
    load_source_chunk(src_b, C, T_, ch, s_sh);
    for (int idx = tid; idx < groups * C * ch.tws; idx += kBwdThreads) acc_sh[idx] = A(0);
    __syncthreads();
    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
      // Row part: one thread per region.
      const int64_t n = tile * kBwdThreads + tid;
      const bool valid = n < N;
      const int64_t off = static_cast<int64_t>(b) * qsb + (valid ? n : 0) * qsn;
      const T* ga_col = grad_attn ? grad_attn + static_cast<int64_t>(b) * T_ * N + n : nullptr;
      const bool* mrow = mask_row(mask, legacy, b, B, valid ? n : 0, N, T_);
      const A row_lse = valid ? lse[static_cast<int64_t>(b) * N + n] : pos_inf<A>();
      A p[kWordChunk], dp[kWordChunk];
      region_probs(query + off, grad_context + off, ga_col, N, qsc, C, valid, s_sh, ch, mrow,
                   row_lse, p, dp, q_sh + tid, g_sh + tid);
      A dot = A(0);
      if (kFused) {
#pragma unroll
        for (int t = 0; t < kWordChunk; ++t) dot += p[t] * dp[t];
      } else if (valid) {
        dot = rowdot[static_cast<int64_t>(b) * N + n];
      }
#pragma unroll
      for (int t = 0; t < kWordChunk; ++t) dp[t] = p[t] * (dp[t] - dot);  // ds
      if (kFused && valid) {
        for (int c = 0; c < C; ++c) {
          store_acc(grad_query + off + static_cast<int64_t>(c) * qsc,
                    row_dot(dp, s_sh + c * ch.tws, ch));
        }
      }
#pragma unroll
      for (int t = 0; t < kWordChunk; ++t) {
        if (t < ch.tws) {
          p_sh[tid * ch.tws + t] = t < ch.tw ? p[t] : A(0);
          ds_sh[tid * ch.tws + t] = t < ch.tw ? dp[t] : A(0);
        }
      }
      __syncthreads();
      // grad_source[c, t] += sum_r g[c, r] p[r, t] + q[c, r] ds[r, t]: task (group, c).
      for (int task = tid; task < groups * C; task += kBwdThreads) {
        const int c = task % C;
        const int grp = task / C;
        A acc[kWordChunk];
#pragma unroll
        for (int t = 0; t < kWordChunk; ++t) acc[t] = A(0);
        for (int r = grp; r < kBwdThreads; r += groups) {
          const A gv = g_sh[c * kTileStride + r];
          const A qv = q_sh[c * kTileStride + r];
          const A* pr = p_sh + r * ch.tws;
          const A* dr = ds_sh + r * ch.tws;
#pragma unroll
          for (int j = 0; j < kWordChunk / 4; ++j) {
            if (4 * j < ch.tw) {
              A p0, p1, p2, p3, d0, d1, d2, d3;
              load4(pr + 4 * j, p0, p1, p2, p3);
              load4(dr + 4 * j, d0, d1, d2, d3);
              acc[4 * j] += gv * p0 + qv * d0;
              acc[4 * j + 1] += gv * p1 + qv * d1;
              acc[4 * j + 2] += gv * p2 + qv * d2;
              acc[4 * j + 3] += gv * p3 + qv * d3;
            }
          }
        }
        A* out = acc_sh + (grp * C + c) * ch.tws;
#pragma unroll
        for (int t = 0; t < kWordChunk; ++t) {
          if (t < ch.tw) out[t] += acc[t];
        }
      }
      __syncthreads();
    }
    // This block's partial for the chunk, groups summed in order.
    for (int idx = tid; idx < C * ch.tw; idx += kBwdThreads) {
      const int c = idx / ch.tw;
      const int t = idx - c * ch.tw;
      A v = A(0);
      for (int grp = 0; grp < groups; ++grp) v += acc_sh[(grp * C + c) * ch.tws + t];
      partial[((static_cast<int64_t>(b) * gridDim.x + blockIdx.x) * C + c) * T_ + ch.t0 + t] = v;
    }
  }
}

// grad_source[b, c, t] = sum over the grid_x partials, in order.
template <typename T>
__global__ void wa_reduce_source_kernel(const acc_t<T>* __restrict__ partial,
                                        T* __restrict__ grad_source, int B, int C, int T_,
                                        int grid_x) {
  using A = acc_t<T>;
  const int64_t total = static_cast<int64_t>(B) * C * T_;
  const int64_t per_sample = static_cast<int64_t>(C) * T_;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / per_sample;
    const int64_t ct = idx - b * per_sample;
    A v = A(0);
    for (int x = 0; x < grid_x; ++x) v += partial[(b * grid_x + x) * per_sample + ct];
    store_acc(grad_source + idx, v);
  }
}

int backward_grid_x(WordAttentionSizes s, int num_sms) {
  const int64_t ntiles = ceil_div(s.regions, kBwdThreads);
  const int64_t want = ceil_div(static_cast<int64_t>(num_sms > 0 ? num_sms : 108) * 8, s.batch);
  return static_cast<int>(want < 1 ? 1 : (want < ntiles ? want : ntiles));
}

int backward_groups(int64_t channels) {
  return channels < kBwdThreads ? static_cast<int>(kBwdThreads / channels) : 1;
}

}  // namespace

size_t word_attention_shared_bytes(DType dtype, WordAttentionSizes s, bool backward) {
  const int64_t tws = padded_chunk(s.words);
  const int64_t C = s.channels;
  if (!backward) return static_cast<size_t>(C * tws) * acc_bytes(dtype);
  const int64_t elems = round_up(C * tws, 4) + 2 * round_up(C * kTileStride, 4) +
                        2 * kBwdThreads * tws + backward_groups(C) * C * tws;
  const size_t rows = static_cast<size_t>(C * tws) * acc_bytes(dtype);  // the T > 32 row kernel
  const size_t fused = static_cast<size_t>(elems) * acc_bytes(dtype);
  return fused > rows ? fused : rows;
}

size_t word_attention_forward_workspace(DType dtype, WordAttentionSizes s) {
  if (s.words <= kWordChunk) return 0;
  return static_cast<size_t>(s.batch * s.channels * s.regions) * acc_bytes(dtype);
}

size_t word_attention_backward_workspace(DType dtype, WordAttentionSizes s, int num_sms) {
  size_t elems = static_cast<size_t>(s.batch) * backward_grid_x(s, num_sms) * s.channels * s.words;
  if (s.words > kWordChunk) elems += static_cast<size_t>(s.batch * s.regions * (s.channels + 1));
  return elems * acc_bytes(dtype);
}

cudaError_t word_attention_forward(DType dtype, const void* query, const void* source,
                                   const bool* mask, bool legacy_mask, void* context, void* attn,
                                   void* lse, void* workspace, WordAttentionSizes s,
                                   cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const size_t smem = word_attention_shared_bytes(dtype, s, false);
    ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(wa_forward_kernel<T>, smem));
    const dim3 grid(static_cast<unsigned>(ceil_div(s.regions, kFwdThreads)),
                    static_cast<unsigned>(s.batch));
    wa_forward_kernel<T><<<grid, kFwdThreads, smem, stream>>>(
        static_cast<const T*>(query), static_cast<const T*>(source), mask, legacy_mask,
        static_cast<T*>(context), static_cast<T*>(attn), static_cast<A*>(lse),
        static_cast<A*>(workspace), static_cast<int>(s.batch), static_cast<int>(s.channels),
        s.regions, static_cast<int>(s.words), s.stride_b, s.stride_c, s.stride_n);
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

cudaError_t word_attention_backward(DType dtype, const void* grad_context, const void* grad_attn,
                                    const void* query, const void* source, const bool* mask,
                                    bool legacy_mask, const void* lse, void* grad_query,
                                    void* grad_source, void* workspace, WordAttentionSizes s,
                                    int num_sms, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int B = static_cast<int>(s.batch), C = static_cast<int>(s.channels);
    const int T_ = static_cast<int>(s.words);
    const int grid_x = backward_grid_x(s, num_sms);
    A* partial = static_cast<A*>(workspace);
    const auto* g = static_cast<const T*>(grad_context);
    const auto* ga = static_cast<const T*>(grad_attn);
    const auto* q = static_cast<const T*>(query);
    const auto* src = static_cast<const T*>(source);
    const auto* lse_p = static_cast<const A*>(lse);
    const size_t smem = word_attention_shared_bytes(dtype, s, true);
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(B));
    if (s.words <= kWordChunk) {
      ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(wa_backward_kernel<T, true>, smem));
      wa_backward_kernel<T, true><<<grid, kBwdThreads, smem, stream>>>(
          g, ga, q, src, mask, legacy_mask, lse_p, nullptr, static_cast<T*>(grad_query), partial,
          B, C, s.regions, T_, s.stride_b, s.stride_c, s.stride_n);
      ATTNGAN_CHECK_LAUNCH();
    } else {
      A* rowdot = partial + static_cast<int64_t>(B) * grid_x * C * T_;
      A* ws = rowdot + s.batch * s.regions;
      const size_t row_smem = static_cast<size_t>(C) * kWordChunk * sizeof(A);
      ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(wa_backward_rows_kernel<T>, row_smem));
      const dim3 row_grid(static_cast<unsigned>(ceil_div(s.regions, kFwdThreads)),
                          static_cast<unsigned>(B));
      wa_backward_rows_kernel<T><<<row_grid, kFwdThreads, row_smem, stream>>>(
          g, ga, q, src, mask, legacy_mask, lse_p, rowdot, ws, static_cast<T*>(grad_query), B, C,
          s.regions, T_, s.stride_b, s.stride_c, s.stride_n);
      ATTNGAN_CHECK_LAUNCH();
      ATTNGAN_RETURN_IF_ERROR(allow_shared_bytes(wa_backward_kernel<T, false>, smem));
      wa_backward_kernel<T, false><<<grid, kBwdThreads, smem, stream>>>(
          g, ga, q, src, mask, legacy_mask, lse_p, rowdot, nullptr, partial, B, C, s.regions,
          T_, s.stride_b, s.stride_c, s.stride_n);
      ATTNGAN_CHECK_LAUNCH();
    }
    const int64_t total = s.batch * s.channels * s.words;
    const unsigned blocks = static_cast<unsigned>(ceil_div(total, 256) < 4096 ? ceil_div(total, 256)
                                                                              : 4096);
    wa_reduce_source_kernel<T><<<blocks, 256, 0, stream>>>(
        partial, static_cast<T*>(grad_source), B, C, T_, grid_x);
    ATTNGAN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

}  // namespace attngan
