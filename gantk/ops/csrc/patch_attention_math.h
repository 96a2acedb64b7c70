// Per-element math of SAN patch aggregation, shared by the CUDA kernels (patch_attention.cu) and
// a CPU build used only by the tests, so the index arithmetic that the GPU runs is also checked
// on machines without one.
//
//   out[n, c, y, x] = sum_p weights[n, c % Cw, p, y, x] * values_padded[n, c, y + dy_p*dil, x + dx_p*dil]
//
// with taps p in row-major order (dy outer, dx inner, each in [-K/2, K/2]) and zero or reflect
// padding (reflect mirrors about the edge pixel without repeating it, like torch's "reflect").
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GANTK_HD __host__ __device__ __forceinline__
#else
#define GANTK_HD inline
#endif

namespace gantk {

struct PatchGeometry {
  int64_t batch, channels, weight_channels, height, width;
  int kernel_size, dilation;
  bool reflect;
};

inline PatchGeometry make_geometry(int64_t batch, int64_t channels, int64_t weight_channels,
                                   int64_t height, int64_t width, int64_t kernel_size,
                                   int64_t dilation, bool reflect) {
  PatchGeometry g;
  g.batch = batch;
  g.channels = channels;
  g.weight_channels = weight_channels;
  g.height = height;
  g.width = width;
  g.kernel_size = static_cast<int>(kernel_size);
  g.dilation = static_cast<int>(dilation);
  g.reflect = reflect;
  return g;
}

// Coordinates of element ``index`` of a row-major (N, C, H, W) tensor.
struct Pixel {
  int64_t n, c, y, x;
};

GANTK_HD Pixel pixel_of(const PatchGeometry& g, int64_t index) {
  const int64_t hw = g.height * g.width;
  return {index / (hw * g.channels), (index / hw) % g.channels, (index / g.width) % g.height,
          index % g.width};
}

// Maps a possibly padded coordinate to the image row/column it reads, or returns false where
// zero padding contributes nothing. The host checks that the overhang is smaller than the size,
// so one reflection is enough.
GANTK_HD bool source_coord(int64_t i, int64_t size, bool reflect, int64_t& out) {
  if (i >= 0 && i < size) {
    out = i;
    return true;
  }
  if (!reflect) return false;
  out = i < 0 ? -i : 2 * (size - 1) - i;
  return true;
}

// Every padded coordinate t with source_coord(t) == i (at most three with reflect padding: i,
// its mirror left of 0, and its mirror right of size-1). Returns how many were written.
GANTK_HD int padded_preimages(int64_t i, int64_t size, bool reflect, int64_t* out) {
  int count = 0;
  out[count++] = i;
  if (reflect && i > 0) out[count++] = -i;
  if (reflect && i < size - 1) out[count++] = 2 * (size - 1) - i;
  return count;
}

// out[index] for index over (N, C, H, W) in row-major order.
template <typename scalar_t, typename acc_t>
GANTK_HD acc_t patch_forward_at(const PatchGeometry& g, const scalar_t* values,
                                const scalar_t* weights, int64_t index) {
  const int64_t hw = g.height * g.width;
  const auto [n, c, y, x] = pixel_of(g, index);
  const int taps = g.kernel_size * g.kernel_size;
  const int half = g.kernel_size / 2;
  const scalar_t* plane = values + (n * g.channels + c) * hw;
  const scalar_t* w = weights + (n * g.weight_channels + c % g.weight_channels) * taps * hw +
                      y * g.width + x;
  acc_t sum = 0;
  for (int p = 0; p < taps; ++p) {
    int64_t sy, sx;
    if (!source_coord(y + (p / g.kernel_size - half) * g.dilation, g.height, g.reflect, sy)) continue;
    if (!source_coord(x + (p % g.kernel_size - half) * g.dilation, g.width, g.reflect, sx)) continue;
    sum += static_cast<acc_t>(w[p * hw]) * static_cast<acc_t>(plane[sy * g.width + sx]);
  }
  return sum;
}

// d loss / d values[index], index over (N, C, H, W): gathers from every output pixel whose patch
// reads this value (deterministic, no atomics).
template <typename scalar_t, typename acc_t>
GANTK_HD acc_t patch_grad_values_at(const PatchGeometry& g, const scalar_t* grad_out,
                                    const scalar_t* weights, int64_t index) {
  const int64_t hw = g.height * g.width;
  const auto [n, c, y, x] = pixel_of(g, index);
  const int taps = g.kernel_size * g.kernel_size;
  const int half = g.kernel_size / 2;
  const scalar_t* go = grad_out + (n * g.channels + c) * hw;
  const scalar_t* w = weights + (n * g.weight_channels + c % g.weight_channels) * taps * hw;
  int64_t rows[3], cols[3];
  const int n_rows = padded_preimages(y, g.height, g.reflect, rows);
  const int n_cols = padded_preimages(x, g.width, g.reflect, cols);
  acc_t sum = 0;
  for (int p = 0; p < taps; ++p) {
    const int64_t oy = (p / g.kernel_size - half) * g.dilation;
    const int64_t ox = (p % g.kernel_size - half) * g.dilation;
    for (int i = 0; i < n_rows; ++i) {
      const int64_t h = rows[i] - oy;  // the output row whose tap p lands on padded row rows[i]
      if (h < 0 || h >= g.height) continue;
      for (int j = 0; j < n_cols; ++j) {
        const int64_t v = cols[j] - ox;
        if (v < 0 || v >= g.width) continue;
        const int64_t at = h * g.width + v;
        sum += static_cast<acc_t>(go[at]) * static_cast<acc_t>(w[p * hw + at]);
      }
    }
  }
  return sum;
}

// d loss / d weights[index], index over (N, Cw, K*K, H, W): sums over the C / Cw value channels
// that share this weight channel.
template <typename scalar_t, typename acc_t>
GANTK_HD acc_t patch_grad_weights_at(const PatchGeometry& g, const scalar_t* grad_out,
                                     const scalar_t* values, int64_t index) {
  const int64_t hw = g.height * g.width;
  const int taps = g.kernel_size * g.kernel_size;
  const int half = g.kernel_size / 2;
  const int64_t x = index % g.width;
  const int64_t y = (index / g.width) % g.height;
  const int p = static_cast<int>((index / hw) % taps);
  const int64_t r = (index / (hw * taps)) % g.weight_channels;
  const int64_t n = index / (hw * taps * g.weight_channels);
  int64_t sy, sx;
  if (!source_coord(y + (p / g.kernel_size - half) * g.dilation, g.height, g.reflect, sy)) return 0;
  if (!source_coord(x + (p % g.kernel_size - half) * g.dilation, g.width, g.reflect, sx)) return 0;
  acc_t sum = 0;
  for (int64_t c = r; c < g.channels; c += g.weight_channels) {
    const int64_t plane = (n * g.channels + c) * hw;
    sum += static_cast<acc_t>(grad_out[plane + y * g.width + x]) *
           static_cast<acc_t>(values[plane + sy * g.width + sx]);
  }
  return sum;
}

}  // namespace gantk
