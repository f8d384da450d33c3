// Python bindings of attngan_fast._C: check the tensors (device, dtype, contiguity, shapes), allocate
// outputs and scratch, and launch the kernels of csrc/*.cu on torch's current CUDA stream. A bad
// input raises TypeError / ValueError naming the op, the argument and its shape; a CUDA error
// raises RuntimeError naming the op and the shapes.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <optional>
#include <sstream>
#include <string>
#include <tuple>

#include "kernels.cuh"

namespace {

using at::Tensor;
using attngan::DType;
using OptTensor = std::optional<Tensor>;

std::string shape_of(const Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

DType dtype_of(const char* op, const char* name, const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      return DType::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, op, ": ", name, " must be float32, bfloat16, float16 or float64, got ",
                       t.scalar_type(), " (shape ", shape_of(t), ")");
  }
  return DType::kFloat32;  // unreachable: TORCH_CHECK_TYPE(false, ...) throws
}

at::ScalarType acc_type(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A defined CUDA tensor on ref's device, of the given dimensionality and contiguous.
void check_tensor(const char* op, const char* name, const Tensor& t, int64_t dim,
                  const char* shape, const Tensor& ref, bool need_contiguous = true) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is missing (expected ", shape, ")");
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got ", t.device(),
                    " (shape ", shape_of(t), ")");
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(),
                    " but the inputs are on ", ref.device());
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must have shape ", shape, ", got ",
                    shape_of(t));
  TORCH_CHECK_VALUE(!need_contiguous || t.is_contiguous(), op, ": ", name,
                    " must be contiguous (shape ", shape_of(t), ", strides ", t.strides(), ")");
}

void check_same_dtype(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " is ", t.scalar_type(),
                   " but it must match the other inputs (", ref.scalar_type(), ")");
}

void check_size(const char* op, const char* name, const Tensor& t, int64_t dim, int64_t expected,
                const char* shape) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, op, ": ", name, " must have shape ", shape,
                    ": size ", t.size(dim), " at dim ", dim, " should be ", expected, " (got ",
                    shape_of(t), ")");
}

void check_mask(const char* op, const OptTensor& mask, int64_t batch, int64_t words,
                const Tensor& ref) {
  if (!mask.has_value()) return;
  check_tensor(op, "mask", *mask, 2, "B x T", ref);
  TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, op, ": mask must be bool, got ",
                   mask->scalar_type());
  check_size(op, "mask", *mask, 0, batch, "B x T");
  check_size(op, "mask", *mask, 1, words, "B x T");
}

int device_attribute(cudaDeviceAttr attr, const Tensor& ref) {
  int value = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&value, attr, ref.get_device());
  TORCH_CHECK(err == cudaSuccess, "attngan_fast._C: cudaDeviceGetAttribute failed: ",
              cudaGetErrorString(err));
  return value;
}

void check_shared(const char* op, size_t needed, const Tensor& ref, const std::string& shapes) {
  const auto limit = static_cast<size_t>(
      device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, ref));
  TORCH_CHECK_VALUE(needed <= limit, op, ": these shapes (", shapes, ") need ", needed,
                    " bytes of shared memory per block, more than the ", limit,
                    " this GPU allows; use backend='triton' or 'torch' for them");
}

int num_sms(const Tensor& ref) { return device_attribute(cudaDevAttrMultiProcessorCount, ref); }

void check_launch(cudaError_t err, const char* op, const std::string& shapes) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error '", cudaGetErrorString(err),
              "' in the kernels for ", shapes);
}

Tensor workspace(size_t bytes, const Tensor& ref) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)},
                   ref.options().dtype(at::kByte));
}

const bool* mask_ptr(const OptTensor& mask) {
  return mask.has_value() ? mask->data_ptr<bool>() : nullptr;
}

// --- word_attention ------------------------------------------------------------------------------

// B x C x N dense with the regions innermost (contiguous) or the channels (a channels-last map
// flattened in place): the two layouts the kernels address through strides.
bool regions_layout(const Tensor& t) {
  return t.is_contiguous() || t.transpose(1, 2).is_contiguous();
}

