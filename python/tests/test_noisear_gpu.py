"""The Python package against the reference fixtures (numpy only; no PyTorch).

Run from the repository root after `swift build -c release`:
    PYTHONPATH=python python3 -m pytest -q python/tests
Fixtures: $NOISEAR_FIXTURES or ../shared/fixtures (beside the repository).
"""
import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import noisear_gpu as ng

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("NOISEAR_FIXTURES", ROOT.parent / "shared" / "fixtures"))
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    """The tensors of a safetensors file (a tiny reader: this test needs no other package)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + n + start:8 + n + end]
        out[name] = np.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


@pytest.fixture(scope="module")
def noisear_fx():
    path = FIXTURES / "noisear" / "noisear_tiny.safetensors"
    assert path.exists(), f"fixtures missing at {FIXTURES} (set NOISEAR_FIXTURES)"
    return read_safetensors(path)


@pytest.fixture(scope="module")
def npnet_fx():
    return read_safetensors(FIXTURES / "npnet" / "npnet_tiny.safetensors")


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_library_and_devices():
    assert ng.abi_version() == ng.ABI_VERSION
    assert ng.version()
    devs = ng.devices()
    assert devs[0]["id"] == "cpu" and devs[0]["memory_bytes"] > 0


@pytest.mark.parametrize("name", ["noisear_tiny.pth", "noisear_tiny_wrapped.pth", "noisear_tiny_legacy.pth"])
def test_noisear_pth_matches_reference(noisear_fx, name):
    prior = ng.load_prior(FIXTURES / "pth" / name, device="cpu")
    assert prior.kind == "noisear"
    text = noisear_fx["input.text_emb"]  # float64, converted by the package
    out = prior.sample(text, eps=noisear_fx["input.sample_eps"])
    assert out.dtype == text.dtype and out.shape == noisear_fx["output.sample"].shape  # the caller's dtype back
    assert rel_err(out, noisear_fx["output.sample"]) < 1e-4
    mu, logvar, log_prob = prior.score(text, noisear_fx["input.noise"])
    assert rel_err(mu, noisear_fx["output.mu"]) < 1e-4
    assert rel_err(logvar, noisear_fx["output.logvar"]) < 1e-4
    assert rel_err(log_prob, noisear_fx["output.log_prob"]) < 1e-4


def test_npnet_pth_matches_reference(npnet_fx):
    for name in ["npnet_tiny.pth", "npnet_tiny_oldtimm.pth"]:
        npnet = ng.load_prior(FIXTURES / "pth" / name, device="cpu")
        assert npnet.kind == "npnet" and npnet.embed_size == 6 * 16
        golden = npnet.golden(npnet_fx["input.noise"], npnet_fx["input.prompt_embeds"])
        assert rel_err(golden, npnet_fx["output.golden_noise"]) < 1e-3


def test_seeds_and_layouts(noisear_fx):
    prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
    text = noisear_fx["input.text_emb"]
    a = prior.sample(text, seed=3)
    # Fortran order, a non-contiguous view and float16 all go in as the same numbers.
    b = prior.sample(np.asfortranarray(text), seed=3)
    wide = np.repeat(text, 2, axis=2)[:, :, ::2]
    c = prior.sample(wide, seed=3)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, prior.sample(text, seed=4))
    # Image b draws from stream seed + b: image 1 of seed 3 is image 0 of seed 4.
    single = prior.sample(text[1:2], seed=4)
    assert rel_err(a[1:2], single) < 1e-5


def test_errors_raise_with_the_library_message(noisear_fx):
    with pytest.raises(ng.NoiseARError) as e:
        ng.load_prior(FIXTURES / "pth" / "evil.pth", device="cpu")
    assert e.value.status != 0 and str(e.value)
    with pytest.raises(ng.NoiseARError) as e:
        ng.load_prior("/nonexistent/model.pth", device="cpu")
    assert e.value.status_name == "NOISEAR_ERR_IO" and "/nonexistent/model.pth" in str(e.value)
    with pytest.raises(ng.NoiseARError) as e:
        ng.Context("tpu:9")
    assert e.value.status_name == "NOISEAR_ERR_DEVICE" and "tpu:9" in str(e.value)
    prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
    text = noisear_fx["input.text_emb"]
    with pytest.raises(ng.NoiseARError) as e:
        prior.sample(text[:, :, :10])
    assert e.value.status_name == "NOISEAR_ERR_SHAPE" and "D = 64" in str(e.value)
    with pytest.raises(ng.NoiseARError):
        prior.sample(text[0])  # rank 2
    with pytest.raises(ng.NoiseARError):
        prior.sample(text.astype(np.complex64))
    with pytest.raises(ng.NoiseARError):
        prior.sample("not an array")
    bad = text.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ng.NoiseARError) as e:
        prior.sample(bad)
    assert "nan" in str(e.value)
    with pytest.raises(ng.NoiseARError):
        prior.sample(text, temperature=-1)
    with pytest.raises(ng.NoiseARError):
        prior.sample(text, seed=-1)
    with pytest.raises(ng.NoiseARError) as e:
        prior.golden(noisear_fx["input.noise"], text)
    assert e.value.status_name == "NOISEAR_ERR_UNSUPPORTED"
    calls = []
    with pytest.raises(ng.NoiseARCancelled):
        prior.sample(text, progress=lambda done, total: calls.append(done) or done < 3)
    assert calls == [1, 2, 3]


def test_hostile_callers(noisear_fx, tmp_path):
    """What a careless or hostile caller hands the package: each is refused or propagated cleanly."""
    prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
    text = noisear_fx["input.text_emb"]
    # The malformed or refused file is a format error, as the header documents.
    with pytest.raises(ng.NoiseARError) as e:
        ng.load_prior(FIXTURES / "pth" / "evil.pth", device="cpu")
    assert e.value.status_name == "NOISEAR_ERR_FORMAT"
    # KeyboardInterrupt / SystemExit / errors in a progress callback cancel the call and come
    # back unchanged, once, with no "Exception ignored" noise.
    for error in (KeyboardInterrupt(), SystemExit(3), ValueError("mine")):
        calls = []

        def cb(done, total, error=error):
            calls.append(done)
            raise error
        with pytest.raises(type(error)) as caught:
            prior.sample(text, progress=cb)
        assert calls == [1], calls
        if isinstance(error, ValueError):
            assert caught.value is error
    # Seeds outside 0 ... 2^64 - 1 are refused, not wrapped.
    assert prior.sample(text, seed=2**64 - text.shape[0]).shape[0] == text.shape[0]  # the last seeds that fit
    for seed in (2**64, 2**64 + 5, -1, 1.5, True, "3", 2**64 - 1):
        with pytest.raises(ng.NoiseARError) as e:
            prior.sample(text, seed=seed)
        assert "seed" in str(e.value)
    # NUL bytes in paths and text are refused, not cut.
    with pytest.raises(ng.NoiseARError) as e:
        ng.load_prior(str(FIXTURES / "pth" / "noisear_tiny.pth") + "\0.evil", device="cpu")
    assert "NUL" in str(e.value)
    with pytest.raises(ng.NoiseARError):
        ng.shapes_reward(np.zeros((32, 32, 3), np.uint8), "a red circle\0")
    # After close(): a closed context says so; its priors still work and report their own errors.
    ctx = ng.Context("cpu")
    p2 = ctx.load_prior(FIXTURES / "pth" / "noisear_tiny.pth")
    ctx.close()
    with pytest.raises(ng.NoiseARError) as e:
        ctx.load_prior(FIXTURES / "pth" / "noisear_tiny.pth")
    assert "closed" in str(e.value)
    with pytest.raises(ng.NoiseARError) as e:
        p2.sample(text[:, :, :10])
    assert "D = 64" in str(e.value)
    assert p2.sample(text).shape[0] == text.shape[0]
    p2.close()
    with pytest.raises(ng.NoiseARError) as e:
        p2.sample(text)
    assert "closed" in str(e.value)


def test_two_threads_two_contexts(noisear_fx):
    text = noisear_fx["input.text_emb"]
    reference = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu").sample(text, seed=11)
    results, errors = [None, None], []

    def work(i):
        try:
            prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
            for _ in range(3):
                results[i] = prior.sample(text, seed=11)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(np.array_equal(r, reference) for r in results)


def test_shapes_world():
    images = ng.shapes_sample("a red circle to the left of a blue square", seed=7, batch=2, steps=4)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    score = ng.shapes_reward(images[0], "a red circle to the left of a blue square")
    assert 0.0 <= score <= 1.0
    with pytest.raises(ng.NoiseARError) as e:
        ng.shapes_sample("a purple circle", steps=2)
    assert "purple" in str(e.value)


class _DLPackOnly:
    """An array seen only through the DLPack protocol (as a JAX or CuPy array on the CPU is)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def _torch_fixture():
    data = (FIXTURES / "torch_rng" / "torch_randn.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    cases = json.loads(header["__metadata__"]["config"])["cases"]
    return read_safetensors(FIXTURES / "torch_rng" / "torch_randn.safetensors"), cases


def test_torch_seeds_bit_for_bit():
    tensors, cases = _torch_fixture()
    for case in cases:
        want = tensors[case["name"]]
        if case["kind"] == "randn":
            got = ng.gaussian_noise(case["shape"], seed=case["seed"], rng="torch")
        else:
            got = ng.gaussian_noise(case["shape"], seed=case["seed"], rng="torch", batch_index=case["batch_index"])
        assert got.dtype == np.float32 and got.shape == tuple(case["shape"])
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), case["name"]
    philox = ng.gaussian_noise([2, 4, 8, 8], seed=3, rng="philox")
    assert np.array_equal(philox[1], ng.gaussian_noise([1, 4, 8, 8], seed=4, rng="philox")[0])
    with pytest.raises(ng.NoiseARError):
        ng.gaussian_noise([2, 4], seed=0, rng="mt")
    with pytest.raises(ng.NoiseARError):
        ng.gaussian_noise([2, 4], seed=0, batch_index=[0])
    with pytest.raises(ng.NoiseARError):
        ng.gaussian_noise([2, 4], seed=2**64)


