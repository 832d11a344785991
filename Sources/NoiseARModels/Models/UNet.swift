import Foundation
import NoiseARCore

/// Configuration of the small text-conditioned UNet (diffusers' UNet2DConditionModel layout).
public struct UNetConfig: Codable, Sendable, Equatable {
    public var sampleSize = 32
    public var inChannels = 3
    public var outChannels = 3
    /// Channels per resolution level (`block_out_channels`).
    public var blockOutChannels = [32, 64, 64]
    /// Which levels use cross-attention blocks (CrossAttnDownBlock2D / CrossAttnUpBlock2D).
    public var attentionLevels = [false, true, true]
    public var layersPerBlock = 1
    public var heads = 4
    /// Width of the text encoder's hidden states (`cross_attention_dim`).
    public var crossAttentionDim = 64
    public var normGroups = 8

    public init() {}

    public var timeEmbedDim: Int { 4 * blockOutChannels[0] }

    /// Throws `invalidArgument` naming the first field out of range; `source` names the file
    /// (or model) in the message.
    public func validate(source: String = "UNet") throws { try validate(ConfigCheck(source: source)) }

    package func validate(_ c: ConfigCheck) throws {
        try c.count("blockOutChannels", blockOutChannels.count, max: 8)
        try c.sameCount("attentionLevels", attentionLevels.count, as: "blockOutChannels", blockOutChannels.count)
        try c.int("heads", heads, max: 1024)
        try c.int("normGroups", normGroups, max: 1024)
        for (i, ch) in blockOutChannels.enumerated() {
            try c.int("blockOutChannels[\(i)]", ch, max: ConfigCheck.maxWidth)
            try c.multiple("blockOutChannels[\(i)]", ch, of: "heads", heads)
            try c.multiple("blockOutChannels[\(i)]", ch, of: "normGroups", normGroups)
            // The largest weight of a level: the GEGLU projection [8 C, C].
            try c.product("\(c.name("blockOutChannels[\(i)]"))^2 x 8", [ch, ch, 8])
        }
        if blockOutChannels[0] % 2 != 0 {
            throw c.error("blockOutChannels[0]", "\(blockOutChannels[0])",
                          "must be even (the timestep embedding has as many sin and cos features)")
        }
        try c.int("sampleSize", sampleSize, max: 4096)
        let halvings = blockOutChannels.count - 1
        if sampleSize % (1 << halvings) != 0 {
            throw c.error("sampleSize", "\(sampleSize)",
                          "must be a multiple of \(1 << halvings) (halved \(halvings) times by \(blockOutChannels.count) levels)")
        }
        try c.int("inChannels", inChannels, max: ConfigCheck.maxWidth)
        try c.int("outChannels", outChannels, max: ConfigCheck.maxWidth)
        try c.int("layersPerBlock", layersPerBlock, max: 16)
        try c.int("crossAttentionDim", crossAttentionDim, max: ConfigCheck.maxWidth)
        try c.product("\(c.name("crossAttentionDim")) x \(c.name("blockOutChannels"))", [crossAttentionDim, blockOutChannels.max() ?? 0])
    }
}

/// A small UNet2DConditionModel: the model output (epsilon or v, as the scheduler config's
/// prediction type says; the shipped shapes-world model predicts v) from (x_t, t, text hidden
/// states).
public struct UNet2DConditionModel {
    public let config: UNetConfig
    let convIn: Conv2d
    let timeEmbedding: TimestepEmbedding
    let downResnets: [[ResnetBlock2D]], downAttentions: [[Transformer2DModel]], downsamplers: [Downsample2D?]
    let midResnets: [ResnetBlock2D], midAttention: Transformer2DModel
    let upResnets: [[ResnetBlock2D]], upAttentions: [[Transformer2DModel]], upsamplers: [Upsample2D?]
    let convNormOut: GroupNorm, convOut: Conv2d

