// Fused BatchNorm + GLU on the CPU, for maps stored as pixel rows: a channels-last B x 2C x H x W
// map (or a B x 2C matrix) is the P x 2C row-major matrix of its pixels, P = B H W, each row the
// GLU's two halves [a | g]. One read pass for the statistics and one for the output; the
// backward recomputes the normalised map instead of storing it. float32 arithmetic for every
// input dtype, sums over the rows in float64.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace attngan_cpu {

// x: P x 2C (float32 / bfloat16 / float16, row-contiguous); weight, bias: 2C float32. In training
// mode the statistics are the batch's (mean, biased var, float32, returned); in eval mode
// mean / var are the running statistics given. Returns (y P x C in x's dtype, mean, var).
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_glu_rows_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean,
    const at::Tensor& var, bool training, double eps);

// grad_y: P x C in x's dtype. mean / var: the statistics the forward normalised with. Returns
// (grad_x P x 2C in x's dtype, grad_weight 2C, grad_bias 2C float32).
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_glu_rows_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& var, bool training, double eps);

}  // namespace attngan_cpu