// t (shape of ref) in ref's layout: a copy only when it is not already.
Tensor like_query(const Tensor& t, const Tensor& ref) {
  if (!ref.is_contiguous() && ref.transpose(1, 2).is_contiguous()) {
    return t.transpose(1, 2).contiguous().transpose(1, 2);
  }
  return t.contiguous();
}

attngan::WordAttentionSizes word_attention_sizes(const char* op, const Tensor& query,
                                                 const Tensor& source, const OptTensor& mask) {
  check_tensor(op, "query", query, 3, "B x C x N", query, /*need_contiguous=*/false);
  TORCH_CHECK_VALUE(regions_layout(query), op,
                    ": query must be dense with the regions or the channels innermost (shape ",
                    shape_of(query), ", strides ", query.strides(), ")");
  dtype_of(op, "query", query);
  check_tensor(op, "source", source, 3, "B x C x T", query);
  check_same_dtype(op, "source", source, query);
  check_size(op, "source", source, 0, query.size(0), "B x C x T (B of query)");
  check_size(op, "source", source, 1, query.size(1), "B x C x T (C of query)");
  TORCH_CHECK_VALUE(query.numel() > 0 && source.numel() > 0, op,
                    ": query and source must not be empty, got ", shape_of(query), " and ",
                    shape_of(source));
  check_mask(op, mask, query.size(0), source.size(2), query);
  return {query.size(0), query.size(1), query.size(2), source.size(2),
          query.stride(0), query.stride(1), query.stride(2)};
}

std::string wa_shapes(const Tensor& query, const Tensor& source) {
  return "query " + shape_of(query) + ", source " + shape_of(source);
}

std::tuple<Tensor, Tensor, Tensor> word_attention_forward(const Tensor& query,
                                                          const Tensor& source,
                                                          const OptTensor& mask, bool need_attn,
                                                          bool legacy_mask) {
  const char* op = "word_attention (cuda forward)";
  const auto s = word_attention_sizes(op, query, source, mask);
  const DType dtype = dtype_of(op, "query", query);
  const std::string shapes = wa_shapes(query, source);
  check_shared(op, attngan::word_attention_shared_bytes(dtype, s, false), query, shapes);
  const c10::cuda::CUDAGuard guard(query.device());
  Tensor context = at::empty_like(query);
  Tensor attn = need_attn ? at::empty({s.batch, s.words, s.regions}, query.options())
                          : at::empty({0}, query.options());
  Tensor lse = at::empty({s.batch, s.regions}, query.options().dtype(acc_type(query)));
  Tensor ws = workspace(attngan::word_attention_forward_workspace(dtype, s), query);
  const cudaError_t err = attngan::word_attention_forward(
      dtype, query.data_ptr(), source.data_ptr(), mask_ptr(mask), legacy_mask,
      context.data_ptr(), need_attn ? attn.data_ptr() : nullptr, lse.data_ptr(), ws.data_ptr(),
      s, c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, shapes);
  return {context, attn, lse};
}

