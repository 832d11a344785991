"""noisear-gpu: learned initial-noise priors (NoiseAR, NPNet) for diffusion pipelines.

A thin ctypes layer over libnoisear.so (include/noisear.h). Arrays go in as numpy arrays of any
float dtype and layout (converted to C-contiguous float32; anything else is rejected with a
clear error) and come back as float32 numpy arrays.

    prior = noisear_gpu.load_prior("model.pth", device="auto")
    noise = prior.sample(prompt_embeds, seed=0, temperature=0.5)     # [B, C, H, W]
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "NoiseARError", "Context", "Prior", "devices", "load_prior", "library_path", "abi_version", "version",
    "shapes_sample", "shapes_reward",
]

ABI_VERSION = 1

_STATUS = {
    0: "NOISEAR_OK", -1: "NOISEAR_ERR_INVALID_ARGUMENT", -2: "NOISEAR_ERR_SHAPE", -3: "NOISEAR_ERR_IO",
    -4: "NOISEAR_ERR_FORMAT", -5: "NOISEAR_ERR_DEVICE", -6: "NOISEAR_ERR_UNSUPPORTED", -7: "NOISEAR_ERR_CANCELLED",
    -8: "NOISEAR_ERR_OOM", -99: "NOISEAR_ERR_INTERNAL",
}


class NoiseARError(RuntimeError):
    """A failed library call: `status` is the C status code, the message the library's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.status_name = _STATUS.get(status, str(status))


class NoiseARCancelled(NoiseARError):
    """A progress callback returned False."""


# ---- loading the library -------------------------------------------------------------------

def library_path() -> str:
    """Where libnoisear.so is taken from (see the module docs for the order)."""
    env = os.environ.get("NOISEAR_LIBRARY_PATH")
    if env:
        p = Path(env)
        p = p / "libnoisear.so" if p.is_dir() else p
        if not p.exists():
            raise NoiseARError(-3, f"NOISEAR_LIBRARY_PATH={env}: no libnoisear.so there")
        return str(p)
    here = Path(__file__).resolve().parent
    for candidate in (here / "libnoisear.so", here.parent.parent / ".build" / "release" / "libnoisear.so"):
        if candidate.exists():
            return str(candidate)
    return "libnoisear.so"  # the system's library path


class _DeviceInfo(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char * 32), ("backend", ctypes.c_char * 16), ("type", ctypes.c_char * 16),
                ("name", ctypes.c_char * 128), ("vendor", ctypes.c_char * 128),
                ("memory_bytes", ctypes.c_uint64), ("compute_units", ctypes.c_int32)]


class _ContextParams(ctypes.Structure):
    _fields_ = [("device", ctypes.c_char_p)]


_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class _SampleParams(ctypes.Structure):
    _fields_ = [("seed", ctypes.c_uint64), ("temperature", ctypes.c_float), ("strength", ctypes.c_float),
                ("eps", ctypes.POINTER(ctypes.c_float)), ("uncached", ctypes.c_bool),
                ("progress", _PROGRESS), ("progress_user_data", ctypes.c_void_p)]


class _ShapesParams(ctypes.Structure):
    _fields_ = [("prompt", ctypes.c_char_p), ("seed", ctypes.c_uint64), ("batch", ctypes.c_int32),
                ("steps", ctypes.c_int32), ("cfg", ctypes.c_double), ("sampler", ctypes.c_char_p),
                ("prior", ctypes.c_char_p), ("prior_path", ctypes.c_char_p), ("temperature", ctypes.c_float),
                ("strength", ctypes.c_float), ("model_path", ctypes.c_char_p), ("progress", _PROGRESS),
                ("progress_user_data", ctypes.c_void_p)]


_lib = None
_lib_lock = threading.Lock()
_FP = ctypes.POINTER(ctypes.c_float)


