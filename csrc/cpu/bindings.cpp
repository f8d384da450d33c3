// Python bindings of the CPU extension (attngan_fast/ops/cpu_ext.py builds it on first use):
// check the tensors, then call the kernels of batch_norm_glu.cpp. A bad input raises TypeError /
// ValueError naming the function, the argument and its shape.
#include <torch/extension.h>

#include "batch_norm_glu.h"

namespace {

using at::Tensor;

void check_rows(const char* fn, const char* name, const Tensor& t, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 ||
                       t.scalar_type() == at::kHalf,
                   fn, ": ", name, " must be float32, bfloat16 or float16, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols && t.is_contiguous(), fn,
                    ": ", name, " must be a contiguous ", rows, " x ", cols, " matrix, got ",
                    t.sizes(), " with strides ", t.strides());
}

void check_vector(const char* fn, const char* name, const Tensor& t, int64_t n) {
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, fn, ": ", name, " must have ", n,
                    " elements, got ", t.sizes());
}

void check_common(const char* fn, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0 && x.size(1) % 2 == 0, fn,
                    ": x must be a P x 2C matrix with P, C > 0, got ", x.sizes());
  check_rows(fn, "x", x, x.size(0), x.size(1));
  check_vector(fn, "weight", weight, x.size(1));
  check_vector(fn, "bias", bias, x.size(1));
}

std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& x, const Tensor& weight,
                                           const Tensor& bias, const Tensor& mean,
                                           const Tensor& var, bool training, double eps) {
  const char* fn = "batch_norm_glu_rows_forward";
  check_common(fn, x, weight, bias);
  if (!training) {
    check_vector(fn, "mean", mean, x.size(1));
    check_vector(fn, "var", var, x.size(1));
  }
  return attngan_cpu::batch_norm_glu_rows_forward(x, weight, bias, mean, var, training, eps);
}

std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad_y, const Tensor& x,
                                            const Tensor& weight, const Tensor& bias,
                                            const Tensor& mean, const Tensor& var, bool training,
                                            double eps) {
  const char* fn = "batch_norm_glu_rows_backward";
  check_common(fn, x, weight, bias);
  check_rows(fn, "grad_y", grad_y, x.size(0), x.size(1) / 2);
  TORCH_CHECK_TYPE(grad_y.scalar_type() == x.scalar_type(), fn, ": grad_y must have x's dtype ",
                   x.scalar_type(), ", got ", grad_y.scalar_type());
  check_vector(fn, "mean", mean, x.size(1));
  check_vector(fn, "var", var, x.size(1));
  return attngan_cpu::batch_norm_glu_rows_backward(grad_y, x, weight, bias, mean, var, training,
                                                   eps);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "attngan-fast CPU kernels: fused BatchNorm + GLU on pixel rows";
  m.def("batch_norm_glu_rows_forward", &forward, "(y, mean, var) of glu(batch_norm(x))");
  m.def("batch_norm_glu_rows_backward", &backward, "(grad_x, grad_weight, grad_bias)");
}
