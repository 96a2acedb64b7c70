// Test-only CPU build of the per-element patch-attention math that the CUDA kernels run
// (gantk/ops/csrc/patch_attention_math.h), with the same Python signatures as the CUDA module,
// so the index arithmetic and the autograd wiring are checked against the reference without a GPU.
#include <torch/extension.h>

#include <vector>

#include "patch_attention_math.h"

namespace {

gantk::PatchGeometry geometry(const torch::Tensor& values, const torch::Tensor& weights,
                              int64_t kernel_size, int64_t dilation, bool reflect) {
  TORCH_CHECK(values.is_contiguous() && weights.is_contiguous(), "inputs must be contiguous");
  return gantk::make_geometry(values.size(0), values.size(1), weights.size(1), values.size(2),
                              values.size(3), kernel_size, dilation, reflect);
}

template <typename F>
torch::Tensor fill(const torch::Tensor& like, F element) {
  auto out = torch::empty_like(like);
  AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "fill", [&] {
    scalar_t* data = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < out.numel(); ++i) data[i] = element(scalar_t(0), i);
  });
  return out;
}

}  // namespace

torch::Tensor patch_attention_forward(torch::Tensor values, torch::Tensor weights,
                                      int64_t kernel_size, int64_t dilation, bool reflect) {
  const auto g = geometry(values, weights, kernel_size, dilation, reflect);
  return fill(values, [&](auto zero, int64_t i) {
    using scalar_t = decltype(zero);
    return static_cast<scalar_t>(gantk::patch_forward_at<scalar_t, double>(
        g, values.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), i));
  });
}

std::vector<torch::Tensor> patch_attention_backward(torch::Tensor grad_out, torch::Tensor values,
                                                    torch::Tensor weights, int64_t kernel_size,
                                                    int64_t dilation, bool reflect,
                                                    bool need_values, bool need_weights) {
  const auto g = geometry(values, weights, kernel_size, dilation, reflect);
  torch::Tensor grad_values, grad_weights;
  if (need_values) {
    grad_values = fill(values, [&](auto zero, int64_t i) {
      using scalar_t = decltype(zero);
      return static_cast<scalar_t>(gantk::patch_grad_values_at<scalar_t, double>(
          g, grad_out.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), i));
    });
  }
  if (need_weights) {
    grad_weights = fill(weights, [&](auto zero, int64_t i) {
      using scalar_t = decltype(zero);
      return static_cast<scalar_t>(gantk::patch_grad_weights_at<scalar_t, double>(
          g, grad_out.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(), i));
    });
  }
  return {grad_values, grad_weights};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("patch_attention_forward", &patch_attention_forward);
  m.def("patch_attention_backward", &patch_attention_backward);
}