    public init(_ p: Parameters, config: UNetConfig, prefix: String = "") throws {
        try config.validate()
        self.config = config
        let ch = config.blockOutChannels, levels = ch.count, g = config.normGroups
        let temb = config.timeEmbedDim, ctx = config.crossAttentionDim, heads = config.heads
        convIn = try Conv2d(p, prefix + "conv_in", config.inChannels, ch[0], kernel: 3, padding: 1)
        timeEmbedding = try TimestepEmbedding(p, prefix + "time_embedding", inDim: ch[0], dim: temb)
        var skips = [ch[0]]
        var dr: [[ResnetBlock2D]] = [], da: [[Transformer2DModel]] = [], ds: [Downsample2D?] = []
        var cur = ch[0]
        for i in 0..<levels {
            var rs: [ResnetBlock2D] = [], at: [Transformer2DModel] = []
            for j in 0..<config.layersPerBlock {
                let pre = prefix + "down_blocks.\(i)"
                rs.append(try ResnetBlock2D(p, pre + ".resnets.\(j)", inChannels: cur, outChannels: ch[i], tembDim: temb, groups: g))
                cur = ch[i]
                if config.attentionLevels[i] {
                    at.append(try Transformer2DModel(p, pre + ".attentions.\(j)", channels: cur, contextDim: ctx, heads: heads, groups: g))
                }
                skips.append(cur)
            }
            if i < levels - 1 {
                ds.append(try Downsample2D(p, prefix + "down_blocks.\(i).downsamplers.0", channels: cur))
                skips.append(cur)
            } else {
                ds.append(nil)
            }
            dr.append(rs); da.append(at)
        }
        downResnets = dr; downAttentions = da; downsamplers = ds
        midResnets = [
            try ResnetBlock2D(p, prefix + "mid_block.resnets.0", inChannels: cur, outChannels: cur, tembDim: temb, groups: g),
            try ResnetBlock2D(p, prefix + "mid_block.resnets.1", inChannels: cur, outChannels: cur, tembDim: temb, groups: g),
        ]
        midAttention = try Transformer2DModel(p, prefix + "mid_block.attentions.0", channels: cur, contextDim: ctx, heads: heads, groups: g)
        var ur: [[ResnetBlock2D]] = [], ua: [[Transformer2DModel]] = [], us: [Upsample2D?] = []
        for i in 0..<levels {
            let level = levels - 1 - i
            var rs: [ResnetBlock2D] = [], at: [Transformer2DModel] = []
            for j in 0...config.layersPerBlock {
                let skip = skips.removeLast()
                let pre = prefix + "up_blocks.\(i)"
                rs.append(try ResnetBlock2D(p, pre + ".resnets.\(j)", inChannels: cur + skip, outChannels: ch[level], tembDim: temb, groups: g))
                cur = ch[level]
                if config.attentionLevels[level] {
                    at.append(try Transformer2DModel(p, pre + ".attentions.\(j)", channels: cur, contextDim: ctx, heads: heads, groups: g))
                }
            }
            us.append(i < levels - 1 ? try Upsample2D(p, prefix + "up_blocks.\(i).upsamplers.0", channels: cur) : nil)
            ur.append(rs); ua.append(at)
        }
        upResnets = ur; upAttentions = ua; upsamplers = us
        convNormOut = try GroupNorm(p, prefix + "conv_norm_out", groups: min(g, ch[0]), channels: ch[0])
        convOut = try Conv2d(p, prefix + "conv_out", ch[0], config.outChannels, kernel: 3, padding: 1)
    }

    /// x [B, C, H, W], timesteps (one per batch item), context [B, S, crossAttentionDim] -> eps [B, C, H, W]
    public func callAsFunction(_ x: Tensor, timesteps: [Double], context: Tensor) throws -> Tensor {
        try requireShape(x.rank == 4 && x.shape[1] == config.inChannels && timesteps.count == x.shape[0]
                            && context.rank == 3 && context.shape[0] == x.shape[0]
                            && context.shape[2] == config.crossAttentionDim,
                         "UNet input \(x.shape), \(timesteps.count) timesteps, context \(context.shape)")
        let temb = try timeEmbedding(timestepEmbedding(timesteps, dim: config.blockOutChannels[0], on: x.device))
        var h = try convIn(x)
        var skips = [h]
        for i in 0..<downResnets.count {
            for j in 0..<downResnets[i].count {
                h = try downResnets[i][j](h, temb)
                if !downAttentions[i].isEmpty { h = try downAttentions[i][j](h, context: context) }
                skips.append(h)
            }
            if let d = downsamplers[i] {
                h = try d(h)
                skips.append(h)
            }
        }
        h = try midResnets[0](h, temb)
        h = try midAttention(h, context: context)
        h = try midResnets[1](h, temb)
        for i in 0..<upResnets.count {
            for j in 0..<upResnets[i].count {
                h = try upResnets[i][j](Tensor.concat([h, skips.removeLast()], axis: 1), temb)
                if !upAttentions[i].isEmpty { h = try upAttentions[i][j](h, context: context) }
            }
            if let u = upsamplers[i] { h = try u(h) }
        }
        return try convOut(convNormOut.silu(h))
    }
}

