"""The ComfyUI node pack's logic (integrations/comfyui/nodes.py) without ComfyUI or torch:
numpy latents stand in for ComfyUI's tensors. tools/comfyui_check.py runs the same nodes against
ComfyUI's own noise code with torch."""
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

import noisear_gpu as ng
from test_noisear_gpu import FIXTURES, ROOT, read_safetensors, rel_err

spec = importlib.util.spec_from_file_location("noisear_comfy_nodes", ROOT / "integrations" / "comfyui" / "nodes.py")
nodes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nodes)


@pytest.fixture(scope="module")
def fx():
    return read_safetensors(FIXTURES / "noisear" / "noisear_tiny.safetensors"), read_safetensors(FIXTURES / "npnet" / "npnet_tiny.safetensors")


def test_node_classes_as_comfyui_registers_them():
    assert set(nodes.NODE_CLASS_MAPPINGS) == {"NoiseARNoise", "NPNetGoldenNoise"}
    for cls in nodes.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()["required"]
        assert cls.RETURN_TYPES == ("NOISE",) and hasattr(cls, cls.FUNCTION) and "conditioning" in spec
    (noise,) = nodes.NoiseARNoiseNode().get_noise(7, [], "x.pth", 0.5, 1.0, "cpu", 0)
    assert noise.seed == 7 and hasattr(noise, "generate_noise")


def test_noisear_noise_uses_comfyuis_seeds(fx):
    nf, _ = fx
    text = nf["input.text_emb"].astype(np.float32)
    b = text.shape[0]
    prior_path = str(FIXTURES / "pth" / "noisear_tiny.pth")
    prior = ng.load_prior(prior_path, device="cpu")
    shape = (b,) + prior.latent_shape
    cond = [[text, {"pooled_output": None}]]
    latent = {"samples": np.zeros(shape, np.float32)}
    out = nodes.NoiseARNoise(42, cond, prior_path, 0.5, 1.0, "cpu").generate_noise(latent)
    eps = ng.gaussian_noise(shape, seed=42, rng="torch")
    assert out.shape == shape and out.dtype == np.float32
    assert np.array_equal(out, prior.sample(text, eps=eps, temperature=0.5))
    # strength 0 is exactly ComfyUI's own noise for the seed (torch.randn of the latent).
    zero = nodes.NoiseARNoise(42, cond, prior_path, 0.5, 0.0, "cpu").generate_noise(latent)
    assert np.array_equal(zero, eps)
    # batch_index: ComfyUI's per-index draws, the conditioning repeated to the batch.
    latent_i = {"samples": np.zeros(shape, np.float32), "batch_index": [3, 0][:b] if b == 2 else [3] * b}
    zero_i = nodes.NoiseARNoise(42, [[text[:1], {}]], prior_path, 0.5, 0.0, "cpu").generate_noise(latent_i)
    assert np.array_equal(zero_i, ng.gaussian_noise(shape, seed=42, rng="torch", batch_index=latent_i["batch_index"]))


def test_noisear_noise_falls_back_for_latents_it_was_not_trained_for(fx, caplog):
    nf, _ = fx
    text = nf["input.text_emb"].astype(np.float32)
    prior_path = str(FIXTURES / "pth" / "noisear_tiny.pth")
    shape = (2, 16, 8, 8)  # other channels and size
    with caplog.at_level(logging.WARNING):
        out = nodes.NoiseARNoise(5, [[text, {}]], prior_path).generate_noise({"samples": np.zeros(shape, np.float32)})
    assert np.array_equal(out, ng.gaussian_noise(shape, seed=5, rng="torch"))
    assert "not trained for" in caplog.text
    # A missing prior or unusable conditioning: a warning and the same Gaussian noise, no crash.
    out = nodes.NoiseARNoise(5, [[text, {}]], "/nonexistent.pth").generate_noise({"samples": np.zeros(shape, np.float32)})
    assert np.array_equal(out, ng.gaussian_noise(shape, seed=5, rng="torch"))
    prior = ng.load_prior(prior_path, device="cpu")
    good = (2,) + prior.latent_shape
    out = nodes.NoiseARNoise(5, [[text[:, :, :7], {}]], prior_path).generate_noise({"samples": np.zeros(good, np.float32)})
    assert np.array_equal(out, ng.gaussian_noise(good, seed=5, rng="torch"))
    assert "wide prompt embeddings" in caplog.text


def test_npnet_golden_noise_wraps_an_upstream_noise(fx):
    _, pf = fx
    noise, emb = pf["input.noise"].astype(np.float32), pf["input.prompt_embeds"].astype(np.float32)

    class Upstream:
        seed = 9

        def generate_noise(self, latent):
            return noise

    path = str(FIXTURES / "pth" / "npnet_tiny.pth")
    golden = nodes.NPNetGoldenNoise(Upstream(), [[emb, {}]], path, "cpu")
    assert golden.seed == 9
    out = golden.generate_noise({"samples": np.zeros(noise.shape, np.float32)})
    assert rel_err(out, pf["output.golden_noise"]) < 1e-3
    # Latents of another shape pass the upstream noise through.
    other = np.zeros((1, 3, 5, 5), np.float32)

    class Other(Upstream):
        def generate_noise(self, latent):
            return other + 1

    assert np.array_equal(nodes.NPNetGoldenNoise(Other(), [[emb, {}]], path, "cpu").generate_noise({"samples": other}), other + 1)
