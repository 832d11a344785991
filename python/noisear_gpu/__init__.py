"""noisear-gpu: learned initial-noise priors (NoiseAR, NPNet) for diffusion pipelines.

A thin ctypes layer over libnoisear.so (include/noisear.h). Arrays go in as numpy arrays, torch
tensors (any float dtype including bfloat16, any device) or other DLPack objects, and come back
as the caller's kind: a torch tensor on the input's device and dtype for torch input, a numpy
array of the input's float dtype for numpy input, else float32 numpy. torch is never imported by this package; it is used only when the caller
hands it in.

    prior = noisear_gpu.load_prior("model.pth", device="auto")
    noise = prior.sample(prompt_embeds, seed=0, temperature=0.5, rng="torch")   # [B, C, H, W]
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "NoiseARError", "Context", "Prior", "devices", "load_prior", "library_path", "abi_version", "version",
    "shapes_sample", "shapes_reward", "gaussian_noise", "RNGS",
]

ABI_VERSION = 2
RNGS = {"philox": 0, "torch": 1}

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
                ("progress", _PROGRESS), ("progress_user_data", ctypes.c_void_p), ("rng", ctypes.c_int)]


class _PriorLoadParams(ctypes.Structure):
    _fields_ = [("heads", ctypes.c_int32), ("svd_heads", ctypes.c_int32)]


class _ShapesParams(ctypes.Structure):
    _fields_ = [("prompt", ctypes.c_char_p), ("seed", ctypes.c_uint64), ("batch", ctypes.c_int32),
                ("steps", ctypes.c_int32), ("cfg", ctypes.c_double), ("sampler", ctypes.c_char_p),
                ("prior", ctypes.c_char_p), ("prior_path", ctypes.c_char_p), ("temperature", ctypes.c_float),
                ("strength", ctypes.c_float), ("model_path", ctypes.c_char_p), ("progress", _PROGRESS),
                ("progress_user_data", ctypes.c_void_p), ("rng", ctypes.c_int)]


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
            "noisear_prior_load_default_params": (_PriorLoadParams, []),
            "noisear_prior_load_ex": (c_int, [vp, cp, ctypes.POINTER(_PriorLoadParams), ctypes.POINTER(vp)]),
            "noisear_gaussian_noise": (c_int, [c_int, ctypes.c_uint64, c_i64, ctypes.POINTER(c_i64), _FP, c_sz]),
            "noisear_prior_free": (None, [vp]),
            "noisear_prior_last_error": (cp, [vp]),
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


class _Kind:
    """How to hand a result back in the caller's kind: a torch tensor on the input's device and
    dtype, a numpy array of the input's float dtype, else float32 numpy."""

    def __init__(self, like=None):
        self.like = like if _is_torch(like) else None
        self.dtype = like.dtype if isinstance(like, np.ndarray) and like.dtype.kind == "f" else None

    def wrap(self, a: np.ndarray):
        if self.like is None:
            return a if self.dtype is None or self.dtype == a.dtype else a.astype(self.dtype)
        torch = sys.modules["torch"]
        return torch.from_numpy(a).to(device=self.like.device, dtype=self.like.dtype)


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and "torch" in sys.modules and \
        isinstance(x, sys.modules["torch"].Tensor)


def _as_numpy(name: str, array):
    """numpy arrays as they are; torch tensors (any dtype incl. bfloat16, any device) detached,
    moved to the CPU and widened to float32; other DLPack objects through numpy's DLPack import."""
    if _is_torch(array):
        t = array.detach()
        if t.is_complex():
            raise NoiseARError(-1, f"{name}: dtype {t.dtype} is not a real number type")
        if t.dtype.is_floating_point or t.dtype in (sys.modules["torch"].int32, sys.modules["torch"].int64):
            return t.to(device="cpu", dtype=sys.modules["torch"].float32).contiguous().numpy()
        raise NoiseARError(-1, f"{name}: dtype {t.dtype} is not a real number type")
    if not isinstance(array, np.ndarray) and hasattr(array, "__dlpack__"):
        try:
            return np.from_dlpack(array)
        except Exception as e:  # a device numpy cannot read, or a dtype it does not have
            raise NoiseARError(-1, f"{name}: DLPack object numpy cannot import ({e}); pass it on the CPU") from None
    return array


