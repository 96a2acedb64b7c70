// Modulated convolution as one "scaled convolution" kernel:
//
//   out[n, o, y, x] = out_scale[n, o] * sum_{i, ky, kx} in_scale[n, i] * x[n, i, y+ky-P, x+kx-P]
//                                                       * weight[o, i, ky, kx]
//
// with stride 1 and "same" padding P = K/2 (K = 1 or 3). For StyleGAN2, in_scale are the styles
// (applied while the input tile is loaded into shared memory) and out_scale the demodulation
// coefficients (applied in the epilogue), so the per-sample weights [N, O, I, K, K] of the fused
// form and the scaled copy of x of the unfused form are never written to memory. The input
// gradient is the same kernel on the flipped, transposed weight (the Python side arranges it).
#include "common.cuh"

namespace gantk {
namespace {

constexpr int kTile = 16;         // output pixels per block side (one thread each)
constexpr int kOutPerBlock = 8;   // output channels each thread accumulates
constexpr int kInChunk = 8;       // input channels staged in shared memory per step

template <typename scalar_t, int K>
__global__ void __launch_bounds__(kTile* kTile)
    scaled_conv_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                       const acc_t<scalar_t>* __restrict__ in_scale,
                       const acc_t<scalar_t>* __restrict__ out_scale,  // may be null
                       scalar_t* __restrict__ out, int64_t in_channels, int64_t out_channels,
                       int64_t height, int64_t width, int64_t tiles_x) {
  using acc = acc_t<scalar_t>;
  constexpr int P = K / 2;
  constexpr int S = kTile + K - 1;  // input tile side including the halo
  __shared__ acc s_in[kInChunk][S][S];
  __shared__ acc s_w[kOutPerBlock][kInChunk][K * K];

  const int64_t n = blockIdx.z;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kOutPerBlock;
  const int64_t y0 = (blockIdx.x / tiles_x) * kTile;
  const int64_t x0 = (blockIdx.x % tiles_x) * kTile;
  const int ly = threadIdx.y, lx = threadIdx.x;
  const int tid = ly * kTile + lx;
  const int64_t hw = height * width;

  acc sum[kOutPerBlock];
#pragma unroll
  for (int o = 0; o < kOutPerBlock; ++o) sum[o] = 0;

  for (int64_t c0 = 0; c0 < in_channels; c0 += kInChunk) {
    // Stage the scaled input tile (zero outside the image: that is the padding).
    for (int idx = tid; idx < kInChunk * S * S; idx += kTile * kTile) {
      const int ci = idx / (S * S);
      const int sy = (idx / S) % S;
      const int sx = idx % S;
      const int64_t c = c0 + ci;
      const int64_t gy = y0 + sy - P;
      const int64_t gx = x0 + sx - P;
      acc v = 0;
      if (c < in_channels && gy >= 0 && gy < height && gx >= 0 && gx < width) {
        v = static_cast<acc>(x[(n * in_channels + c) * hw + gy * width + gx]) *
            in_scale[n * in_channels + c];
      }
      s_in[ci][sy][sx] = v;
    }
    for (int idx = tid; idx < kOutPerBlock * kInChunk * K * K; idx += kTile * kTile) {
      const int oc = idx / (kInChunk * K * K);
      const int ci = (idx / (K * K)) % kInChunk;
      const int t = idx % (K * K);
      const int64_t o = o0 + oc;
      const int64_t c = c0 + ci;
      s_w[oc][ci][t] = (o < out_channels && c < in_channels)
                           ? static_cast<acc>(weight[(o * in_channels + c) * K * K + t])
                           : acc(0);
    }
    __syncthreads();
#pragma unroll 2
    for (int ci = 0; ci < kInChunk; ++ci) {
      acc patch[K * K];
#pragma unroll
      for (int t = 0; t < K * K; ++t) patch[t] = s_in[ci][ly + t / K][lx + t % K];
#pragma unroll
      for (int oc = 0; oc < kOutPerBlock; ++oc) {
#pragma unroll
        for (int t = 0; t < K * K; ++t) sum[oc] += patch[t] * s_w[oc][ci][t];
      }
    }
    __syncthreads();
  }

  const int64_t y = y0 + ly;
  const int64_t xx = x0 + lx;
  if (y >= height || xx >= width) return;
#pragma unroll
  for (int oc = 0; oc < kOutPerBlock; ++oc) {
    const int64_t o = o0 + oc;
    if (o >= out_channels) break;
    const acc v = out_scale ? sum[oc] * out_scale[n * out_channels + o] : sum[oc];
    out[(n * out_channels + o) * hw + y * width + xx] = static_cast<scalar_t>(v);
  }
}

}  // namespace