std::tuple<Tensor, Tensor> word_attention_backward(const Tensor& grad_context_in,
                                                   const OptTensor& grad_attn,
                                                   const Tensor& query, const Tensor& source,
                                                   const OptTensor& mask, const Tensor& lse,
                                                   bool legacy_mask) {
  const char* op = "word_attention (cuda backward)";
  const auto s = word_attention_sizes(op, query, source, mask);
  const DType dtype = dtype_of(op, "query", query);
  check_tensor(op, "grad_context", grad_context_in, 3, "B x C x N", query,
               /*need_contiguous=*/false);
  check_same_dtype(op, "grad_context", grad_context_in, query);
  TORCH_CHECK_VALUE(grad_context_in.sizes() == query.sizes(), op,
                    ": grad_context must have the shape of query ", shape_of(query), ", got ",
                    shape_of(grad_context_in));
  const Tensor grad_context = like_query(grad_context_in, query);  // the kernels' shared strides
  if (grad_attn.has_value()) {
    check_tensor(op, "grad_attn", *grad_attn, 3, "B x T x N", query);
    check_same_dtype(op, "grad_attn", *grad_attn, query);
    TORCH_CHECK_VALUE(grad_attn->sizes() == at::IntArrayRef({s.batch, s.words, s.regions}), op,
                      ": grad_attn must have shape B x T x N = [", s.batch, ", ", s.words, ", ",
                      s.regions, "], got ", shape_of(*grad_attn));
  }
  check_tensor(op, "lse", lse, 2, "B x N", query);
  TORCH_CHECK_TYPE(lse.scalar_type() == acc_type(query), op, ": lse must be ",
                   acc_type(query), ", got ", lse.scalar_type());
  TORCH_CHECK_VALUE(lse.size(0) == s.batch && lse.size(1) == s.regions, op,
                    ": lse must have shape B x N = [", s.batch, ", ", s.regions, "], got ",
                    shape_of(lse));
  const std::string shapes = wa_shapes(query, source);
  check_shared(op, attngan::word_attention_shared_bytes(dtype, s, true), query, shapes);
  const c10::cuda::CUDAGuard guard(query.device());
  const int sms = num_sms(query);
  Tensor grad_query = at::empty_like(query);
  Tensor grad_source = at::empty_like(source);
  Tensor ws = workspace(attngan::word_attention_backward_workspace(dtype, s, sms), query);
  const cudaError_t err = attngan::word_attention_backward(
      dtype, grad_context.data_ptr(), grad_attn.has_value() ? grad_attn->data_ptr() : nullptr,
      query.data_ptr(), source.data_ptr(), mask_ptr(mask), legacy_mask, lse.data_ptr(),
      grad_query.data_ptr(), grad_source.data_ptr(), ws.data_ptr(), s, sms,
      c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, shapes);
  return {grad_query, grad_source};
}

// --- damsm_word_similarity -----------------------------------------------------------------------

attngan::DamsmSizes damsm_sizes(const char* op, const Tensor& img_local, const Tensor& words,
                                const Tensor& cap_lens) {
  check_tensor(op, "img_local", img_local, 3, "B x D x R", img_local);
  dtype_of(op, "img_local", img_local);
  check_tensor(op, "words", words, 3, "B x D x T", img_local);
  check_same_dtype(op, "words", words, img_local);
  check_size(op, "words", words, 0, img_local.size(0), "B x D x T (B of img_local)");
  check_size(op, "words", words, 1, img_local.size(1), "B x D x T (D of img_local)");
  TORCH_CHECK_VALUE(img_local.numel() > 0 && words.numel() > 0, op,
                    ": img_local and words must not be empty, got ", shape_of(img_local), " and ",
                    shape_of(words));
  TORCH_CHECK_VALUE(words.size(2) <= attngan::kDamsmMaxWords, op,
                    ": the cuda kernels handle captions of at most ", attngan::kDamsmMaxWords,
                    " words, got T = ", words.size(2), " (words ", shape_of(words),
                    "); use backend='triton' or 'torch'");
  check_tensor(op, "cap_lens", cap_lens, 1, "B", img_local);
  TORCH_CHECK_TYPE(cap_lens.scalar_type() == at::kLong, op, ": cap_lens must be int64, got ",
                   cap_lens.scalar_type());
  check_size(op, "cap_lens", cap_lens, 0, img_local.size(0), "B");
  return {img_local.size(0), img_local.size(1), img_local.size(2), words.size(2)};
}

std::string damsm_shapes(const Tensor& img_local, const Tensor& words) {
  return "img_local " + shape_of(img_local) + ", words " + shape_of(words);
}

