// SAN patch aggregation on the GPU: one thread per output element, reading the k*k taps straight
// from the values, so the k*k-times larger unfolded tensor of the reference never exists.
#include "common.cuh"
#include "patch_attention_math.h"

#include <algorithm>
#include <vector>

namespace gantk {
namespace {

constexpr int kThreads = 256;

// One thread per output element (grid-stride), each computed by ``Element`` from the shared
// per-element math; the three kernels differ only in which function that is.
template <typename scalar_t, typename Element>
__global__ void fill_kernel(Element element, scalar_t* __restrict__ out, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[i] = static_cast<scalar_t>(element(i));
  }
}

template <typename scalar_t>
struct ForwardAt {
  PatchGeometry g;
  const scalar_t* values;
  const scalar_t* weights;
  __device__ acc_t<scalar_t> operator()(int64_t i) const {
    return patch_forward_at<scalar_t, acc_t<scalar_t>>(g, values, weights, i);
  }
};

template <typename scalar_t>
struct GradValuesAt {
  PatchGeometry g;
  const scalar_t* grad_out;
  const scalar_t* weights;
  __device__ acc_t<scalar_t> operator()(int64_t i) const {
    return patch_grad_values_at<scalar_t, acc_t<scalar_t>>(g, grad_out, weights, i);
  }
};

template <typename scalar_t>
struct GradWeightsAt {
  PatchGeometry g;
  const scalar_t* grad_out;
  const scalar_t* values;
  __device__ acc_t<scalar_t> operator()(int64_t i) const {
    return patch_grad_weights_at<scalar_t, acc_t<scalar_t>>(g, grad_out, values, i);
  }
};

PatchGeometry geometry(const at::Tensor& values, const at::Tensor& weights,
                       int64_t kernel_size, int64_t dilation, bool reflect) {
  GANTK_CHECK_INPUT(values);
  GANTK_CHECK_INPUT(weights);
  TORCH_CHECK(values.dim() == 4, "values must be (B, C, H, W)");
  TORCH_CHECK(weights.dim() == 5, "weights must be (B, Cw, K*K, H, W)");
  TORCH_CHECK(values.scalar_type() == weights.scalar_type(), "values and weights dtypes differ");
  TORCH_CHECK(values.device() == weights.device(), "values and weights must be on the same GPU");
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "kernel_size must be odd");
  TORCH_CHECK(dilation >= 1, "dilation must be positive");
  const PatchGeometry g =
      make_geometry(values.size(0), values.size(1), weights.size(1), values.size(2),
                    values.size(3), kernel_size, dilation, reflect);
  TORCH_CHECK(weights.size(0) == g.batch && weights.size(2) == kernel_size * kernel_size &&
                  weights.size(3) == g.height && weights.size(4) == g.width,
              "weights shape does not match values and kernel_size");
  TORCH_CHECK(g.weight_channels >= 1 && g.channels % g.weight_channels == 0,
              "values channels must be a multiple of weight channels");
  const int64_t pad = dilation * (kernel_size / 2);
  TORCH_CHECK(!reflect || (pad < g.height && pad < g.width),
              "reflect padding needs the padding to be smaller than the image side");
  return g;
}

unsigned int grid_for(int64_t total) {
  // A grid-stride loop covers anything beyond this; the cap keeps the grid legal for huge inputs.
  return static_cast<unsigned int>(std::min<int64_t>(blocks_for(total, kThreads), 1 << 20));
}

}  // namespace

at::Tensor patch_attention_forward(at::Tensor values, at::Tensor weights,
                                      int64_t kernel_size, int64_t dilation, bool reflect) {
  const PatchGeometry g = geometry(values, weights, kernel_size, dilation, reflect);
  const c10::cuda::CUDAGuard guard(values.device());
  auto out = at::empty_like(values);
  const int64_t total = out.numel();
  if (total == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, values.scalar_type(),
      "gantk_patch_attention_forward", [&] {
        const ForwardAt<scalar_t> element{g, values.data_ptr<scalar_t>(),
                                          weights.data_ptr<scalar_t>()};
        fill_kernel<<<grid_for(total), kThreads, 0, stream>>>(element, out.data_ptr<scalar_t>(),
                                                               total);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> patch_attention_backward(at::Tensor grad_out, at::Tensor values,
                                                    at::Tensor weights, int64_t kernel_size,
                                                    int64_t dilation, bool reflect,
                                                    bool need_values, bool need_weights) {
  const PatchGeometry g = geometry(values, weights, kernel_size, dilation, reflect);
  GANTK_CHECK_INPUT(grad_out);
  TORCH_CHECK(grad_out.sizes() == values.sizes(), "grad_out must have the shape of values");
  TORCH_CHECK(grad_out.scalar_type() == values.scalar_type(), "grad_out dtype differs");
  TORCH_CHECK(grad_out.device() == values.device(), "grad_out must be on the GPU of values");
  const c10::cuda::CUDAGuard guard(values.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor grad_values, grad_weights;
  if (need_values) grad_values = at::empty_like(values);
  if (need_weights) grad_weights = at::empty_like(weights);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, values.scalar_type(),
      "gantk_patch_attention_backward", [&] {
        if (need_values && grad_values.numel() > 0) {
          const int64_t total = grad_values.numel();
          const GradValuesAt<scalar_t> element{g, grad_out.data_ptr<scalar_t>(),
                                               weights.data_ptr<scalar_t>()};
          fill_kernel<<<grid_for(total), kThreads, 0, stream>>>(
              element, grad_values.data_ptr<scalar_t>(), total);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        if (need_weights && grad_weights.numel() > 0) {
          const int64_t total = grad_weights.numel();
          const GradWeightsAt<scalar_t> element{g, grad_out.data_ptr<scalar_t>(),
                                                values.data_ptr<scalar_t>()};
          fill_kernel<<<grid_for(total), kThreads, 0, stream>>>(
              element, grad_weights.data_ptr<scalar_t>(), total);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return {grad_values, grad_weights};
}

}  // namespace gantk
