// Shared helpers for gantk's CUDA kernels: input checks and the accumulator type.
#pragma once

#include <ATen/AccumulateType.h>
#include <c10/util/Optional.h>
// c10 only (not ATen/cuda/CUDAContext.h): that header pulls in cuSPARSE/cuBLAS headers which a
// CUDA toolkit without those libraries lacks, and these kernels need none of them.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
// ATen only, not torch/extension.h: the .cu files need tensors and dispatch, not pybind11 or the
// C++ frontend, and skipping those headers roughly halves the nvcc time.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#define GANTK_CHECK_CUDA(t) TORCH_CHECK((t).is_cuda(), #t " must be a CUDA tensor")
#define GANTK_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define GANTK_CHECK_INPUT(t) \
  GANTK_CHECK_CUDA(t);       \
  GANTK_CHECK_CONTIGUOUS(t)

namespace gantk {

// float for float/half/bfloat16 (sums of dozens to thousands of products need its mantissa),
// double for double (gradcheck).
template <typename scalar_t>
using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;

inline unsigned int blocks_for(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

}  // namespace gantk
