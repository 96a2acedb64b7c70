// Python bindings of gantk's CUDA kernels (built by gantk/ops/build.py).
#include <torch/extension.h>

#include <vector>

namespace gantk {
torch::Tensor scaled_conv2d(torch::Tensor x, torch::Tensor weight, torch::Tensor in_scale,
                            c10::optional<torch::Tensor> out_scale);
torch::Tensor patch_attention_forward(torch::Tensor values, torch::Tensor weights,
                                      int64_t kernel_size, int64_t dilation, bool reflect);
std::vector<torch::Tensor> patch_attention_backward(torch::Tensor grad_out, torch::Tensor values,
                                                    torch::Tensor weights, int64_t kernel_size,
                                                    int64_t dilation, bool reflect,
                                                    bool need_values, bool need_weights);
}  // namespace gantk

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gantk CUDA kernels: scaled (modulated) convolution and SAN patch aggregation";
  m.def("scaled_conv2d", &gantk::scaled_conv2d,
        "out_scale * conv2d(x * in_scale, weight), stride 1, same padding, K in {1, 3}",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("in_scale"),
        pybind11::arg("out_scale") = pybind11::none());
  m.def("patch_attention_forward", &gantk::patch_attention_forward,
        "SAN patch aggregation forward", pybind11::arg("values"), pybind11::arg("weights"),
        pybind11::arg("kernel_size"), pybind11::arg("dilation"), pybind11::arg("reflect"));
  m.def("patch_attention_backward", &gantk::patch_attention_backward,
        "SAN patch aggregation backward: (grad_values or None, grad_weights or None)",
        pybind11::arg("grad_out"), pybind11::arg("values"), pybind11::arg("weights"),
        pybind11::arg("kernel_size"), pybind11::arg("dilation"), pybind11::arg("reflect"),
        pybind11::arg("need_values"), pybind11::arg("need_weights"));
}
