#!/usr/bin/env python3
"""Convert the authors' PyTorch checkpoints (.pth / .pt / .bin) to safetensors for noisear-gpu.

Works for NoiseAR checkpoints (a state_dict, possibly wrapped as {"model": ...} or
{"state_dict": ...}, possibly with DataParallel's "module." prefixes) and NPNet checkpoints
(a dict of sub-state-dicts {"unet_svd": ..., "unet_embedding": ..., "embeeding": ...,
"alpha": ..., "beta": ...}, flattened to "unet_svd.mlp1.0.weight", ...).

Floating tensors are written as float32 (or --dtype f16 / bf16); integer buffers
(num_batches_tracked, relative_position_index) are dropped: noisear-gpu recomputes what it
needs. --config adds the JSON that noisear-gpu reads from the `config` metadata, e.g.
'{"n_heads": 1}' for NoiseAR (the number of heads is not stored in the weights).

Needs PyTorch (to unpickle the checkpoint) and NumPy; not needed by noisear-gpu itself.

    python3 tools/convert_pth.py noisear.pth noisear.safetensors --config '{"n_heads": 1}'
    python3 tools/convert_pth.py npnet_sdxl.pth npnet.safetensors
"""
import argparse
import json
import struct
import sys


def flatten(obj, prefix, out, dropped):
    import torch
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            out[prefix] = obj.detach().cpu()
        else:
            dropped.append(prefix)
    elif isinstance(obj, torch.nn.Parameter):
        flatten(obj.data, prefix, out, dropped)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out, dropped)
    elif isinstance(obj, (float, int)) and prefix in ("alpha", "beta"):
        out[prefix] = torch.tensor([float(obj)])
    else:
        dropped.append(prefix)


def unwrap(ckpt):
    # Common wrappers around a state_dict.
    for key in ("state_dict", "model", "model_state_dict", "ema"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict) and len(ckpt) <= 4:
            return ckpt[key]
    return ckpt


def write_safetensors(path, tensors, metadata, dtype):
    import numpy as np
    import torch
    header, blobs, offset = {}, [], 0
    st_dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[dtype]
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if dtype == "f32":
            data = t.to(torch.float32).numpy().astype("<f4").tobytes()
        elif dtype == "f16":
            data = t.to(torch.float16).numpy().astype("<f2").tobytes()
        else:
            data = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="the .pth / .pt / .bin checkpoint")
    ap.add_argument("output", help="the .safetensors file to write")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--config", help="JSON for the `config` metadata (e.g. '{\"n_heads\": 1}')")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("convert_pth.py: PyTorch is needed to read .pth checkpoints (pip install torch)")
    try:
        ckpt = torch.load(args.input, map_location="cpu", weights_only=True)
    except Exception:
        ckpt = torch.load(args.input, map_location="cpu", weights_only=False)
    tensors, dropped = {}, []
    flatten(unwrap(ckpt), "", tensors, dropped)
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}
    if not tensors:
        sys.exit(f"convert_pth.py: no floating-point tensors found in {args.input}")
    metadata = {"source": args.input, "converted_by": "tools/convert_pth.py"}
    if args.config:
        json.loads(args.config)  # validate
        metadata["config"] = args.config
    write_safetensors(args.output, tensors, metadata, args.dtype)
    print(f"wrote {args.output}: {len(tensors)} tensors"
          + (f"; dropped {len(dropped)} non-float entries ({', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''})" if dropped else ""))


if __name__ == "__main__":
    main()