Tensor damsm_forward(const Tensor& img_local, const Tensor& words, const Tensor& cap_lens,
                     double gamma1, double gamma2) {
  const char* op = "damsm_word_similarity (cuda forward)";
  const auto s = damsm_sizes(op, img_local, words, cap_lens);
  const DType dtype = dtype_of(op, "img_local", img_local);
  const std::string shapes = damsm_shapes(img_local, words);
  check_shared(op, attngan::damsm_shared_bytes(dtype, s, false), img_local, shapes);
  const c10::cuda::CUDAGuard guard(img_local.device());
  Tensor sim = at::empty({s.batch, s.batch}, img_local.options().dtype(acc_type(img_local)));
  const cudaError_t err = attngan::damsm_forward(
      dtype, img_local.data_ptr(), words.data_ptr(), cap_lens.data_ptr<int64_t>(), gamma1,
      gamma2, sim.data_ptr(), s, c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, shapes);
  return sim;
}

std::tuple<Tensor, Tensor> damsm_backward(const Tensor& grad_sim, const Tensor& img_local,
                                          const Tensor& words, const Tensor& cap_lens,
                                          double gamma1, double gamma2) {
  const char* op = "damsm_word_similarity (cuda backward)";
  const auto s = damsm_sizes(op, img_local, words, cap_lens);
  const DType dtype = dtype_of(op, "img_local", img_local);
  check_tensor(op, "grad_s", grad_sim, 2, "B x B", img_local);
  TORCH_CHECK_TYPE(grad_sim.scalar_type() == acc_type(img_local), op, ": grad_s must be ",
                   acc_type(img_local), ", got ", grad_sim.scalar_type());
  TORCH_CHECK_VALUE(grad_sim.size(0) == s.batch && grad_sim.size(1) == s.batch, op,
                    ": grad_s must have shape B x B = [", s.batch, ", ", s.batch, "], got ",
                    shape_of(grad_sim));
  const std::string shapes = damsm_shapes(img_local, words);
  check_shared(op, attngan::damsm_shared_bytes(dtype, s, true), img_local, shapes);
  const c10::cuda::CUDAGuard guard(img_local.device());
  const int sms = num_sms(img_local);
  Tensor grad_img = at::empty_like(img_local);
  Tensor grad_words = at::empty_like(words);
  Tensor ws = workspace(attngan::damsm_backward_workspace(dtype, s, sms), img_local);
  const cudaError_t err = attngan::damsm_backward(
      dtype, grad_sim.data_ptr(), img_local.data_ptr(), words.data_ptr(),
      cap_lens.data_ptr<int64_t>(), gamma1, gamma2, grad_img.data_ptr(), grad_words.data_ptr(),
      ws.data_ptr(), s, sms, c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, shapes);
  return {grad_img, grad_words};
}

// --- batch_norm_act ------------------------------------------------------------------------------

attngan::BnMode bn_mode(const char* op, const std::string& mode) {
  if (mode == "glu") return attngan::BnMode::kGlu;
  if (mode == "add") return attngan::BnMode::kAdd;
  TORCH_CHECK_VALUE(false, op, ": mode must be 'glu' or 'add', got '", mode, "'");
  return attngan::BnMode::kGlu;  // unreachable: TORCH_CHECK_VALUE(false, ...) throws
}

// x as outer x C x inner: NCHW-contiguous (any dim 2..4) or channels-last (dim 4).
attngan::BatchNormSizes bn_sizes(const char* op, const Tensor& x, at::MemoryFormat* format) {
  TORCH_CHECK_VALUE(x.defined() && x.is_cuda(), op, ": x must be a CUDA tensor, got ",
                    x.defined() ? x.device().str() : std::string("None"));
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 4, op,
                    ": x must have shape B x C or B x C x H x W, got ", shape_of(x));
  dtype_of(op, "x", x);
  TORCH_CHECK_VALUE(x.numel() > 0, op, ": x must not be empty, got ", shape_of(x));
  const int64_t channels = x.size(1);
  if (x.is_contiguous()) {
    *format = at::MemoryFormat::Contiguous;
    return {x.size(0), channels, x.numel() / (x.size(0) * channels)};
  }
  TORCH_CHECK_VALUE(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), op,
                    ": x must be contiguous or channels-last (shape ", shape_of(x), ", strides ",
                    x.strides(), ")");
  *format = at::MemoryFormat::ChannelsLast;
  return {x.numel() / channels, channels, 1};
}