/// Configuration of the small CLIP-like text encoder.
public struct TextEncoderConfig: Codable, Sendable, Equatable {
    public var vocabSize = 32
    public var maxLength = 12
    public var hiddenSize = 64
    public var layers = 2
    public var heads = 4
    public init() {}

    /// Throws `invalidArgument` naming the first field out of range; `source` names the file
    /// (or model) in the message.
    public func validate(source: String = "text encoder") throws { try validate(ConfigCheck(source: source)) }

    package func validate(_ c: ConfigCheck) throws {
        try c.int("vocabSize", vocabSize, max: (1 << 24) - 1)
        try c.int("maxLength", maxLength, max: 4096)
        try c.int("hiddenSize", hiddenSize, max: ConfigCheck.maxWidth)
        try c.int("layers", layers, max: 256)
        try c.int("heads", heads, max: 1024)
        try c.multiple("hiddenSize", hiddenSize, of: "heads", heads)
        try c.product("\(c.name("vocabSize")) x \(c.name("hiddenSize"))", [vocabSize, hiddenSize])
        try c.product("\(c.name("hiddenSize"))^2 x 4", [hiddenSize, hiddenSize, 4])
    }
}

/// A small text encoder laid out as Hugging Face's CLIPTextModel (`text_model.*` names):
/// token + position embeddings, pre-LayerNorm transformer layers with causal self-attention
/// and a GELU MLP, final LayerNorm. Output [B, maxLength, hiddenSize] like CLIP's hidden states.
public struct TextEncoder {
    public let config: TextEncoderConfig
    let tokenEmbedding: Tensor, positionEmbedding: Tensor
    let layers: [(ln1: LayerNorm, q: Linear, k: Linear, v: Linear, out: Linear, ln2: LayerNorm, fc1: Linear, fc2: Linear)]
    let finalNorm: LayerNorm

    public init(_ p: Parameters, config: TextEncoderConfig, prefix: String = "text_model.") throws {
        try config.validate()
        self.config = config
        let d = config.hiddenSize
        tokenEmbedding = try p.make(prefix + "embeddings.token_embedding.weight", [config.vocabSize, d], .normal(0.02))
        positionEmbedding = try p.make(prefix + "embeddings.position_embedding.weight", [config.maxLength, d], .normal(0.01))
        layers = try (0..<config.layers).map { i in
            let pre = prefix + "encoder.layers.\(i)"
            return (try LayerNorm(p, pre + ".layer_norm1", d),
                    try Linear(p, pre + ".self_attn.q_proj", d, d), try Linear(p, pre + ".self_attn.k_proj", d, d),
                    try Linear(p, pre + ".self_attn.v_proj", d, d), try Linear(p, pre + ".self_attn.out_proj", d, d),
                    try LayerNorm(p, pre + ".layer_norm2", d),
                    try Linear(p, pre + ".mlp.fc1", d, 4 * d), try Linear(p, pre + ".mlp.fc2", 4 * d, d))
        }
        finalNorm = try LayerNorm(p, prefix + "final_layer_norm", d)
    }

    /// Token ids [B][maxLength] -> hidden states [B, maxLength, hiddenSize].
    public func callAsFunction(_ tokens: [[Int]], on device: Device) throws -> Tensor {
        let l = config.maxLength, d = config.hiddenSize, h = config.heads
        try require(!tokens.isEmpty && tokens.allSatisfy { $0.count == l }, "text encoder expects \(tokens.count) rows of \(l) tokens")
        let b = tokens.count
        var x = try Tensor.gather(tokenEmbedding, indices: tokens.flatMap { $0 }).reshaped([b, l, d])
        x = try x + positionEmbedding
        for layer in layers {
            let n = try layer.ln1(x)
            let q = try layer.q(n).reshaped([b, l, h, d / h])
            let k = try layer.k(n).reshaped([b, l, h, d / h])
            let v = try layer.v(n).reshaped([b, l, h, d / h])
            let a = try Tensor.attention(q: q, k: k, v: v, causal: true, layout: .bthd).reshaped([b, l, d])
            x = try layer.out(a, residual: x)
            x = try layer.fc2(layer.fc1(layer.ln2(x), activation: .gelu), residual: x)
        }
        return try finalNorm(x)
    }
}