def _floats(name: str, array, ndim: int) -> np.ndarray:
    """A C-contiguous float32 copy (or view) of `array`, checked for rank and finiteness."""
    array = _as_numpy(name, array)
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


def _rng(rng: str) -> int:
    if rng not in RNGS:
        raise NoiseARError(-1, f"rng {rng!r}: expected one of {', '.join(RNGS)}")
    return RNGS[rng]


def gaussian_noise(shape: Sequence[int], seed: int = 0, rng: str = "torch", batch_index=None, like=None):
    """Standard-normal noise [B, ...]. rng="torch": torch.randn(shape,
    generator=torch.Generator().manual_seed(seed)) bit for bit (no torch needed); with
    `batch_index` (one index per image) ComfyUI's per-index draws. rng="philox": image i from
    the Philox stream seed + index. `like` (a torch tensor) picks the returned kind, device and dtype."""
    lib = _load()
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise NoiseARError(-2, f"shape {shape}: every size must be positive")
    out = np.empty(shape, dtype=np.float32)
    idx = None
    if batch_index is not None:
        idx = np.ascontiguousarray(np.asarray(list(batch_index), dtype=np.int64))
        if idx.shape != (shape[0],):
            raise NoiseARError(-2, f"batch_index has {idx.size} entries for a batch of {shape[0]}")
    _check(lib.noisear_gaussian_noise(_rng(rng), _seed(seed), shape[0],
                                      idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)) if idx is not None else None,
                                      _ptr(out), out.size), lib.noisear_last_error)
    return _Kind(like).wrap(out)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_FP)