at::Tensor scaled_conv2d(at::Tensor x, at::Tensor weight, at::Tensor in_scale,
                            c10::optional<at::Tensor> out_scale) {
  GANTK_CHECK_INPUT(x);
  GANTK_CHECK_INPUT(weight);
  GANTK_CHECK_INPUT(in_scale);
  TORCH_CHECK(x.dim() == 4, "x must be (N, I, H, W)");
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3),
              "weight must be (O, I, K, K)");
  const int64_t k = weight.size(2);
  TORCH_CHECK(k == 1 || k == 3, "only 1x1 and 3x3 kernels are compiled");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight and x dtypes differ");
  TORCH_CHECK(weight.device() == x.device() && in_scale.device() == x.device(),
              "x, weight and in_scale must be on the same GPU");
  const int64_t batch = x.size(0), in_channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(weight.size(1) == in_channels, "weight in-channels differ from x channels");
  TORCH_CHECK(in_scale.dim() == 2 && in_scale.size(0) == batch && in_scale.size(1) == in_channels,
              "in_scale must be (N, I)");
  if (out_scale) {
    GANTK_CHECK_INPUT(*out_scale);
    TORCH_CHECK(out_scale->dim() == 2 && out_scale->size(0) == batch &&
                    out_scale->size(1) == out_channels,
                "out_scale must be (N, O)");
    TORCH_CHECK(out_scale->device() == x.device(), "out_scale must be on the GPU of x");
    TORCH_CHECK(out_scale->scalar_type() == in_scale.scalar_type(),
                "in_scale and out_scale dtypes differ");
  }
  TORCH_CHECK(batch <= 65535, "batch above 65535 is not supported by the kernel grid");
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({batch, out_channels, height, width}, x.options());
  if (out.numel() == 0) return out;
  const int64_t tiles_x = (width + kTile - 1) / kTile;
  const int64_t tiles_y = (height + kTile - 1) / kTile;
  TORCH_CHECK(tiles_x * tiles_y < (int64_t(1) << 31), "image too large for the kernel grid");
  const dim3 grid(static_cast<unsigned int>(tiles_x * tiles_y),
                  static_cast<unsigned int>((out_channels + kOutPerBlock - 1) / kOutPerBlock),
                  static_cast<unsigned int>(batch));
  TORCH_CHECK(grid.y <= 65535, "too many output channels for the kernel grid");
  const dim3 block(kTile, kTile);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "gantk_scaled_conv2d", [&] {
        using acc = acc_t<scalar_t>;
        TORCH_CHECK(in_scale.scalar_type() == c10::CppTypeToScalarType<acc>::value,
                    "scales must be float32 (float64 for float64 inputs)");
        const acc* out_ptr = out_scale ? out_scale->data_ptr<acc>() : nullptr;
        if (k == 3) {
          scaled_conv_kernel<scalar_t, 3><<<grid, block, 0, stream>>>(
              x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), in_scale.data_ptr<acc>(),
              out_ptr, out.data_ptr<scalar_t>(), in_channels, out_channels, height, width,
              tiles_x);
        } else {
          scaled_conv_kernel<scalar_t, 1><<<grid, block, 0, stream>>>(
              x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), in_scale.data_ptr<acc>(),
              out_ptr, out.data_ptr<scalar_t>(), in_channels, out_channels, height, width,
              tiles_x);
        }
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace gantk
