import Foundation
import NoiseARCore

/// UNet building blocks, named as diffusers' UNet2DConditionModel names its submodules.

/// Sinusoidal timestep embedding as diffusers' `get_timestep_embedding` with
/// flip_sin_to_cos = true and downscale_freq_shift = 0 (Stable Diffusion's setting):
/// [cos(t f_i), sin(t f_i)] with f_i = exp(-ln(10000) i / (dim/2)). Shape [B, dim].
public func timestepEmbedding(_ timesteps: [Double], dim: Int, on device: Device) throws -> Tensor {
    try require(dim % 2 == 0 && dim > 0, "timestep embedding dim \(dim) must be even")
    let half = dim / 2
    var out = [Float](repeating: 0, count: timesteps.count * dim)
    for (b, t) in timesteps.enumerated() {
        for i in 0..<half {
            let f = Foundation.exp(-Foundation.log(10000.0) * Double(i) / Double(half))
            out[b * dim + i] = Float(Foundation.cos(t * f))
            out[b * dim + half + i] = Float(Foundation.sin(t * f))
        }
    }
    return try Tensor(out, shape: [timesteps.count, dim], on: device)
}

/// `time_embedding`: linear_1 -> SiLU -> linear_2.
public struct TimestepEmbedding {
    let linear1: Linear, linear2: Linear
    public init(_ p: Parameters, _ prefix: String, inDim: Int, dim: Int) throws {
        linear1 = try Linear(p, prefix + ".linear_1", inDim, dim)
        linear2 = try Linear(p, prefix + ".linear_2", dim, dim)
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try linear2(linear1(x, activation: .silu)) }
}

/// diffusers' ResnetBlock2D: norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 ->
/// SiLU -> conv2, plus the input (through a 1x1 `conv_shortcut` when channels change).
public struct ResnetBlock2D {
    let norm1: GroupNorm, conv1: Conv2d, timeEmbProj: Linear, norm2: GroupNorm, conv2: Conv2d
    let shortcut: Conv2d?
    public init(_ p: Parameters, _ prefix: String, inChannels: Int, outChannels: Int, tembDim: Int,
                groups: Int) throws {
        norm1 = try GroupNorm(p, prefix + ".norm1", groups: min(groups, inChannels), channels: inChannels)
        conv1 = try Conv2d(p, prefix + ".conv1", inChannels, outChannels, kernel: 3, padding: 1)
        timeEmbProj = try Linear(p, prefix + ".time_emb_proj", tembDim, outChannels)
        norm2 = try GroupNorm(p, prefix + ".norm2", groups: min(groups, outChannels), channels: outChannels)
        conv2 = try Conv2d(p, prefix + ".conv2", outChannels, outChannels, kernel: 3, padding: 1)
        shortcut = inChannels == outChannels ? nil
            : try Conv2d(p, prefix + ".conv_shortcut", inChannels, outChannels, kernel: 1)
    }
    /// x [B, Cin, H, W], temb [B, T] -> [B, Cout, H, W]
    public func callAsFunction(_ x: Tensor, _ temb: Tensor) throws -> Tensor {
        var h = try conv1(norm1.silu(x))
        let t = try timeEmbProj(temb.silu())  // [B, Cout]
        h = try h + t.reshaped([t.shape[0], t.shape[1], 1, 1])
        h = try conv2(norm2.silu(h))
        return try (shortcut.map { try $0(x) } ?? x) + h
    }
}

/// diffusers' Attention (to_q, to_k, to_v without bias; to_out.0 with bias), multi-head,
/// self-attention when `context` is nil.
///
/// The projection weights share one buffer, [W_q; W_k; W_v] for self-attention and
/// [W_k; W_v] for cross-attention (`Parameters.packRows`), so without a tape the projections
/// are one GEMM (two for cross-attention) and the heads are read in place from its output.
public struct CrossAttention {
    let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    let heads: Int
    /// [W_q; W_k; W_v] [3D, D] (self-attention) or [W_k; W_v] [2D, Dc] (cross-attention).
    let packed: Tensor
    let selfAttention: Bool
    public init(_ p: Parameters, _ prefix: String, queryDim: Int, contextDim: Int?, heads: Int) throws {
        try require(heads > 0 && queryDim % heads == 0, "attention dim \(queryDim) not divisible by \(heads) heads")
        let q = try Linear(p, prefix + ".to_q", queryDim, queryDim, bias: false)
        _ = try Linear(p, prefix + ".to_k", contextDim ?? queryDim, queryDim, bias: false)
        _ = try Linear(p, prefix + ".to_v", contextDim ?? queryDim, queryDim, bias: false)
        selfAttention = contextDim == nil
        let names = (selfAttention ? [".to_q"] : []) + [".to_k", ".to_v"]
        let (whole, views) = try p.packRows(names.map { prefix + $0 + ".weight" })
        packed = whole
        toQ = selfAttention ? Linear(weight: views[0], bias: nil) : q
        toK = Linear(weight: views[views.count - 2], bias: nil)
        toV = Linear(weight: views[views.count - 1], bias: nil)
        toOut = try Linear(p, prefix + ".to_out.0", queryDim, queryDim)
        self.heads = heads
    }
    /// x [B, T, D], context [B, S, Dc] -> [B, T, D] (+ residual [B, T, D], added by the output
    /// projection's GEMM).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, residual: Tensor? = nil) throws -> Tensor {
        func project(_ o: Tensor) throws -> Tensor {
            try residual.map { try toOut(o, residual: $0) } ?? toOut(o)
        }
        let ctx = context ?? x
        let b = x.shape[0], t = x.shape[1], d = x.shape[2], s = ctx.shape[1], hd = d / heads
        if x.rank == 3 && ctx.rank == 3 && (context == nil) == selfAttention
            && !Tensor.isRecorded(on: x.device, [x, ctx, packed]) {
            let o: Tensor
            if selfAttention {
                o = try Tensor.attention(packed: Tensor.linear(x, weight: packed), heads: heads)  // qkv [B, T, 3D]
            } else {
                let kv = try Tensor.linear(ctx, weight: packed)  // [B, S, 2D]
                o = try Tensor.attention(q: toQ(x), qColumn: 0, k: kv, kColumn: 0, v: kv, vColumn: d,
                                         heads: heads, dim: hd)
            }
            return try project(o)
        }
        let q = try toQ(x).reshaped([b, t, heads, hd])
        let k = try toK(ctx).reshaped([b, s, heads, hd])
        let v = try toV(ctx).reshaped([b, s, heads, hd])
        let o = try Tensor.attention(q: q, k: k, v: v, layout: .bthd)
        return try project(o.reshaped([b, t, d]))
    }
}