class _Progress:
    """A progress callback for the C library. Whatever the Python callback raises (an error,
    KeyboardInterrupt, SystemExit) cancels the call and is raised again, unchanged, once the
    call has returned: nothing is swallowed and the interpreter's own signals keep working."""

    def __init__(self, callback: Optional[Callable[[int, int], bool]]):
        self.error: Optional[BaseException] = None
        if callback is None:
            self.c = _PROGRESS()
            return

        def trampoline(done, total, _user):
            if self.error is not None:
                return False
            try:
                return bool(callback(done, total) is not False)
            except BaseException as e:  # noqa: B036 - re-raised after the C call returns
                self.error = e
                return False
        self.c = _PROGRESS(trampoline)

    def reraise(self):
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _seed(seed) -> int:
    """A seed as the library takes it: an integer in 0 ... 2^64 - 1 (no silent wrap-around)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise NoiseARError(-1, f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise NoiseARError(-1, f"seed {seed} is outside 0 ... 2^64 - 1")
    return seed


def _cstring(name: str, value) -> bytes:
    """A path or text as C bytes; an embedded NUL byte is refused (C would cut the string there)."""
    b = os.fsencode(value) if isinstance(value, (os.PathLike, bytes)) else str(value).encode()
    if b"\0" in b:
        raise NoiseARError(-1, f"{name} {value!r} contains a NUL byte")
    return b


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


class _Closable:
    """A handle freed by close(), by `with`, or when collected."""

    def close(self):
        raise NotImplementedError

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Context(_Closable):
    """A device ("auto", "cpu", "opencl", "opencl:N", "vulkan", "vulkan:N"; None: $NOISEAR_DEVICE or auto).
    Use one context per thread."""

    def __init__(self, device: Optional[str] = "auto"):
        self._lib = _load()
        params = self._lib.noisear_context_default_params()
        params.device = _cstring("device", device) if device is not None else None
        handle = ctypes.c_void_p()
        _check(self._lib.noisear_context_create(ctypes.byref(params), ctypes.byref(handle)), self._lib.noisear_last_error)
        self._handle = handle

    @property
    def closed(self) -> bool:
        return not getattr(self, "_handle", None)

    def _open_handle(self):
        if self.closed:
            raise NoiseARError(-1, "this Context is closed")
        return self._handle

    @property
    def device(self) -> str:
        return self._lib.noisear_context_device(self._open_handle()).decode()

    def _error(self) -> bytes:
        return self._lib.noisear_context_last_error(self._handle) if not self.closed else b"the context is closed"

    def close(self):
        """Frees the context; priors loaded from it stay usable until they are closed."""
        if not self.closed:
            self._lib.noisear_context_free(self._handle)
            self._handle = None

    def load_prior(self, path, heads: Optional[int] = None, svd_heads: Optional[int] = None) -> "Prior":
        """What the weights cannot say: `heads` (NoiseAR's attention heads) and `svd_heads`
        (NPNet's singular-value branch heads); None takes them from a `config.json` (or
        `NAME.json`) beside the file, else the file's own config, else the authors' values."""
        params = self._lib.noisear_prior_load_default_params()
        for name, value in (("heads", heads), ("svd_heads", svd_heads)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 4096:
                    raise NoiseARError(-1, f"{name} must be an integer in 1 ... 4096, got {value!r}")
                setattr(params, name, int(value))
        handle = ctypes.c_void_p()
        _check(self._lib.noisear_prior_load_ex(self._open_handle(), _cstring("path", path), ctypes.byref(params),
                                               ctypes.byref(handle)), self._error)
        return Prior(self, handle)


def load_prior(path, device: Optional[str] = "auto", heads: Optional[int] = None,
               svd_heads: Optional[int] = None) -> "Prior":
    """A NoiseAR or NPNet prior (.safetensors or the authors' .pth) on a new context."""
    return Context(device).load_prior(path, heads=heads, svd_heads=svd_heads)


class Prior(_Closable):
    """A loaded prior; `kind` is "noisear" or "npnet"."""

    def __init__(self, context: Context, handle):
        self.context = context
        self._lib = context._lib
        self._handle = handle

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.noisear_prior_free(self._handle)
            self._handle = None

    def _open_handle(self):
        if not getattr(self, "_handle", None):
            raise NoiseARError(-1, "this Prior is closed")
        return self._handle

    def _error(self) -> bytes:
        return self._lib.noisear_prior_last_error(self._handle) if self._handle else b"the prior is closed"

    @property
    def kind(self) -> str:
        return {1: "noisear", 2: "npnet"}.get(self._lib.noisear_prior_get_kind(self._open_handle()), "unknown")

    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        s = (ctypes.c_int64 * 3)()
        self._lib.noisear_prior_latent_shape(self._open_handle(), s)
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def embed_size(self) -> int:
        """NoiseAR: the width D of prompt embeddings [B, T, D] (any T); NPNet: T * D."""
        return int(self._lib.noisear_prior_embed_size(self._open_handle()))

    def sample(self, prompt_embeds, seed: int = 0, temperature: float = 0.5, strength: float = 1.0,
               eps=None, cached: bool = True, progress: Optional[Callable[[int, int], bool]] = None,
               rng: str = "philox"):
        """NoiseAR: initial latents [B, C, H, W] for prompt embeddings [B, T, D]; the standard
        normals from `rng`: "philox" (image b from stream seed + b) or "torch" (the batch as
        torch.randn with a CPU generator seeded `seed`), or given as `eps`. Returned as the
        embeddings' kind (torch in, torch out on its device and dtype)."""
        kind = _Kind(prompt_embeds)
        e = _floats("prompt_embeds", prompt_embeds, 3)
        b, t, d = e.shape
        out = np.empty((b,) + self.latent_shape, dtype=np.float32)
        params = self._lib.noisear_sample_default_params()
        params.seed = _seed(seed)
        params.temperature = float(temperature)
        params.strength = float(strength)
        params.uncached = not cached
        params.rng = _rng(rng)
        keep = None
        if eps is not None:
            keep = _floats("eps", eps, 4)
            if keep.shape != out.shape:
                raise NoiseARError(-2, f"eps: shape {keep.shape} does not match the latent {out.shape}")
            params.eps = _ptr(keep)
        cb = _Progress(progress)
        params.progress = cb.c
        status = self._lib.noisear_prior_sample(self._open_handle(), _ptr(e), b, t, d, ctypes.byref(params), _ptr(out), out.size)
        cb.reraise()
        _check(status, self._error)
        return kind.wrap(out)

    def score(self, prompt_embeds, noise, temperature: float = 1.0):
        """NoiseAR: (mu, logvar, log_prob): the teacher-forced Gaussian of every element and the
        exact log-likelihood [B] (nats) of `noise` [B, C, H, W], as the noise's kind."""
        kind = _Kind(noise)
        e = _floats("prompt_embeds", prompt_embeds, 3)
        x = _floats("noise", noise, 4)
        b, t, d = e.shape
        mu = np.empty_like(x)
        logvar = np.empty_like(x)
        log_prob = np.empty((b,), dtype=np.float32)
        _check(self._lib.noisear_prior_score(self._open_handle(), _ptr(e), b, t, d, _ptr(x), x.size, float(temperature),
                                             _ptr(mu), _ptr(logvar), _ptr(log_prob)), self._error)
        return kind.wrap(mu), kind.wrap(logvar), kind.wrap(log_prob)

    def golden(self, noise, prompt_embeds):
        """NPNet: the golden noise for an initial noise [B, C, H, W] and embeddings [B, T, D],
        as the noise's kind."""
        kind = _Kind(noise)
        x = _floats("noise", noise, 4)
        e = _floats("prompt_embeds", prompt_embeds, 3)
        b, t, d = e.shape
        out = np.empty_like(x)
        _check(self._lib.noisear_prior_golden(self._open_handle(), _ptr(x), x.size, _ptr(e), b, t, d, _ptr(out), out.size),
               self._error)
        return kind.wrap(out)


# ---- the shapes world -----------------------------------------------------------------------

def shapes_sample(prompt: str, seed: int = 0, batch: int = 1, steps: int = 30, cfg: float = 5.0,
                  sampler: str = "dpmpp2m", prior: str = "gaussian", prior_path: Optional[str] = None,
                  temperature: float = 0.5, strength: float = 1.0, model_path: Optional[str] = None,
                  context: Optional[Context] = None, progress: Optional[Callable[[int, int], bool]] = None,
                  rng: str = "philox") -> np.ndarray:
    """Images of the shapes-world model: uint8 [batch, 32, 32, 3]."""
    ctx = context or Context("cpu")
    lib = ctx._lib
    p = lib.noisear_shapes_default_params()
    p.prompt = _cstring("prompt", prompt)
    p.seed, p.batch, p.steps, p.cfg = _seed(seed), int(batch), int(steps), float(cfg)
    p.sampler, p.prior = _cstring("sampler", sampler), _cstring("prior", prior)
    p.prior_path = _cstring("prior_path", prior_path) if prior_path else None
    p.temperature, p.strength = float(temperature), float(strength)
    p.model_path = _cstring("model_path", model_path) if model_path else None
    p.rng = _rng(rng)
    cb = _Progress(progress)
    p.progress = cb.c
    if batch < 1:
        raise NoiseARError(-1, f"batch must be at least 1, got {batch}")
    out = np.empty((batch, 32, 32, 3), dtype=np.uint8)
    w, h = ctypes.c_int32(), ctypes.c_int32()
    status = lib.noisear_shapes_sample(ctx._open_handle(), ctypes.byref(p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                       out.size, ctypes.byref(w), ctypes.byref(h))
    cb.reraise()
    _check(status, ctx._error)
    return out


def shapes_reward(image, prompt: str) -> float:
    """The exact prompt-fidelity reward of an RGB uint8 image [H, W, 3]."""
    lib = _load()
    a = np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise NoiseARError(-2, f"image: expected [H, W, 3], got shape {a.shape}")
    score = ctypes.c_double()
    _check(lib.noisear_shapes_reward(a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), a.shape[1], a.shape[0],
                                     _cstring("prompt", prompt), ctypes.byref(score)), lib.noisear_last_error)
    return score.value