// A per-channel parameter as a contiguous accumulation-type tensor (undefined if absent).
Tensor bn_param(const char* op, const char* name, const OptTensor& t, const Tensor& x) {
  if (!t.has_value()) return Tensor();
  check_tensor(op, name, *t, 1, "C", x, false);
  dtype_of(op, name, *t);
  check_size(op, name, *t, 0, x.size(1), "C (channels of x)");
  return t->to(acc_type(x)).contiguous();
}

const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void check_like(const char* op, const char* name, const Tensor& t, const Tensor& like,
                at::IntArrayRef sizes) {
  TORCH_CHECK_VALUE(t.is_cuda() && t.device() == like.device(), op, ": ", name,
                    " must be a CUDA tensor on ", like.device(), ", got ", t.device());
  check_same_dtype(op, name, t, like);
  TORCH_CHECK_VALUE(t.sizes() == sizes, op, ": ", name, " must have shape ", sizes, ", got ",
                    shape_of(t));
}

std::tuple<Tensor, Tensor, Tensor> batch_norm_act_forward(
    const Tensor& x, const OptTensor& residual, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool training, double eps,
    const std::string& mode_name) {
  const char* op = "batch_norm_act (cuda forward)";
  const attngan::BnMode mode = bn_mode(op, mode_name);
  at::MemoryFormat format;
  const auto s = bn_sizes(op, x, &format);
  const DType dtype = dtype_of(op, "x", x);
  const bool glu = mode == attngan::BnMode::kGlu;
  TORCH_CHECK_VALUE(!glu || s.channels % 2 == 0, op,
                    ": x must have an even number of channels for GLU, got ", s.channels);
  if (!glu) {
    TORCH_CHECK_VALUE(residual.has_value(), op, ": mode 'add' needs a residual");
    check_like(op, "residual", *residual, x, x.sizes());
    TORCH_CHECK_VALUE(residual->is_contiguous(format), op,
                      ": residual must have the memory format of x (",
                      format == at::MemoryFormat::ChannelsLast ? "channels-last" : "contiguous",
                      "), got strides ", residual->strides());
  }
  TORCH_CHECK_VALUE(!training || s.outer * s.inner > 1, op,
                    ": training mode needs more than 1 value per channel, got x of shape ",
                    shape_of(x));
  TORCH_CHECK_VALUE(training || (running_mean.has_value() && running_var.has_value()), op,
                    ": eval mode needs running_mean and running_var");
  const Tensor w = bn_param(op, "weight", weight, x);
  const Tensor b = bn_param(op, "bias", bias, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int sms = num_sms(x);
  auto y_sizes = x.sizes().vec();
  if (glu) y_sizes[1] /= 2;
  Tensor y = at::empty(y_sizes, x.options().memory_format(format));
  const auto acc = x.options().dtype(acc_type(x));
  Tensor mean, var;
  if (training) {
    mean = at::empty({s.channels}, acc);
    var = at::empty({s.channels}, acc);
  } else {
    mean = bn_param(op, "running_mean", running_mean, x);
    var = bn_param(op, "running_var", running_var, x);
  }
  Tensor ws = workspace(attngan::batch_norm_workspace(dtype, s, mode, false, sms), x);
  const cudaError_t err = attngan::batch_norm_act_forward(
      dtype, mode, x.data_ptr(), glu ? nullptr : residual->data_ptr(), ptr_or_null(w),
      ptr_or_null(b), mean.data_ptr(), var.data_ptr(), training, eps, y.data_ptr(),
      ws.data_ptr(), s, sms, c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, "x " + shape_of(x));
  if (!training) return {y, at::empty({0}, acc), at::empty({0}, acc)};
  return {y, mean, var};
}

std::tuple<Tensor, OptTensor, OptTensor> batch_norm_act_backward(
    const Tensor& grad_y, const Tensor& x, const OptTensor& weight, const OptTensor& bias,
    const Tensor& mean, const Tensor& var, bool training, double eps,
    const std::string& mode_name) {
  const char* op = "batch_norm_act (cuda backward)";
  const attngan::BnMode mode = bn_mode(op, mode_name);
  at::MemoryFormat format;
  const auto s = bn_sizes(op, x, &format);
  const DType dtype = dtype_of(op, "x", x);
  const bool glu = mode == attngan::BnMode::kGlu;
  TORCH_CHECK_VALUE(!glu || s.channels % 2 == 0, op,
                    ": x must have an even number of channels for GLU, got ", s.channels);
  auto y_sizes = x.sizes().vec();
  if (glu) y_sizes[1] /= 2;
  check_like(op, "grad_y", grad_y, x, y_sizes);
  TORCH_CHECK_VALUE(grad_y.is_contiguous(format), op,
                    ": grad_y must have the memory format of x (",
                    format == at::MemoryFormat::ChannelsLast ? "channels-last" : "contiguous",
                    "), got strides ", grad_y.strides());
  const Tensor w = bn_param(op, "weight", weight, x);
  const Tensor b = bn_param(op, "bias", bias, x);
  const Tensor mu = bn_param(op, "mean", mean, x);
  const Tensor v = bn_param(op, "var", var, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int sms = num_sms(x);
  const auto acc = x.options().dtype(acc_type(x));
  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  Tensor grad_w = weight.has_value() ? at::empty({s.channels}, acc) : Tensor();
  Tensor grad_b = bias.has_value() ? at::empty({s.channels}, acc) : Tensor();
  Tensor ws = workspace(attngan::batch_norm_workspace(dtype, s, mode, true, sms), x);
  const cudaError_t err = attngan::batch_norm_act_backward(
      dtype, mode, grad_y.data_ptr(), x.data_ptr(), ptr_or_null(w), ptr_or_null(b), mu.data_ptr(),
      v.data_ptr(), training, eps, grad_x.data_ptr(), grad_w.defined() ? grad_w.data_ptr() : nullptr,
      grad_b.defined() ? grad_b.data_ptr() : nullptr, ws.data_ptr(), s, sms,
      c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, op, "x " + shape_of(x));
  OptTensor gw, gb;
  if (grad_w.defined()) gw = grad_w.to(weight->scalar_type());
  if (grad_b.defined()) gb = grad_b.to(bias->scalar_type());
  return {grad_x, gw, gb};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "attngan-fast CUDA kernels (the 'cuda' backend of attngan_fast.ops)";
  m.def("word_attention_forward", &word_attention_forward, "word_attention forward",
        py::arg("query"), py::arg("source"), py::arg("mask"), py::arg("need_attn"),
        py::arg("legacy_mask"));
  m.def("word_attention_backward", &word_attention_backward, "word_attention backward",
        py::arg("grad_context"), py::arg("grad_attn"), py::arg("query"), py::arg("source"),
        py::arg("mask"), py::arg("lse"), py::arg("legacy_mask"));
  m.def("damsm_word_similarity_forward", &damsm_forward, "damsm_word_similarity forward",
        py::arg("img_local"), py::arg("words"), py::arg("cap_lens"), py::arg("gamma1"),
        py::arg("gamma2"));
  m.def("damsm_word_similarity_backward", &damsm_backward, "damsm_word_similarity backward",
        py::arg("grad_s"), py::arg("img_local"), py::arg("words"), py::arg("cap_lens"),
        py::arg("gamma1"), py::arg("gamma2"));
  m.def("batch_norm_act_forward", &batch_norm_act_forward, "batch_norm_act forward",
        py::arg("x"), py::arg("residual"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("training"), py::arg("eps"),
        py::arg("mode"));
  m.def("batch_norm_act_backward", &batch_norm_act_backward, "batch_norm_act backward",
        py::arg("grad_y"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("mean"),
        py::arg("var"), py::arg("training"), py::arg("eps"), py::arg("mode"));
}
