"""How tests/data/nvidia-arch was made: tiny random StyleGAN2-ADA networks of the architectures
the shared fixtures do not cover, built and run with NVIDIA's own code (stylegan2-ada-pytorch,
commit d72cc7d, reference ops on a CPU), every parameter and buffer perturbed as the shared
fixtures are. Stored as data only: NVIDIA-named tensors (.safetensors), the construction
arguments (.json) and the outputs NVIDIA's code computes for seeds 0-3 (.npz); no pickle and no
NVIDIA code. Run: python make_reference.py PATH/TO/stylegan2-ada-pytorch OUT_DIR
"""

import json
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, sys.argv[1])
import dnnlib

out = sys.argv[2]
CASES = {"g-resnet-d-skip": ("resnet", "skip"), "g-orig-d-orig": ("orig", "orig")}
for name, (g_arch, d_arch) in CASES.items():
    torch.manual_seed(0)
    common = dict(c_dim=0, img_resolution=16, img_channels=3)
    g_kwargs = dict(
        z_dim=16,
        w_dim=16,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(
            channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=256, architecture=g_arch
        ),
        **common,
    )
    d_kwargs = dict(
        channel_base=256,
        channel_max=16,
        num_fp16_res=0,
        conv_clamp=256,
        architecture=d_arch,
        block_kwargs={},
        mapping_kwargs={},
        epilogue_kwargs=dict(mbstd_group_size=4),
        **common,
    )
    G = dnnlib.util.construct_class_by_name(class_name="training.networks.Generator", **g_kwargs)
    D = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Discriminator", **d_kwargs
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for net in (G, D):
            for _, p in list(net.named_parameters()) + list(net.named_buffers()):
                if p.dtype.is_floating_point:
                    p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))
    G.eval(), D.eval()
    seeds = [0, 1, 2, 3]
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(16) for s in seeds])).float()
    c = torch.zeros([4, 0])
    ref = {"z": z.numpy(), "seeds": np.array(seeds)}
    with torch.no_grad():
        ref["ws"] = G.mapping(z, c).numpy()
        for psi in (1.0, 0.7):
            ref[f"img_psi{psi}"] = G(z, c, truncation_psi=psi, noise_mode="const").numpy()
        ref["d_logits"] = D(torch.from_numpy(ref["img_psi1.0"]), c).numpy()
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/{name}.safetensors")
    with open(f"{out}/{name}.json", "w") as f:
        json.dump({"G_kwargs": g_kwargs, "D_kwargs": d_kwargs}, f, indent=1)
    np.savez(f"{out}/{name}-reference.npz", **ref)
    print(name, {k: v.shape for k, v in ref.items()})