/// diffusers' BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward,
/// each pre-LayerNorm with a residual.
public struct BasicTransformerBlock {
    let norm1: LayerNorm, attn1: CrossAttention, norm2: LayerNorm, attn2: CrossAttention
    let norm3: LayerNorm, ffIn: Linear, ffOut: Linear
    public init(_ p: Parameters, _ prefix: String, dim: Int, contextDim: Int, heads: Int) throws {
        norm1 = try LayerNorm(p, prefix + ".norm1", dim)
        attn1 = try CrossAttention(p, prefix + ".attn1", queryDim: dim, contextDim: nil, heads: heads)
        norm2 = try LayerNorm(p, prefix + ".norm2", dim)
        attn2 = try CrossAttention(p, prefix + ".attn2", queryDim: dim, contextDim: contextDim, heads: heads)
        norm3 = try LayerNorm(p, prefix + ".norm3", dim)
        let inner = 4 * dim
        ffIn = try Linear(p, prefix + ".ff.net.0.proj", dim, 2 * inner)
        ffOut = try Linear(p, prefix + ".ff.net.2", inner, dim)
    }
    public func callAsFunction(_ x: Tensor, context: Tensor) throws -> Tensor {
        // Each residual is added by its sublayer's output projection.
        var h = try attn1(norm1(x), residual: x)
        h = try attn2(norm2(h), context: context, residual: h)
        // GEGLU: hidden * gelu(gate), from one projection split in two halves.
        let ff = try Tensor.geglu(norm3(h), weight: ffIn.weight, bias: ffIn.bias)
        return try ffOut(ff, residual: h)
    }
}

/// diffusers' Transformer2DModel with a linear projection: GroupNorm -> proj_in -> blocks ->
/// proj_out, plus the input.
public struct Transformer2DModel {
    let norm: GroupNorm, projIn: Linear, blocks: [BasicTransformerBlock], projOut: Linear
    public init(_ p: Parameters, _ prefix: String, channels: Int, contextDim: Int, heads: Int, depth: Int = 1,
                groups: Int) throws {
        norm = try GroupNorm(p, prefix + ".norm", groups: min(groups, channels), channels: channels, eps: 1e-6)
        projIn = try Linear(p, prefix + ".proj_in", channels, channels)
        blocks = try (0..<depth).map {
            try BasicTransformerBlock(p, prefix + ".transformer_blocks.\($0)", dim: channels, contextDim: contextDim, heads: heads)
        }
        projOut = try Linear(p, prefix + ".proj_out", channels, channels)
    }
    /// x [B, C, H, W], context [B, S, Dc]
    public func callAsFunction(_ x: Tensor, context: Tensor) throws -> Tensor {
        let b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        var t = try projIn(norm(x).reshaped([b, c, h * w]).transposed(1, 2))  // [B, HW, C]
        for block in blocks { t = try block(t, context: context) }
        let out = try projOut(t).transposed(1, 2).reshaped([b, c, h, w])
        return try out + x
    }
}

/// `downsamplers.0`: a stride-2 3x3 convolution.
public struct Downsample2D {
    let conv: Conv2d
    public init(_ p: Parameters, _ prefix: String, channels: Int) throws {
        conv = try Conv2d(p, prefix + ".conv", channels, channels, kernel: 3, stride: 2, padding: 1)
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try conv(x) }
}

/// `upsamplers.0`: nearest x2 then a 3x3 convolution.
public struct Upsample2D {
    let conv: Conv2d
    public init(_ p: Parameters, _ prefix: String, channels: Int) throws {
        conv = try Conv2d(p, prefix + ".conv", channels, channels, kernel: 3, padding: 1)
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try conv(x.resized(height: 2 * x.shape[2], width: 2 * x.shape[3], mode: .nearest))
    }
}