def _load():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise NoiseARError(-3, f"cannot load {path}: {e} (build it with `swift build -c release` "
                                   f"or set NOISEAR_LIBRARY_PATH)") from None
        c_int, c_i64, c_sz, vp, cp = ctypes.c_int, ctypes.c_int64, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
        sigs = {
            "noisear_abi_version": (c_int, []),
            "noisear_version": (cp, []),
            "noisear_last_error": (cp, []),
            "noisear_device_count": (c_int, []),
            "noisear_device_get": (c_int, [c_int, ctypes.POINTER(_DeviceInfo)]),
            "noisear_context_default_params": (_ContextParams, []),
            "noisear_context_create": (c_int, [ctypes.POINTER(_ContextParams), ctypes.POINTER(vp)]),
            "noisear_context_free": (None, [vp]),
            "noisear_context_device": (cp, [vp]),
            "noisear_context_last_error": (cp, [vp]),
            "noisear_prior_load": (c_int, [vp, cp, ctypes.POINTER(vp)]),
            "noisear_prior_free": (None, [vp]),
            "noisear_prior_get_kind": (c_int, [vp]),
            "noisear_prior_latent_shape": (None, [vp, ctypes.POINTER(c_i64)]),
            "noisear_prior_embed_size": (c_i64, [vp]),
            "noisear_sample_default_params": (_SampleParams, []),
            "noisear_prior_sample": (c_int, [vp, _FP, c_i64, c_i64, c_i64, ctypes.POINTER(_SampleParams), _FP, c_sz]),
            "noisear_prior_score": (c_int, [vp, _FP, c_i64, c_i64, c_i64, _FP, c_sz, ctypes.c_float, _FP, _FP, _FP]),
            "noisear_prior_golden": (c_int, [vp, _FP, c_sz, _FP, c_i64, c_i64, c_i64, _FP, c_sz]),
            "noisear_shapes_default_params": (_ShapesParams, []),
            "noisear_shapes_sample": (c_int, [vp, ctypes.POINTER(_ShapesParams), ctypes.POINTER(ctypes.c_uint8), c_sz,
                                              ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32)]),
            "noisear_shapes_reward": (c_int, [ctypes.POINTER(ctypes.c_uint8), ctypes.c_int32, ctypes.c_int32, cp,
                                              ctypes.POINTER(ctypes.c_double)]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        if lib.noisear_abi_version() != ABI_VERSION:
            raise NoiseARError(-99, f"{path} has ABI {lib.noisear_abi_version()}; this package needs {ABI_VERSION}")
        _lib = lib
        return lib


def abi_version() -> int:
    return _load().noisear_abi_version()


def version() -> str:
    return _load().noisear_version().decode()


def _check(status: int, message: Callable[[], bytes]):
    if status != 0:
        text = message().decode("utf-8", "replace")
        cls = NoiseARCancelled if status == -7 else NoiseARError
        raise cls(status, text)


def _floats(name: str, array, ndim: int) -> np.ndarray:
    """A C-contiguous float32 copy (or view) of `array`, checked for rank and finiteness."""
    try:
        a = np.asarray(array)
    except Exception as e:  # objects numpy cannot turn into an array
        raise NoiseARError(-1, f"{name}: not an array ({e})") from None
    if a.dtype.kind not in "fiu" or a.dtype.kind == "c":
        raise NoiseARError(-1, f"{name}: dtype {a.dtype} is not a real number type")
    if a.ndim != ndim:
        raise NoiseARError(-2, f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0])
        raise NoiseARError(-1, f"{name}: holds {a.reshape(-1)[i]} at flat index {i}")
    return a


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_FP)


def _progress(callback: Optional[Callable[[int, int], bool]]):
    if callback is None:
        return _PROGRESS()
    def trampoline(done, total, _user):
        try:
            return bool(callback(done, total) is not False)
        except Exception:
            return False  # an exception in the callback stops the call
    return _PROGRESS(trampoline)


# ---- devices and contexts -------------------------------------------------------------------

def devices() -> List[dict]:
    """Every device: the CPU backend first, then each OpenCL device, then each Vulkan device."""
    lib = _load()
    out = []
    for i in range(lib.noisear_device_count()):
        info = _DeviceInfo()
        _check(lib.noisear_device_get(i, ctypes.byref(info)), lib.noisear_last_error)
        out.append({"id": info.id.decode(), "backend": info.backend.decode(), "type": info.type.decode(),
                    "name": info.name.decode(), "vendor": info.vendor.decode(),
                    "memory_bytes": int(info.memory_bytes), "compute_units": int(info.compute_units)})
    return out


class Context:
    """A device ("auto", "cpu", "opencl", "opencl:N", "vulkan", "vulkan:N"; None: $NOISEAR_DEVICE or auto).
    Use one context per thread."""

    def __init__(self, device: Optional[str] = "auto"):
        self._lib = _load()
        params = self._lib.noisear_context_default_params()
        params.device = device.encode() if device is not None else None
        handle = ctypes.c_void_p()
        _check(self._lib.noisear_context_create(ctypes.byref(params), ctypes.byref(handle)), self._lib.noisear_last_error)
        self._handle = handle

    @property
    def device(self) -> str:
        return self._lib.noisear_context_device(self._handle).decode()

    def _error(self) -> bytes:
        return self._lib.noisear_context_last_error(self._handle)

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.noisear_context_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def load_prior(self, path) -> "Prior":
        handle = ctypes.c_void_p()
        _check(self._lib.noisear_prior_load(self._handle, os.fsencode(str(path)), ctypes.byref(handle)), self._error)
        return Prior(self, handle)


def load_prior(path, device: Optional[str] = "auto") -> "Prior":
    """A NoiseAR or NPNet prior (.safetensors or the authors' .pth) on a new context."""
    return Context(device).load_prior(path)


