#!/usr/bin/env python3
"""The PyTorch side of the speed comparisons that `tools/bench-vs-pytorch.sh` does not cover
(for measuring only; never needed by the tests or CI). Prints JSON: {"median_ms": ..., ...}.

  pytorch_side.py svd N BATCH        torch.linalg.svd of BATCH random N x N float32 matrices (ms per matrix)
  pytorch_side.py npnet BATCH        NPNet forward at the authors' SDXL size (4x128x128 latent,
                                     77x2048 prompt embeddings, timm's swin_tiny; random weights)
  pytorch_side.py train MODEL BATCH  one training step of the shipped shapes-world model as
                                     `noisear-gpu train diffusion` does it (text encoder + UNet,
                                     v-prediction MSE, backward, AdamW, EMA), on random data

PyTorch runs on 2 threads (set NOISEAR_TORCH_THREADS to change), like the CPU backend on the
machines this was written on. NPNet follows the authors' network as our
Sources/NoiseARModels/Models/NPNet.swift documents it: AdaGroupNorm text injection, the
singular-value branch (MLPs and 8-head attention over the SVD factors of the tiled latent) and
the Swin residual branch (1x1 conv, nearest resize to 224, swin_tiny forward_features, nearest
resize back, 1x1 conv). Needs torch (+ timm for npnet, diffusers/transformers for train).
"""
import json, os, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timed(fn, warmup=2, repeats=10):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


class NPNet(nn.Module):
    def __init__(self, channels=4, size=128, text_features=77 * 2048, heads=8):
        super().__init__()
        import timm
        n = 2 * size
        self.size, self.heads = size, heads
        self.mlp1 = nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, n))
        self.mlp2 = nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, n))
        self.mlp3 = nn.Linear(n, n)
        self.qkv = nn.Linear(n, 3 * n, bias=False)
        self.proj = nn.Linear(n, n)
        self.mlp4 = nn.Sequential(nn.Linear(n, 1024), nn.ReLU(), nn.Linear(1024, n))
        self.swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
        self.downconv = nn.Conv2d(channels, 3, 1)
        self.upconv = nn.Conv2d(7, channels, 1)
        self.embedding = nn.Linear(text_features, 2 * channels)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def tiled(self, x):
        b, l = x.shape[0], self.size
        return x.reshape(b, 2, 2, l, l).permute(0, 1, 3, 2, 4).reshape(b, 2 * l, 2 * l)

    def untiled(self, m):
        b, l = m.shape[0], self.size
        return m.reshape(b, 2, l, 2, l).permute(0, 1, 3, 2, 4).reshape(b, 4, l, l)

    def forward(self, x, prompt):
        b, c = x.shape[0], x.shape[1]
        e = self.embedding(prompt.reshape(b, -1))
        scale, shift = e[:, :c, None, None], e[:, c:, None, None]
        text_emb = F.group_norm(x, 1, eps=1e-6) * (1 + scale) + shift
        u, s, vh = torch.linalg.svd(self.tiled(x))
        n = s.shape[1]
        h = self.mlp1(u.transpose(1, 2)) + self.mlp2(vh) + self.mlp3(s)[:, None, :]
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, n // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, n)
        sv = self.mlp4(self.proj(a).mean(1)) + s
        svd = self.untiled(u * sv[:, None, :] @ vh)
        image = F.interpolate(self.downconv(x + text_emb), size=(224, 224), mode="nearest")
        feats = self.swin.forward_features(image)  # [B, 7, 7, 768]
        residual = self.upconv(F.interpolate(feats, size=(self.size, self.size), mode="nearest"))
        return svd + (2 * torch.sigmoid(self.alpha) - 1) * text_emb + self.beta * residual


def main():
    torch.set_num_threads(int(os.environ.get("NOISEAR_TORCH_THREADS", "2")))
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    what = sys.argv[1]
    if what == "svd":
        n, batch = int(sys.argv[2]), int(sys.argv[3])
        a = torch.randn(batch, n, n)
        med, mn = timed(lambda: torch.linalg.svd(a), repeats=5)
        out = {"op": "svd", "size": n, "batch": batch, "median_ms": med, "min_ms": mn, "ms_per_matrix": med / batch}
    elif what == "npnet":
        batch = int(sys.argv[2])
        net = NPNet().eval()
        x, p = torch.randn(batch, 4, 128, 128), torch.randn(batch, 77, 2048)
        with torch.inference_mode():
            med, mn = timed(lambda: net(x, p), repeats=5)
        out = {"op": "npnet", "batch": batch, "median_ms": med, "min_ms": mn}
    elif what == "train":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools"))
        sys.path.insert(0, os.environ.get("NOISEAR_PYTORCH_REFERENCE_DIR", ""))
        import pytorch_reference as pr
        cfg, unet, te = pr.build(sys.argv[2])
        batch = int(sys.argv[3])
        unet.train(); te.train()
        params = list(unet.parameters()) + list(te.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        ema = [p.detach().clone() for p in params]
        u, t = cfg["unet"], cfg["text"]
        g = torch.Generator().manual_seed(1)

        def step():
            x0 = torch.rand(batch, u["inChannels"], u["sampleSize"], u["sampleSize"], generator=g) * 2 - 1
            eps = torch.randn(x0.shape, generator=g)
            ts = torch.randint(0, 1000, (batch,), generator=g)
            abar = torch.linspace(0.9999, 0.005, 1000)[ts][:, None, None, None]
            xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
            target = abar.sqrt() * eps - (1 - abar).sqrt() * x0
            ids = torch.randint(1, t["vocabSize"], (batch, t["maxLength"]), generator=g)
            ctx = te(input_ids=ids).last_hidden_state
            loss = F.mse_loss(unet(xt, ts, encoder_hidden_states=ctx).sample, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 0.001)

        med, mn = timed(step, repeats=8)
        out = {"op": "train", "batch": batch, "median_ms": med, "min_ms": mn}
    else:
        sys.exit(f"unknown comparison {what!r}: svd, npnet or train")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
