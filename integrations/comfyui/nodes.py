"""The node logic, kept free of ComfyUI and torch imports so it can be tested without either.

ComfyUI's custom samplers take a NOISE object: a `seed` attribute and `generate_noise(latent)`
returning a CPU float32 tensor shaped like `latent["samples"]`, honouring the optional
`latent["batch_index"]`. These nodes make such objects:

- NoiseAR Noise: the prior's sample for the prompt in CONDITIONING. Its standard normals are
  the ones ComfyUI's own random noise would use for the seed and batch_index (torch's CPU
  generator, drawn by noisear_gpu bit for bit), so strength 0 gives exactly ComfyUI's noise.
- NPNet Golden Noise: wraps an upstream NOISE and maps its noise to the golden noise.

A latent the prior was not trained for (other channels or size), or prompt embeddings of another
width, is not an error: the node warns once and gives the upstream noise (NPNet) or ComfyUI's
own Gaussian noise for the seed (NoiseAR), never a crash.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np

try:  # the package, installed or on PYTHONPATH
    import noisear_gpu as ng
except ImportError:  # pragma: no cover - a clear message in ComfyUI's log instead of a failed import
    ng = None

log = logging.getLogger("noisear_gpu.comfyui")

_priors: Dict[Tuple[str, str, int], Any] = {}
_priors_lock = threading.Lock()


def _require_package():
    if ng is None:
        raise RuntimeError("noisear_gpu is not importable: pip install its wheel or add its python/ folder to PYTHONPATH")


def load_prior(path: str, device: str = "auto", heads: int = 0):
    """A prior, loaded once per (path, device, heads) and shared by the nodes that name it."""
    _require_package()
    key = (str(path), device, int(heads))
    with _priors_lock:
        if key not in _priors:
            _priors[key] = ng.load_prior(path, device=device, heads=int(heads) if heads else None)
        return _priors[key]


def conditioning_embeds(conditioning, batch: int):
    """Prompt embeddings [B, T, D] from ComfyUI CONDITIONING (a list of [cond [b, T, D], extras]);
    the first entry's cond, its batch repeated or cut to `batch`."""
    if not conditioning:
        raise ValueError("empty conditioning")
    cond = conditioning[0][0]
    emb = ng._as_numpy("conditioning", cond)
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim == 2:
        emb = emb[None]
    if emb.ndim != 3:
        raise ValueError(f"conditioning of shape {emb.shape}: expected [B, T, D]")
    reps = -(-batch // emb.shape[0])
    return np.ascontiguousarray(np.concatenate([emb] * reps, axis=0)[:batch])


def _latent(input_latent):
    samples = input_latent["samples"]
    shape = tuple(int(s) for s in samples.shape)
    if len(shape) != 4:
        raise ValueError(f"latent of shape {shape}: expected [B, C, H, W]")
    index = input_latent.get("batch_index") if hasattr(input_latent, "get") else None
    return samples, shape, (list(index) if index is not None else None)


_warned = set()


def _warn_once(message: str):
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def comfy_gaussian(shape, seed: int, batch_index, like):
    """ComfyUI's own noise for a seed (its prepare_noise), drawn by noisear_gpu bit for bit."""
    _require_package()
    return ng.gaussian_noise(shape, seed=seed, rng="torch", batch_index=batch_index, like=_cpu_float(like))


def _cpu_float(x):
    """What ComfyUI expects back: a CPU float32 tensor (or numpy for numpy callers)."""
    if ng is not None and ng._is_torch(x):
        return x.detach().to(device="cpu").float()
    return None


class NoiseARNoise:
    """A ComfyUI NOISE object drawing a NoiseAR prior's sample."""

    def __init__(self, seed: int, conditioning, prior_path: str, temperature: float = 0.5, strength: float = 1.0,
                 device: str = "auto", heads: int = 0):
        self.seed = int(seed)
        self.conditioning = conditioning
        self.prior_path = prior_path
        self.temperature = float(temperature)
        self.strength = float(strength)
        self.device = device
        self.heads = int(heads)

    def generate_noise(self, input_latent):
        samples, shape, index = _latent(input_latent)
        eps = comfy_gaussian(shape, self.seed, index, None)
        like = _cpu_float(samples)
        try:
            prior = load_prior(self.prior_path, self.device, self.heads)
        except Exception as e:
            _warn_once(f"NoiseAR Noise: cannot load {self.prior_path} ({e}); using Gaussian noise")
            return comfy_gaussian(shape, self.seed, index, samples)
        if prior.kind != "noisear" or tuple(prior.latent_shape) != shape[1:]:
            _warn_once(f"NoiseAR Noise: the prior ({prior.kind}, latent {prior.latent_shape}) was not trained for "
                       f"latents {list(shape[1:])}; using Gaussian noise")
            return comfy_gaussian(shape, self.seed, index, samples)
        try:
            emb = conditioning_embeds(self.conditioning, shape[0])
        except Exception as e:
            _warn_once(f"NoiseAR Noise: unusable conditioning ({e}); using Gaussian noise")
            return comfy_gaussian(shape, self.seed, index, samples)
        if emb.shape[2] != prior.embed_size:
            _warn_once(f"NoiseAR Noise: the prior takes {prior.embed_size}-wide prompt embeddings, the conditioning "
                       f"has {emb.shape[2]}; using Gaussian noise")
            return comfy_gaussian(shape, self.seed, index, samples)
        out = prior.sample(emb, seed=self.seed, temperature=self.temperature, strength=self.strength, eps=eps)
        return like_of(out, like)


class NPNetGoldenNoise:
    """A ComfyUI NOISE object: an upstream NOISE mapped to NPNet's golden noise."""

    def __init__(self, noise, conditioning, prior_path: str, device: str = "auto"):
        self.noise = noise
        self.seed = getattr(noise, "seed", 0)
        self.conditioning = conditioning
        self.prior_path = prior_path
        self.device = device

    def generate_noise(self, input_latent):
        samples, shape, _ = _latent(input_latent)
        base = self.noise.generate_noise(input_latent)
        try:
            prior = load_prior(self.prior_path, self.device)
        except Exception as e:
            _warn_once(f"NPNet Golden Noise: cannot load {self.prior_path} ({e}); passing the noise through")
            return base
        if prior.kind != "npnet" or tuple(prior.latent_shape) != shape[1:]:
            _warn_once(f"NPNet Golden Noise: the network ({prior.kind}, latent {prior.latent_shape}) was not trained for "
                       f"latents {list(shape[1:])}; passing the noise through")
            return base
        try:
            emb = conditioning_embeds(self.conditioning, shape[0])
        except Exception as e:
            _warn_once(f"NPNet Golden Noise: unusable conditioning ({e}); passing the noise through")
            return base
        if emb.shape[1] * emb.shape[2] != prior.embed_size:
            _warn_once(f"NPNet Golden Noise: the network takes T x D = {prior.embed_size} prompt features, the "
                       f"conditioning has {emb.shape[1]} x {emb.shape[2]}; passing the noise through")
            return base
        return like_of(prior.golden(base, emb), _cpu_float(base))


def like_of(out, like):
    """numpy `out` as a CPU float32 torch tensor when the caller works in torch."""
    if like is None or not ng._is_torch(like):
        return np.asarray(out, dtype=np.float32) if not ng._is_torch(out) else out.detach().cpu().float()
    import sys
    torch = sys.modules["torch"]
    return out.detach().cpu().float() if isinstance(out, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


# ---- the node classes ComfyUI registers ------------------------------------------------------

class NoiseARNoiseNode:
    CATEGORY = "sampling/custom_sampling/noise"
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    DESCRIPTION = ("Initial noise from a NoiseAR prior for the prompt (noisear-gpu). Same seeds as ComfyUI's noise: "
                   "strength 0 gives exactly RandomNoise's output.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "conditioning": ("CONDITIONING",),
            "prior_path": ("STRING", {"default": "noisear.pth"}),
            "temperature": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.01}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "device": ("STRING", {"default": "auto"}),
            "heads": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "0: from config.json beside the file, else 1"}),
        }}

    def get_noise(self, noise_seed, conditioning, prior_path, temperature, strength, device, heads):
        return (NoiseARNoise(noise_seed, conditioning, prior_path, temperature, strength, device, heads),)


class NPNetGoldenNoiseNode:
    CATEGORY = "sampling/custom_sampling/noise"
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    DESCRIPTION = "Maps an upstream NOISE to NPNet's golden noise for the prompt (noisear-gpu)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "noise": ("NOISE",),
            "conditioning": ("CONDITIONING",),
            "prior_path": ("STRING", {"default": "npnet.pth"}),
            "device": ("STRING", {"default": "auto"}),
        }}

    def get_noise(self, noise, conditioning, prior_path, device):
        return (NPNetGoldenNoise(noise, conditioning, prior_path, device),)


NODE_CLASS_MAPPINGS = {"NoiseARNoise": NoiseARNoiseNode, "NPNetGoldenNoise": NPNetGoldenNoiseNode}
NODE_DISPLAY_NAME_MAPPINGS = {"NoiseARNoise": "NoiseAR Noise", "NPNetGoldenNoise": "NPNet Golden Noise"}