class Prior:
    """A loaded prior; `kind` is "noisear" or "npnet"."""

    def __init__(self, context: Context, handle):
        self.context = context
        self._lib = context._lib
        self._handle = handle

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.noisear_prior_free(self._handle)
            self._handle = None

    @property
    def kind(self) -> str:
        return {1: "noisear", 2: "npnet"}.get(self._lib.noisear_prior_get_kind(self._handle), "unknown")

    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        s = (ctypes.c_int64 * 3)()
        self._lib.noisear_prior_latent_shape(self._handle, s)
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def embed_size(self) -> int:
        """NoiseAR: the width D of prompt embeddings [B, T, D] (any T); NPNet: T * D."""
        return int(self._lib.noisear_prior_embed_size(self._handle))

    def sample(self, prompt_embeds, seed: int = 0, temperature: float = 0.5, strength: float = 1.0,
               eps=None, cached: bool = True, progress: Optional[Callable[[int, int], bool]] = None) -> np.ndarray:
        """NoiseAR: initial latents [B, C, H, W] for prompt embeddings [B, T, D]; image b from
        Philox stream seed + b (or the standard-normal draws `eps`)."""
        e = _floats("prompt_embeds", prompt_embeds, 3)
        b, t, d = e.shape
        out = np.empty((b,) + self.latent_shape, dtype=np.float32)
        params = self._lib.noisear_sample_default_params()
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise NoiseARError(-1, f"seed must be a non-negative integer, got {seed!r}")
        params.seed = int(seed)
        params.temperature = float(temperature)
        params.strength = float(strength)
        params.uncached = not cached
        keep = None
        if eps is not None:
            keep = _floats("eps", eps, 4)
            if keep.shape != out.shape:
                raise NoiseARError(-2, f"eps: shape {keep.shape} does not match the latent {out.shape}")
            params.eps = _ptr(keep)
        cb = _progress(progress)
        params.progress = cb
        _check(self._lib.noisear_prior_sample(self._handle, _ptr(e), b, t, d, ctypes.byref(params), _ptr(out), out.size),
               self.context._error)
        return out

    def score(self, prompt_embeds, noise, temperature: float = 1.0):
        """NoiseAR: (mu, logvar, log_prob): the teacher-forced Gaussian of every element and the
        exact log-likelihood [B] (nats) of `noise` [B, C, H, W]."""
        e = _floats("prompt_embeds", prompt_embeds, 3)
        x = _floats("noise", noise, 4)
        b, t, d = e.shape
        mu = np.empty_like(x)
        logvar = np.empty_like(x)
        log_prob = np.empty((b,), dtype=np.float32)
        _check(self._lib.noisear_prior_score(self._handle, _ptr(e), b, t, d, _ptr(x), x.size, float(temperature),
                                             _ptr(mu), _ptr(logvar), _ptr(log_prob)), self.context._error)
        return mu, logvar, log_prob

    def golden(self, noise, prompt_embeds) -> np.ndarray:
        """NPNet: the golden noise for an initial noise [B, C, H, W] and embeddings [B, T, D]."""
        x = _floats("noise", noise, 4)
        e = _floats("prompt_embeds", prompt_embeds, 3)
        b, t, d = e.shape
        out = np.empty_like(x)
        _check(self._lib.noisear_prior_golden(self._handle, _ptr(x), x.size, _ptr(e), b, t, d, _ptr(out), out.size),
               self.context._error)
        return out


# ---- the shapes world -----------------------------------------------------------------------

def shapes_sample(prompt: str, seed: int = 0, batch: int = 1, steps: int = 30, cfg: float = 5.0,
                  sampler: str = "dpmpp2m", prior: str = "gaussian", prior_path: Optional[str] = None,
                  temperature: float = 0.5, strength: float = 1.0, model_path: Optional[str] = None,
                  context: Optional[Context] = None, progress: Optional[Callable[[int, int], bool]] = None) -> np.ndarray:
    """Images of the shapes-world model: uint8 [batch, 32, 32, 3]."""
    ctx = context or Context("cpu")
    lib = ctx._lib
    p = lib.noisear_shapes_default_params()
    p.prompt = prompt.encode()
    p.seed, p.batch, p.steps, p.cfg = int(seed), int(batch), int(steps), float(cfg)
    p.sampler, p.prior = sampler.encode(), prior.encode()
    p.prior_path = os.fsencode(prior_path) if prior_path else None
    p.temperature, p.strength = float(temperature), float(strength)
    p.model_path = os.fsencode(model_path) if model_path else None
    cb = _progress(progress)
    p.progress = cb
    if batch < 1:
        raise NoiseARError(-1, f"batch must be at least 1, got {batch}")
    out = np.empty((batch, 32, 32, 3), dtype=np.uint8)
    w, h = ctypes.c_int32(), ctypes.c_int32()
    _check(lib.noisear_shapes_sample(ctx._handle, ctypes.byref(p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                     out.size, ctypes.byref(w), ctypes.byref(h)), ctx._error)
    return out


def shapes_reward(image, prompt: str) -> float:
    """The exact prompt-fidelity reward of an RGB uint8 image [H, W, 3]."""
    lib = _load()
    a = np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise NoiseARError(-2, f"image: expected [H, W, 3], got shape {a.shape}")
    score = ctypes.c_double()
    _check(lib.noisear_shapes_reward(a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), a.shape[1], a.shape[0],
                                     prompt.encode(), ctypes.byref(score)), lib.noisear_last_error)
    return score.value
