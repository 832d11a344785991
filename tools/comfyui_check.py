"""Runs the ComfyUI node pack (integrations/comfyui) against ComfyUI's own noise code.

    /path/to/venv/bin/python tools/comfyui_check.py COMFYUI_DIR

Needs torch and numpy (not part of CI) and a ComfyUI source tree: from it, the function
`prepare_noise` (comfy/sample.py) and the class `Noise_RandomNoise`
(comfy_extras/nodes_custom_sampler.py) are taken as they are and run; ComfyUI's other modules
(models, samplers, the server) are not imported. Checks, each printed:
1. NoiseAR Noise at strength 0 equals ComfyUI's RandomNoise for the same seed bit for bit, with
   and without batch_index (the prior's draws are ComfyUI's own noise);
2. at strength 1 it is the prior's sample from exactly those draws, a CPU float32 tensor shaped
   like the latent;
3. NPNet Golden Noise wrapping ComfyUI's RandomNoise is the NPNet of that noise;
4. a latent the prior was not trained for gives ComfyUI's noise and a warning.
"""
import ast
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("NOISEAR_FIXTURES", ROOT.parent / "shared" / "fixtures"))
sys.path.insert(0, str(ROOT / "python"))
import noisear_gpu as ng  # noqa: E402


def top_level(source: str, name: str) -> str:
    """The source of one top-level function or class of a ComfyUI file, as written there."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(source, node)
    raise SystemExit(f"{name} not found")


def comfyui(comfy_dir: Path):
    sample_src = (comfy_dir / "comfy" / "sample.py").read_text()
    nodes_src = (comfy_dir / "comfy_extras" / "nodes_custom_sampler.py").read_text()
    comfy = types.ModuleType("comfy")
    comfy.sample = types.ModuleType("comfy.sample")
    exec(top_level(sample_src, "prepare_noise"), {"torch": torch, "np": np}, comfy.sample.__dict__)
    scope = {"torch": torch, "comfy": comfy}
    exec(top_level(nodes_src, "Noise_RandomNoise"), scope)
    return scope["Noise_RandomNoise"]


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    RandomNoise = comfyui(Path(sys.argv[1]))
    spec = importlib.util.spec_from_file_location("noisear_nodes", ROOT / "integrations" / "comfyui" / "nodes.py")
    nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nodes)
    prior_path = str(FIXTURES / "pth" / "noisear_tiny.pth")
    prior = ng.load_prior(prior_path, device="cpu")
    emb = torch.randn(1, 5, prior.embed_size, generator=torch.Generator().manual_seed(1))
    cond = [[emb, {"pooled_output": torch.zeros(1, 8)}]]
    seed = 2**63 + 12345  # ComfyUI's seeds go to 2^64 - 1
    ok = True

    def check(name, cond_ok):
        nonlocal ok
        ok &= bool(cond_ok)
        print(("ok   " if cond_ok else "FAIL ") + name)

    for index in (None, [3, 0, 3]):
        latent = {"samples": torch.zeros((3,) + prior.latent_shape)}
        if index is not None:
            latent["batch_index"] = index
        theirs = RandomNoise(seed).generate_noise(latent)
        zero = nodes.NoiseARNoiseNode().get_noise(seed, cond, prior_path, 0.5, 0.0, "cpu", 0)[0].generate_noise(latent)
        check(f"strength 0 == ComfyUI RandomNoise (batch_index {index})",
              isinstance(zero, torch.Tensor) and torch.equal(zero, theirs))
        noise = nodes.NoiseARNoiseNode().get_noise(seed, cond, prior_path, 0.5, 1.0, "cpu", 0)[0].generate_noise(latent)
        want = prior.sample(emb.repeat(3, 1, 1), eps=theirs, temperature=0.5)
        check(f"strength 1 == the prior's sample from ComfyUI's draws (batch_index {index})",
              noise.dtype == torch.float32 and noise.device.type == "cpu" and noise.shape == theirs.shape
              and torch.equal(noise, want))
    np_path = str(FIXTURES / "pth" / "npnet_tiny.pth")
    npnet = ng.load_prior(np_path, device="cpu")
    t = npnet.embed_size
    pemb = torch.randn(1, 1, t, generator=torch.Generator().manual_seed(2))
    latent = {"samples": torch.zeros((2,) + npnet.latent_shape)}
    golden = nodes.NPNetGoldenNoiseNode().get_noise(RandomNoise(7), [[pemb, {}]], np_path, "cpu")[0]
    out = golden.generate_noise(latent)
    base = RandomNoise(7).generate_noise(latent)
    check("NPNet Golden Noise == NPNet(ComfyUI RandomNoise)", torch.equal(out, npnet.golden(base, pemb.repeat(2, 1, 1))))
    check("NPNet Golden Noise keeps the upstream seed", golden.seed == 7)
    logging.basicConfig(level=logging.WARNING)
    odd = {"samples": torch.zeros(1, 16, 8, 8)}
    fallback = nodes.NoiseARNoise(seed, cond, prior_path).generate_noise(odd)
    check("an untrained latent gives ComfyUI's own noise", torch.equal(fallback, RandomNoise(seed).generate_noise(odd)))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