def test_sample_with_torch_rng_and_dlpack(noisear_fx):
    prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
    text = noisear_fx["input.text_emb"].astype(np.float32)
    b = text.shape[0]
    eps = ng.gaussian_noise((b,) + prior.latent_shape, seed=5, rng="torch")
    assert np.array_equal(prior.sample(text, seed=5, rng="torch"), prior.sample(text, seed=5, eps=eps))
    assert not np.array_equal(prior.sample(text, seed=5, rng="torch"), prior.sample(text, seed=5))
    # numpy comes back in the caller's float dtype.
    assert prior.sample(text.astype(np.float64), seed=5).dtype == np.float64
    assert prior.sample(text.astype(np.float16), seed=5).dtype == np.float16
    # Any DLPack object is read through numpy; numpy comes back.
    out = prior.sample(_DLPackOnly(text), seed=5)
    assert isinstance(out, np.ndarray) and np.array_equal(out, prior.sample(text, seed=5))
    with pytest.raises(ng.NoiseARError):
        prior.sample(text, rng="cuda")


def test_heads_the_checkpoint_cannot_say(tmp_path):
    """A 4-head NoiseAR in a file without its config: right only with heads=4 or a config.json."""
    h4 = read_safetensors(FIXTURES / "noisear" / "noisear_heads4_layers2.safetensors")
    header, blob = {}, b""
    for k, v in h4.items():
        if k.startswith("weights."):
            v = np.ascontiguousarray(v, dtype=np.float32)
            header[k[8:]] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + v.nbytes]}
            blob += v.tobytes()
    h = json.dumps(header).encode()
    bare = tmp_path / "heads4.safetensors"
    bare.write_bytes(struct.pack("<Q", len(h)) + h + blob)
    text, eps, want = h4["input.text_emb"], h4["input.sample_eps"], h4["output.sample"]
    assert rel_err(ng.load_prior(bare, device="cpu", heads=4).sample(text, eps=eps), want) < 1e-4
    assert rel_err(ng.load_prior(bare, device="cpu").sample(text, eps=eps), want) > 1e-2
    (tmp_path / "heads4.json").write_text('{"n_heads": 4}')
    assert rel_err(ng.load_prior(bare, device="cpu").sample(text, eps=eps), want) < 1e-4
    (tmp_path / "heads4.json").write_text('{"n_heads": "four"}')
    with pytest.raises(ng.NoiseARError) as e:
        ng.load_prior(bare, device="cpu")
    assert "n_heads" in str(e.value)
    with pytest.raises(ng.NoiseARError):
        ng.load_prior(bare, device="cpu", heads=0)


def test_torch_tensors_in_and_out(noisear_fx):
    torch = pytest.importorskip("torch")  # optional: the package never imports torch itself
    prior = ng.load_prior(FIXTURES / "pth" / "noisear_tiny.pth", device="cpu")
    text = torch.from_numpy(noisear_fx["input.text_emb"].astype(np.float32)).to(torch.bfloat16)
    out = prior.sample(text, seed=1, rng="torch")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.device == text.device
    ref = prior.sample(text.float().numpy(), seed=1, rng="torch")
    assert np.allclose(out.float().numpy(), ref, atol=0.05)
    g = torch.Generator().manual_seed(123)
    assert torch.equal(ng.gaussian_noise([2, 4, 8, 8], seed=123, like=text.float()), torch.randn([2, 4, 8, 8], generator=g))
