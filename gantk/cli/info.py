"""``gantk info``: what this installation can do on this machine."""

from __future__ import annotations

from gantk.cli.common import JsonOpt, Output, QuietOpt, handle_errors


def collect_info() -> dict:
    import platform

    import torch

    from gantk import __version__
    from gantk.io.builtin import BUILTINS
    from gantk.io.bundled import BUNDLED, MODELS_DIR
    from gantk.io.weights import search_dirs, weights_report
    from gantk.ops import backend_report

    devices = [{"name": "cpu", "threads": torch.get_num_threads()}]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "name": f"cuda:{i}",
                "model": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return {
        "gantk": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "devices": devices,
        "ops": backend_report(),
        "weights_search_path": [str(d) for d in search_dirs()],
        "weights": weights_report(),
        "builtin_datasets": sorted(BUILTINS),
        "bundled_models": {spec: (MODELS_DIR / f).is_file() for spec, f in BUNDLED.items()},
    }


@handle_errors
def info(as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show versions, devices, the active op implementation, and where weights are found."""
    out = Output(quiet, as_json)
    facts = collect_info()
    if not as_json:
        rows = [
            [k, facts[k]]
            for k in ("gantk", "python", "platform", "torch", "cuda", "cuda_available", "cudnn")
        ]
        rows.append(
            [
                "devices",
                ", ".join(
                    d["name"] + (f" ({d['model']}, {d['memory_gib']} GiB)" if "model" in d else "")
                    for d in facts["devices"]
                ),
            ]
        )
        ops = facts["ops"]
        rows.append(["ops", f"{ops['active']} (GANTK_OPS={ops['requested']}: {ops['reason']})"])
        for name, op in ops["ops"].items():
            rows.append([f"  {name}", f"{op['path']}; kernel covers {op['kernel_covers']}"])
        rows.append(["weights searched in", "; ".join(facts["weights_search_path"])])
        rows.append(
            [
                "bundled models",
                ", ".join(
                    spec + ("" if ok else " (missing: make models)")
                    for spec, ok in facts["bundled_models"].items()
                ),
            ]
        )
        out.table("gantk", ["item", "value"], rows)
        out.table(
            "standard weight files",
            ["key", "file", "used by", "found at"],
            [
                [w["key"], w["file"], w["used_by"], w["found"] or "missing"]
                for w in facts["weights"]
            ],
        )
    out.result(facts)
