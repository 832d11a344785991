"""Writes the small seed inputs in tools/fuzz/seeds/ (committed; rerun only to change them).

Needs numpy. Each seed is a valid file of its kind, small enough for mutations to reach every
field; the fuzzer also seeds from the reference fixtures."""
import json, os, struct, zlib
import numpy as np

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(kind, name, data):
    os.makedirs(os.path.join(root, kind), exist_ok=True)
    with open(os.path.join(root, kind, name), "wb") as f:
        f.write(data)


# .npy: versions 1 and 2, float32/float64, C and Fortran order, 0-d to 3-d.
import io
for name, a, kw in [("f32_1d", np.arange(5, dtype=np.float32), {}),
                    ("f64_2d", np.arange(6, dtype=np.float64).reshape(2, 3), {}),
                    ("f32_3d_fortran", np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)), {}),
                    ("f32_0d", np.array(1.5, dtype=np.float32), {}),
                    ("f32_empty", np.zeros((0, 3), dtype=np.float32), {})]:
    b = io.BytesIO()
    np.save(b, a)
    put("npy", name + ".npy", b.getvalue())
b = io.BytesIO()
np.lib.format.write_array(b, np.ones((2, 2), dtype=np.float32), version=(2, 0))
put("npy", "f32_v2.npy", b.getvalue())


# safetensors: the dtypes the reader converts, metadata, an empty tensor, an unsupported dtype.
def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, b"", 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs += data
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blobs


put("safetensors", "mixed.safetensors", safetensors({
    "a": ("F32", [2, 2], np.arange(4, dtype=np.float32).tobytes()),
    "b": ("F16", [3], np.arange(3, dtype=np.float16).tobytes()),
    "c": ("BF16", [2], b"\x80\x3f\x00\x40"),
    "d": ("F64", [1], np.array([2.5]).tobytes()),
    "e": ("F32", [0, 4], b""),
}, {"config": "{\"x\": 1}", "note": "seed"}))
put("safetensors", "int.safetensors", safetensors({"i": ("I64", [2], np.arange(2, dtype=np.int64).tobytes())}))


# PNG: grey, RGB, RGBA, palette, 16-bit, interlaced-free, with a tEXt chunk.
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, depth, colour, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


put("png", "rgb_2x2.png", png(2, 2, 8, 2, [bytes([255, 0, 0, 0, 255, 0]), bytes([0, 0, 255, 9, 9, 9])],
                              chunk(b"tEXt", b"prompt\x00a red circle")))
put("png", "grey_3x1.png", png(3, 1, 8, 0, [bytes([0, 128, 255])]))
put("png", "rgba_1x2.png", png(1, 2, 8, 6, [bytes([1, 2, 3, 4]), bytes([5, 6, 7, 8])]))
put("png", "palette_2x1.png", png(2, 1, 8, 3, [bytes([0, 1])], chunk(b"PLTE", bytes([10, 20, 30, 40, 50, 60]))))
put("png", "rgb16_1x1.png", png(1, 1, 16, 2, [bytes([1, 2, 3, 4, 5, 6])]))


# PyTorch checkpoints without PyTorch: stand-in torch modules so that pickle writes the same
# globals torch.save does (torch._utils._rebuild_tensor_v2, torch.FloatStorage, ...).
import collections, sys, types, pickle, zipfile
fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
for cls_name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"]:
    cls = type(cls_name, (), {"__module__": "torch"})
    setattr(fake_torch, cls_name, cls)


def _rebuild_tensor_v2(*args):
    return args


def _rebuild_parameter(*args):
    return args


for fn in (_rebuild_tensor_v2, _rebuild_parameter):
    fn.__module__ = "torch._utils"
    setattr(fake_utils, fn.__name__, fn)
sys.modules["torch"], sys.modules["torch._utils"] = fake_torch, fake_utils


class Storage:
    def __init__(self, key, kind, count, view=None):
        self.key, self.kind, self.count, self.view = key, kind, count, view


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (_rebuild_parameter, (self.tensor, True, collections.OrderedDict()))


def pickler(buf, legacy):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                record = ("storage", getattr(fake_torch, obj.kind), obj.key, "cpu", obj.count)
                return record + (obj.view,) if legacy else record
            return None
    return P(buf, protocol=2)


s0, s1 = Storage("0", "FloatStorage", 6), Storage("1", "HalfStorage", 2)
state = collections.OrderedDict([
    ("layer.weight", Tensor(s0, 0, [2, 3], [3, 1])),
    ("layer.bias", Tensor(s0, 1, [2], [3])),
    ("half", Tensor(s1, 0, [2], [1])),
])
payload = {"0": np.arange(6, dtype=np.float32).tobytes(), "1": np.arange(2, dtype=np.float16).tobytes()}


def zip_checkpoint(obj):
    b = io.BytesIO()
    pickler(b, False).dump(obj)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        f.writestr("archive/data.pkl", b.getvalue())
        f.writestr("archive/byteorder", "little")
        for k, v in payload.items():
            f.writestr("archive/data/" + k, v)
        f.writestr("archive/version", "3\n")
    return z.getvalue()


put("pth", "state_dict.pth", zip_checkpoint(state))
put("pth", "wrapped.pth", zip_checkpoint({"model": state, "epoch": 3, "alpha": Parameter(Tensor(s0, 2, [], []))}))
put("pth", "nested.pth", zip_checkpoint({"unet_svd": collections.OrderedDict([("w", state["layer.weight"])]),
                                        "embeeding": {"b": state["layer.bias"]}, "alpha": 0.5, "beta": 2}))
legacy = io.BytesIO()
for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
    pickle.dump(obj, legacy, protocol=2)
pickler(legacy, True).dump(state)
pickle.dump(list(payload), legacy, protocol=2)
for k, v in payload.items():
    count = len(v) // (4 if k == "0" else 2)
    legacy.write(struct.pack("<Q", count) + v)
put("pth", "legacy.pth", legacy.getvalue())
