// Host-side API of the attngan-fast CUDA kernels: plain C++ declarations, no torch headers.
//
// Every launcher takes raw device pointers (contiguous tensors), sizes, the dtype of the floating
// tensors and the stream to launch on, and returns the first CUDA error it met (cudaSuccess if
// none). "acc" below is the accumulation type: float for fp32/bf16/fp16 tensors, double for fp64.
// bindings.cpp is the only caller; it allocates outputs and workspaces and checks the inputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace attngan {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Bytes of one element of the accumulation type of dtype (4, or 8 for fp64).
inline size_t acc_bytes(DType dtype) { return dtype == DType::kFloat64 ? 8 : 4; }

// --- word_attention ------------------------------------------------------------------------------
// query B x C x N, source B x C x T, mask B x T (bool, nullable), context B x C x N,
// attn B x T x N (nullable: not written), lse B x N (acc). query, context, grad_context and
// grad_query share the strides (elements) stride_b, stride_c, stride_n: {C N, N, 1} for regions
// innermost, {N C, 1, C} for channels innermost (a channels-last map flattened in place).
struct WordAttentionSizes {
  int64_t batch, channels, regions, words;
  int64_t stride_b, stride_c, stride_n;
};

// Scratch bytes the launchers need (the caller passes a buffer of at least this size, or nullptr
// when 0). Non-zero only for T > 32 words (accumulators across word chunks) and, backward, for the
// per-block partial sums of grad_source.
size_t word_attention_forward_workspace(DType dtype, WordAttentionSizes s);
size_t word_attention_backward_workspace(DType dtype, WordAttentionSizes s, int num_sms);
// Dynamic shared memory the kernels need (bytes), to check against the device limit.
size_t word_attention_shared_bytes(DType dtype, WordAttentionSizes s, bool backward);

cudaError_t word_attention_forward(DType dtype, const void* query, const void* source,
                                   const bool* mask, bool legacy_mask, void* context, void* attn,
                                   void* lse, void* workspace, WordAttentionSizes s,
                                   cudaStream_t stream);

// grad_attn nullable. grad_query B x C x N, grad_source B x C x T (dtype of query).
cudaError_t word_attention_backward(DType dtype, const void* grad_context, const void* grad_attn,
                                    const void* query, const void* source, const bool* mask,
                                    bool legacy_mask, const void* lse, void* grad_query,
                                    void* grad_source, void* workspace, WordAttentionSizes s,
                                    int num_sms, cudaStream_t stream);

// --- damsm_word_similarity -----------------------------------------------------------------------
// img_local B x D x R, words B x D x T (T <= kDamsmMaxWords), cap_lens B (int64),
// S B x B (acc), S[j * B + i] = image j with caption i.
constexpr int kDamsmMaxWords = 32;

struct DamsmSizes {
  int64_t batch, dim, regions, words;
};

size_t damsm_shared_bytes(DType dtype, DamsmSizes s, bool backward);
// Number of caption groups of the backward pass (its blocks are groups x images).
int damsm_backward_groups(DamsmSizes s, int num_sms);
// Workspace of the backward pass: grad_img_local partials (groups x B x D x R acc) followed by
// the grad_words accumulator (B x D x T acc). The launcher zeroes it.
size_t damsm_backward_workspace(DType dtype, DamsmSizes s, int num_sms);

cudaError_t damsm_forward(DType dtype, const void* img_local, const void* words,
                          const int64_t* cap_lens, double gamma1, double gamma2, void* sim,
                          DamsmSizes s, cudaStream_t stream);

// grad_sim B x B (acc). grad_img_local B x D x R, grad_words B x D x T (dtype of img_local).
cudaError_t damsm_backward(DType dtype, const void* grad_sim, const void* img_local,
                           const void* words, const int64_t* cap_lens, double gamma1,
                           double gamma2, void* grad_img_local, void* grad_words, void* workspace,
                           DamsmSizes s, int num_sms, cudaStream_t stream);

// --- batch_norm_act ------------------------------------------------------------------------------
// x viewed as outer x C x inner: NCHW / B x C x L -> (B, C, H*W or L); channels-last and B x C ->
// (B*H*W or B, C, 1). y has C/2 channels (mode glu) or C (mode add, + residual of x's layout).
enum class BnMode : int { kGlu = 0, kAdd = 1 };

struct BatchNormSizes {
  int64_t outer, channels, inner;
};

size_t batch_norm_workspace(DType dtype, BatchNormSizes s, BnMode mode, bool backward, int num_sms);

// weight, bias: C acc (nullable). Training: mean/var (C acc) are outputs (batch mean, biased var);
// eval: inputs (the running statistics, acc). workspace: batch_norm_workspace(..., false, ...).
cudaError_t batch_norm_act_forward(DType dtype, BnMode mode, const void* x, const void* residual,
                                   const void* weight, const void* bias, void* mean, void* var,
                                   bool training, double eps, void* y, void* workspace,
                                   BatchNormSizes s, int num_sms, cudaStream_t stream);

// grad_weight, grad_bias: C acc (nullable = not wanted). mean/var: the statistics the forward
// normalised with. workspace: batch_norm_workspace(..., true, ...).
cudaError_t batch_norm_act_backward(DType dtype, BnMode mode, const void* grad_y, const void* x,
                                    const void* weight, const void* bias, const void* mean,
                                    const void* var, bool training, double eps, void* grad_x,
                                    void* grad_weight, void* grad_bias, void* workspace,
                                    BatchNormSizes s, int num_sms, cudaStream_t stream);

}  // namespace attngan
