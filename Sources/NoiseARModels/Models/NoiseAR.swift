import Foundation
import NoiseARCore

/// Settings of a NoiseAR prior. JSON keys are the authors' (as in the fixtures' `config`
/// metadata); unknown keys are ignored, missing ones take the authors' defaults (their SDXL
/// prior: 4x128x128 latent, 32x32 patches, d_model 2048, d_ff 4096, 1 head, 1 layer).
public struct NoiseARConfig: Codable, Sendable, Equatable {
    public var latentChannels = 4
    public var latentSize = 128
    public var patchSize = 32
    public var dModel = 2048
    public var dFF = 4096
    public var nHeads = 1
    public var nLayers = 1
    /// Hidden width of the mu / logvar heads (the authors': 2 * d_model).
    public var headHidden: Int?
    /// Width of the prompt embeddings when a `dim_adapter` Linear maps them to d_model (the
    /// authors' DiT variant); nil when the embeddings already have d_model features.
    public var textDim: Int?
    /// Dropout probability while training (attention outputs and the FFN hidden layer).
    public var dropout = 0.0
    /// Prompt tokens T read by the layout head (not in the authors' network; nil: no head). The
    /// head is a linear map of the flattened prompt states [T x text width] to a per-patch,
    /// per-channel offset of mu: the low frequencies of the start, where the layout of a scene
    /// lies, read from every token at its place (a linear read-out of the token states knows
    /// which object goes where; a pooled one does not).
    public var layoutTokens: Int?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case latentChannels = "latent_channels", latentSize = "latent_size", patchSize = "patch_size"
        case dModel = "d_model", dFF = "d_ff", nHeads = "n_heads", nLayers = "n_layers"
        case headHidden = "head_hidden", textDim = "text_dim", dropout
        case layoutTokens = "layout_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = NoiseARConfig()
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? d.latentChannels
        latentSize = try c.decodeIfPresent(Int.self, forKey: .latentSize) ?? d.latentSize
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? d.patchSize
        dModel = try c.decodeIfPresent(Int.self, forKey: .dModel) ?? d.dModel
        dFF = try c.decodeIfPresent(Int.self, forKey: .dFF) ?? d.dFF
        nHeads = try c.decodeIfPresent(Int.self, forKey: .nHeads) ?? d.nHeads
        nLayers = try c.decodeIfPresent(Int.self, forKey: .nLayers) ?? d.nLayers
        headHidden = try c.decodeIfPresent(Int.self, forKey: .headHidden)
        textDim = try c.decodeIfPresent(Int.self, forKey: .textDim)
        dropout = try c.decodeIfPresent(Double.self, forKey: .dropout) ?? 0
        layoutTokens = try c.decodeIfPresent(Int.self, forKey: .layoutTokens)
    }

    /// Patches per side.
    public var grid: Int { latentSize / patchSize }
    /// Patches per latent (the sequence length).
    public var patches: Int { grid * grid }
    /// Features of one patch token: C * P * P.
    public var tokenSize: Int { latentChannels * patchSize * patchSize }
    /// Width of the prompt embeddings the network takes.
    public var contextDim: Int { textDim ?? dModel }
    /// Whether the network has a `dim_adapter`.
    public var hasDimAdapter: Bool { textDim.map { $0 != dModel } ?? false }
    /// The latent's shape for one sample: [C, S, S].
    public var latentShape: [Int] { [latentChannels, latentSize, latentSize] }

    /// Throws `invalidArgument` naming the first field out of range; `source` names the file
    /// (or model) in the message.
    public func validate(source: String = "NoiseAR") throws {
        let c = ConfigCheck(source: source)
        let w = ConfigCheck.maxWidth
        try c.int("latent_channels", latentChannels, max: 1024)
        try c.int("latent_size", latentSize, max: 1 << 14)
        try c.int("patch_size", patchSize, max: latentSize)
        try c.multiple("latent_size", latentSize, of: "patch_size", patchSize)
        try c.int("n_heads", nHeads, max: 1024)
        try c.int("d_model", dModel, max: w)
        try c.multiple("d_model", dModel, of: "n_heads", nHeads)
        try c.int("d_ff", dFF, max: 1 << 18)
        try c.int("n_layers", nLayers, max: 256)
        if let headHidden { try c.int("head_hidden", headHidden, max: 1 << 18) }
        if let textDim { try c.int("text_dim", textDim, max: 1 << 20) }
        try c.float("dropout", dropout, "must lie in [0, 1)") { $0 >= 0 && $0 < 1 }
        // The weights and constants these sizes make.
        let p = patchSize, g = latentSize / patchSize
        try c.product("latent_channels x patch_size^4 x 2 (latent_patch_encoder.0.weight)", [latentChannels, p, p, p, p, 2])
        try c.product("patch_size^2 x 2 x d_model (latent_patch_encoder.2.weight)", [p, p, 2, dModel])
        try c.product("((latent_size / patch_size)^2 + 1) x d_model (pos_encoding)", [g * g + 1, dModel])
        try c.product("d_model^2 x 3 (in_proj_weight)", [dModel, dModel, 3])
        try c.product("d_model x d_ff (ffn_layers)", [dModel, dFF])
        try c.product("head_hidden x latent_channels x patch_size^2 (prediction heads)",
                      [headHidden ?? 2 * dModel, latentChannels, p, p])
        try c.product("text_dim x d_model (dim_adapter.weight)", [contextDim, dModel])
        if let layoutTokens {
            try c.int("layout_tokens", layoutTokens, max: 1 << 16)
            try c.product("patches x latent_channels x layout_tokens x text_dim (layout_head.weight)", [g * g, latentChannels, layoutTokens, contextDim])
        }
    }

    public func jsonString() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }

    /// The config stored in a file's `config` metadata (nil when absent).
    public static func fromMetadata(_ file: SafeTensorsFile) throws -> NoiseARConfig? {
        guard let json = file.metadata["config"] else { return nil }
        do {
            return try JSONDecoder().decode(NoiseARConfig.self, from: Data(json.utf8))
        } catch {
            throw NoiseError.invalidArgument("\(file.source): `config` metadata is not a NoiseAR config: \(error)")
        }
    }

    /// The config implied by the weight shapes (heads are not stored in weights: `nHeads`
    /// stays at the authors' 1). `prefix` is prepended to the authors' key names.
    public static func inferred(from file: SafeTensorsFile, prefix: String = "") throws -> NoiseARConfig {
        func shape(_ key: String, rank: Int) throws -> [Int] {
            guard let t = file[prefix + key] else {
                throw NoiseError.shapeMismatch("\(file.source): missing \(prefix + key): not a NoiseAR checkpoint")
            }
            try requireShape(t.shape.count == rank && t.shape.allSatisfy { $0 > 0 },
                             "\(file.source): \(prefix + key) has shape \(t.shape), expected \(rank) positive dimensions")
            return t.shape
        }
        var c = NoiseARConfig()
        let enc0 = try shape("latent_patch_encoder.0.weight", rank: 2)  // [2 P P, C P P]
        let enc2 = try shape("latent_patch_encoder.2.weight", rank: 2)  // [d, 2 P P]
        let pos = try shape("pos_encoding", rank: 3)                    // [1, N + 1, d]
        let pp = enc0[0] / 2, n = pos[1] - 1
        guard enc0[0] % 2 == 0, let p = exactSquareRoot(pp), p > 0, enc0[1] % pp == 0,
              let g = exactSquareRoot(n), g > 0 else {
            throw NoiseError.shapeMismatch(
                "\(file.source): cannot infer patch size / latent size from \(prefix)latent_patch_encoder.0.weight \(enc0) and \(prefix)pos_encoding \(pos)")
        }
        let (size, overflow) = g.multipliedReportingOverflow(by: p)
        try requireShape(!overflow, "\(file.source): latent size \(g) x \(p) from \(prefix)pos_encoding \(pos) overflows")
        c.patchSize = p
        c.latentChannels = enc0[1] / pp
        c.latentSize = size
        c.dModel = enc2[0]
        c.dFF = try shape("ffn_layers.0.0.weight", rank: 2)[0]
        c.headHidden = try shape("prediction_head_mu.0.weight", rank: 2)[0]
        c.nLayers = 0
        while file[prefix + "self_attn_layers.\(c.nLayers).in_proj_weight"] != nil { c.nLayers += 1 }
        if let a = file[prefix + "dim_adapter.weight"], a.shape.count == 2 { c.textDim = a.shape[1] }
        if let h = file[prefix + "layout_head.weight"], h.shape.count == 2, c.contextDim > 0, h.shape[1] % c.contextDim == 0 {
            c.layoutTokens = h.shape[1] / c.contextDim
        }
        return c
    }
}

/// Multi-head attention laid out as PyTorch's `nn.MultiheadAttention`: `in_proj_weight`
/// [3d, d] and `in_proj_bias` [3d] stacking the q, k, v projections, and `out_proj` Linear(d, d).
struct MultiheadAttention {
    let inProjWeight: Tensor, inProjBias: Tensor  // [3d, d], [3d]
    let outProj: Linear                            // [d, d]
    let dim: Int, heads: Int

    init(_ p: Parameters, _ prefix: String, dim: Int, heads: Int) throws {
        inProjWeight = try p.make(prefix + ".in_proj_weight", [3 * dim, dim], .uniformFanIn(dim))
        inProjBias = try p.make(prefix + ".in_proj_bias", [3 * dim], .zeros)
        outProj = try Linear(p, prefix + ".out_proj", dim, dim)
        self.dim = dim
        self.heads = heads
    }

    /// Projection i (0 q, 1 k, 2 v) as (weight [d, d], bias [d]); recorded, so gradients reach
    /// the stacked parameters.
    func projection(_ i: Int) throws -> (w: Tensor, b: Tensor) {
        (try inProjWeight.slice(axis: 0, i * dim, (i + 1) * dim), try inProjBias.slice(axis: 0, i * dim, (i + 1) * dim))
    }

    /// [B, T, d] -> [B, T, H, d/H] (a view).
    func split(_ x: Tensor) throws -> Tensor { try x.reshaped([x.shape[0], x.shape[1], heads, dim / heads]) }
    /// [B, T, H, d/H] -> [B, T, d].
    func merge(_ x: Tensor) throws -> Tensor { try x.reshaped([x.shape[0], x.shape[1], dim]) }

    /// out_proj(softmax(q k^T / sqrt(d/H)) v) for queries x [B, Tq, d] over kv [B, Tk, d].
    func callAsFunction(_ x: Tensor, _ kv: Tensor, causal: Bool) throws -> Tensor {
        let (wq, bq) = try projection(0), (wk, bk) = try projection(1), (wv, bv) = try projection(2)
        let q = try split(Tensor.linear(x, weight: wq, bias: bq))
        let k = try split(Tensor.linear(kv, weight: wk, bias: bk))
        let v = try split(Tensor.linear(kv, weight: wv, bias: bv))
        let a = try Tensor.attention(q: q, k: k, v: v, causal: causal, layout: .bthd)
        return try outProj(merge(a))
    }
}

/// The NoiseAR prior network (the authors' `NoiseARNet`): an autoregressive transformer over
/// the patches of a noise latent, cross-attending to the prompt embeddings, predicting a
/// diagonal Gaussian (mu, logvar) for every patch from the patches before it.
///
///     tokens  = patchify(noise)                                  [B, N, C P P]
///     x       = [start; encoder(tokens[:, :N-1])] + pos[:, :N]   [B, N, d]
///     per layer:  x = LN(x); x = SelfAttn(x, causal) + x
///                 x = LN(x); x = CrossAttn(x, text) + x
///                 x = LN(x); x = FFN(x) + x                      (residual from the normalised x)
///     mu, logvar = head_mu(x), head_logvar(x)                    [B, N, C P P]
///
/// Parameter names are the authors' checkpoint keys (`latent_patch_encoder.0.weight`,
/// `self_attn_layers.0.in_proj_weight`, `prediction_head_mu.2.bias`, `pos_encoding`, ...).
public final class NoiseARNet {
    public let config: NoiseARConfig
    public let params: Parameters
    public var device: Device { params.device }
    /// Dropout on (training) or off (sampling, scoring).
    public var training = false
    private var dropoutCounter: UInt64 = 0
    private var dropoutStream: UInt64 = 0
    private let dropoutSeed: UInt64
    /// Dropout keeps an element where its normal draw z has Phi(z) < 1 - p, i.e. z below this.
    private let dropoutThreshold: Float

    /// Starts dropout stream `stream` (trainers pass the step, so a resumed run draws the same
    /// masks as an uninterrupted one).
    public func beginDropout(stream: UInt64) {
        dropoutStream = stream
        dropoutCounter = 0
    }

    // latent_patch_encoder: Linear(C P P -> 2 P P) -> SiLU -> Linear(2 P P -> d)
    let encoder0: Linear, encoder2: Linear
    let startToken: Tensor    // learnable_start_token_emb [d]
    let posEncoding: Tensor   // pos_encoding [1, N + 1, d] (fixed sinusoids; not trained)
    let dimAdapter: Linear?   // dim_adapter [d, text_dim] (DiT variant only)
    struct Layer {
        let selfAttn: MultiheadAttention     // self_attn_layers.i
        let selfNorm: LayerNorm              // self_attn_norm.i
        let crossAttn: MultiheadAttention    // cross_attn_layers.i
        let crossNorm: LayerNorm             // cross_attn_norm.i
        let ffn0: Linear, ffn3: Linear       // ffn_layers.i.0 [d_ff, d], .3 [d, d_ff] (GELU, dropout between)
        let ffnNorm: LayerNorm               // ffn_norm.i
    }
    let layers: [Layer]
    // prediction_head_mu / _logvar: Linear(d -> hidden) -> GELU -> Linear(hidden -> C P P)
    let muHead0: Linear, muHead2: Linear, logvarHead0: Linear, logvarHead2: Linear
    // layout_head (ours, optional): Linear(T text_dim -> N C)
    public let layoutHead: Linear?

    /// A freshly initialised network (Philox stream `seed`).
    public init(config: NoiseARConfig, device: Device, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        dropoutSeed = seed &+ 0xD209
        dropoutThreshold = Float(Self.normalQuantile(1 - config.dropout))
        let p = Parameters(device: device, seed: seed)
        params = p
        let d = config.dModel, tok = config.tokenSize, pp2 = 2 * config.patchSize * config.patchSize
        encoder0 = try Linear(p, "latent_patch_encoder.0", tok, pp2)
        encoder2 = try Linear(p, "latent_patch_encoder.2", pp2, d)
        startToken = try p.make("learnable_start_token_emb", [d], .normal(0.02))
        posEncoding = try p.make("pos_encoding", [1, config.patches + 1, d], .zeros)
        try posEncoding.assign(Tensor(Self.sinusoids(positions: config.patches + 1, dim: d),
                                      shape: [1, config.patches + 1, d], on: device))
        posEncoding.requiresGrad = false
        dimAdapter = config.hasDimAdapter ? try Linear(p, "dim_adapter", config.contextDim, d) : nil
        layers = try (0..<config.nLayers).map { i in
            Layer(selfAttn: try MultiheadAttention(p, "self_attn_layers.\(i)", dim: d, heads: config.nHeads),
                  selfNorm: try LayerNorm(p, "self_attn_norm.\(i)", d),
                  crossAttn: try MultiheadAttention(p, "cross_attn_layers.\(i)", dim: d, heads: config.nHeads),
                  crossNorm: try LayerNorm(p, "cross_attn_norm.\(i)", d),
                  ffn0: try Linear(p, "ffn_layers.\(i).0", d, config.dFF),
                  ffn3: try Linear(p, "ffn_layers.\(i).3", config.dFF, d),
                  ffnNorm: try LayerNorm(p, "ffn_norm.\(i)", d))
        }
        let hh = config.headHidden ?? 2 * d
        muHead0 = try Linear(p, "prediction_head_mu.0", d, hh)
        muHead2 = try Linear(p, "prediction_head_mu.2", hh, tok)
        logvarHead0 = try Linear(p, "prediction_head_logvar.0", d, hh)
        logvarHead2 = try Linear(p, "prediction_head_logvar.2", hh, tok)
        if let t = config.layoutTokens {
            // Starts as the plain network: the head's output is zero until it is fitted or trained.
            let out = config.patches * config.latentChannels
            layoutHead = Linear(weight: try p.make("layout_head.weight", [out, t * config.contextDim], .zeros),
                                bias: try p.make("layout_head.bias", [out], .zeros))
        } else {
            layoutHead = nil
        }
    }

    /// Sinusoidal positions: sin on even features, cos on odd ones, wavelengths 10000^(2i/d).
    static func sinusoids(positions: Int, dim: Int) -> [Float] {
        var out = [Float](repeating: 0, count: positions * dim)
        for pos in 0..<positions {
            for i in stride(from: 0, to: dim, by: 2) {
                let angle = Double(pos) / Foundation.pow(10000, Double(i) / Double(dim))
                out[pos * dim + i] = Float(Foundation.sin(angle))
                if i + 1 < dim { out[pos * dim + i + 1] = Float(Foundation.cos(angle)) }
            }
        }
        return out
    }

    /// Loads a checkpoint with the authors' key names (optionally under a prefix such as the
    /// fixtures' `weights.`, found automatically). The config comes from the `config` metadata
    /// when present, else from the weight shapes; `adjust` then overrides fields (flags).
    public static func load(_ url: URL, device: Device,
                            adjust: (inout NoiseARConfig) -> Void = { _ in }) throws -> NoiseARNet {
        try load(WeightsFile.read(url, skippingUnsupported: true), device: device, adjust: adjust)
    }

    public static func load(_ file: SafeTensorsFile, device: Device,
                            adjust: (inout NoiseARConfig) -> Void = { _ in }) throws -> NoiseARNet {
        let key = "latent_patch_encoder.0.weight"
        let prefix = file[key] != nil ? "" : file["weights." + key] != nil ? "weights."
            : file["model." + key] != nil ? "model." : ""
        var config = try NoiseARConfig.fromMetadata(file) ?? NoiseARConfig.inferred(from: file, prefix: prefix)
        if config.headHidden == nil, let h = file[prefix + "prediction_head_mu.0.weight"], h.shape.count == 2 {
            config.headHidden = h.shape[0]
        }
        if let a = file[prefix + "dim_adapter.weight"], a.shape.count == 2 { config.textDim = a.shape[1] }
        adjust(&config)
        try config.validate(source: file.metadata["config"] != nil ? file.source
                                : "\(file.source) (config inferred from the weight shapes)")
        let net = try NoiseARNet(config: config, device: device)
        // Our training checkpoints carry optimiser state under `adam.`; older timm-style extras
        // are not expected here.
        try net.params.load(file, prefix: prefix, allowUnexpected: !prefix.isEmpty,
                            ignoring: { $0.hasPrefix("adam.") })
        return net
    }

    // MARK: patches

    /// [B, C, S, S] -> [B, (S/P)^2, C P P]: patches in raster order, each (channel, y, x).
    public func patchify(_ x: Tensor) throws -> Tensor {
        let c = config, b = x.shape.first ?? 0, g = c.grid, p = c.patchSize
        try requireShape(x.shape == [b] + c.latentShape,
                         "NoiseAR latent \(x.shape) does not match [B, \(c.latentChannels), \(c.latentSize), \(c.latentSize)]")
        return try x.reshaped([b, c.latentChannels, g, p, g, p]).permuted([0, 2, 4, 1, 3, 5])
            .reshaped([b, c.patches, c.tokenSize])
    }

    /// The exact inverse of `patchify`.
    public func unpatchify(_ t: Tensor) throws -> Tensor {
        let c = config, b = t.shape.first ?? 0, g = c.grid, p = c.patchSize
        try requireShape(t.shape == [b, c.patches, c.tokenSize],
                         "NoiseAR tokens \(t.shape) do not match [B, \(c.patches), \(c.tokenSize)]")
        return try t.reshaped([b, g, g, c.latentChannels, p, p]).permuted([0, 3, 1, 4, 2, 5])
            .reshaped([b] + c.latentShape)
    }

    // MARK: network

    /// The prompt embeddings as the cross-attention sees them ([B, T, d]).
    func context(_ text: Tensor) throws -> Tensor {
        try requireShape(text.rank == 3 && text.shape[2] == config.contextDim,
                         "prompt embeddings \(text.shape) do not match [B, T, \(config.contextDim)]")
        return try dimAdapter.map { try $0(text) } ?? text
    }

    func encode(_ tokens: Tensor) throws -> Tensor { try encoder2(encoder0(tokens, activation: .silu)) }

    func dropout(_ x: Tensor) throws -> Tensor {
        guard training && config.dropout > 0 else { return x }
        dropoutCounter += 1
        let keep = 1 - config.dropout
        let z = Philox.normal(count: x.count, seed: dropoutSeed &+ dropoutStream, offset: dropoutCounter &* 0x1_0000_0000)
        let mask = z.map { $0 < dropoutThreshold ? Float(1 / keep) : 0 }
        return try x * Tensor(mask, shape: x.shape, on: device)
    }

    /// The standard normal quantile by bisection on erfc (ample for a dropout threshold).
    static func normalQuantile(_ p: Double) -> Double {
        var lo = -10.0, hi = 10.0
        for _ in 0..<80 {
            let mid = (lo + hi) / 2
            if 0.5 * Foundation.erfc(-mid / 2.0.squareRoot()) < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    func block(_ layer: Layer, _ x: Tensor, _ ctx: Tensor) throws -> Tensor {
        var x = try layer.selfNorm(x)
        x = try dropout(layer.selfAttn(x, x, causal: true)) + x
        x = try layer.crossNorm(x)
        x = try dropout(layer.crossAttn(x, ctx, causal: false)) + x
        x = try layer.ffnNorm(x)
        return try layer.ffn3(dropout(layer.ffn0(x, activation: .gelu)), residual: x)
    }

    func heads(_ x: Tensor) throws -> (mu: Tensor, logvar: Tensor) {
        (try muHead2(muHead0(x, activation: .gelu)), try logvarHead2(logvarHead0(x, activation: .gelu)))
    }

    /// Hidden states [B, 1 + n, d] for the start token followed by `prefix` tokens [B, n, C P P].
    func hidden(prefix: Tensor?, batch: Int, context ctx: Tensor) throws -> Tensor {
        let d = config.dModel
        var x = try startToken.reshaped([1, 1, d]).expanded(to: [batch, 1, d])
        if let prefix { x = try Tensor.concat([x, encode(prefix)], axis: 1) }
        x = try x + posEncoding.slice(axis: 1, 0, x.shape[1])
        for layer in layers { x = try block(layer, x, ctx) }
        return x
    }

    /// Teacher forcing: mu and logvar [B, N, C P P] of every patch given the patches before it.
    public func predict(tokens: Tensor, text: Tensor) throws -> (mu: Tensor, logvar: Tensor) {
        let c = config, b = tokens.shape.first ?? 0
        try requireShape(tokens.shape == [b, c.patches, c.tokenSize],
                         "NoiseAR tokens \(tokens.shape) do not match [B, \(c.patches), \(c.tokenSize)]")
        try requireShape(text.rank == 3 && text.shape[0] == b,
                         "prompt embeddings \(text.shape) for a batch of \(b) latents")
        let prefix = c.patches > 1 ? try tokens.slice(axis: 1, 0, c.patches - 1) : nil
        let (mu, lv) = try heads(hidden(prefix: prefix, batch: b, context: context(text)))
        guard let offset = try layoutOffset(text) else { return (mu, lv) }
        return (try mu + offset, lv)
    }

    /// The layout head's offset of mu for every patch, [B, N, C P P] (constant over each patch's
    /// channel), or nil without a head.
    func layoutOffset(_ text: Tensor) throws -> Tensor? {
        guard let head = layoutHead, let t = config.layoutTokens else { return nil }
        let c = config, b = text.shape.first ?? 0, pp = c.patchSize * c.patchSize
        try requireShape(text.rank == 3 && text.shape[1] == t && text.shape[2] == c.contextDim,
                         "this NoiseAR prior's layout head reads prompt embeddings [B, \(t), \(c.contextDim)], got \(text.shape)")
        let o = try head(text.reshaped([b, t * c.contextDim]))   // [B, N C]
        return try o.reshaped([b, c.patches, c.latentChannels, 1]).expanded(to: [b, c.patches, c.latentChannels, pp])
            .reshaped([b, c.patches, c.tokenSize])
    }

    /// Teacher forcing on a latent: mu and logvar shaped like `noise` [B, C, S, S].
    public func predict(noise: Tensor, text: Tensor) throws -> (mu: Tensor, logvar: Tensor) {
        let (mu, lv) = try predict(tokens: patchify(noise), text: text)
        return (try unpatchify(mu), try unpatchify(lv))
    }

    /// log pi(noise | text) [B]: the exact log-density of each latent under the prior sampled at
    /// `temperature` (per element N(mu, tau^2 exp(clamp(logvar, -20, 10)))), summed over all
    /// elements. Differentiable with respect to the parameters and the noise.
    public func logProb(noise: Tensor, text: Tensor, temperature: Float = 1) throws -> Tensor {
        try require(temperature > 0 && temperature.isFinite, "temperature must be positive, got \(temperature)")
        let tokens = try patchify(noise)
        let (mu, lv) = try predict(tokens: tokens, text: text)
        let logVar = try lv.clamp(-20, 10) + 2 * Foundation.log(temperature)
        let z2 = try (tokens - mu).square() * logVar.scaled(-1).exp()
        let perElement = try (logVar + z2).affine(-0.5, -0.5 * Float(Foundation.log(2 * Double.pi)))
        return try perElement.sum(axes: [1, 2])
    }

    /// E[log pi(x | text)] [B] over the draws x = `mean` + sqrt(`variance`) * z, teacher-forced on
    /// `inputs` (one such draw) at temperature 1: the log-density with each element's squared
    /// error replaced by its expectation over its own draw, (mean - mu)^2 + variance. This is the
    /// Rao-Blackwellised form of `logProb(noise: inputs, ...)` when `inputs` is a draw around
    /// `mean` (equal to it for variance 0): the same objective in expectation, without the draw's
    /// noise in the gradient of mu, so a prompt-dependent mean far below the noise is learned in
    /// few steps. `mean` is shaped like `inputs` [B, C, S, S].
    public func expectedLogProb(inputs: Tensor, mean: Tensor, variance: Float, text: Tensor) throws -> Tensor {
        try require(variance >= 0 && variance.isFinite, "variance must be non-negative, got \(variance)")
        try requireShape(mean.shape == inputs.shape, "mean \(mean.shape) does not match the inputs \(inputs.shape)")
        let (mu, lv) = try predict(tokens: patchify(inputs), text: text)
        let logVar = try lv.clamp(-20, 10)
        let err = try (patchify(mean) - mu).square() + variance
        let perElement = try (logVar + err * logVar.scaled(-1).exp()).affine(-0.5, -0.5 * Float(Foundation.log(2 * Double.pi)))
        return try perElement.sum(axes: [1, 2])
    }

    // MARK: sampling

    /// Draws latents [B, C, S, S] patch by patch at `temperature` (the authors use 0.5). The
    /// standard normals come from Philox stream `seed + b` for image b (the same numbers as
    /// `Tensor.randn` of that image's latent, so temperature-1 sampling of a standard-normal
    /// prior would reproduce Gaussian noise), or from `eps` [B, C, S, S] when given.
    /// `cached` keeps every layer's self-attention keys and values and computes the text's
    /// cross-attention keys and values once; uncached re-runs the prefix for every patch.
    public func sample(text: Tensor, temperature: Float = 0.5, seed: UInt64 = 0, eps: Tensor? = nil,
                       cached: Bool = true, progress: SamplingProgress = { _, _ in true }) throws -> Tensor {
        try require(temperature >= 0 && temperature.isFinite, "temperature must be non-negative, got \(temperature)")
        let c = config, b = text.shape.first ?? 0
        if let eps {
            try requireShape(eps.shape == [b] + c.latentShape,
                             "eps \(eps.shape) does not match the latent [\(b), \(c.latentChannels), \(c.latentSize), \(c.latentSize)]")
            try require(eps.device === device, "eps is on another device")
        }
        try require(text.device === device, "prompt embeddings are on another device")
        return try device.noGrad {
            let ctx = try context(text)
            let layout = try layoutOffset(text)
            let latent = try Tensor.empty([b] + c.latentShape, on: device)
            var decoder = cached ? try CachedDecoder(self, context: ctx, batch: b) : nil
            var tokens: [Tensor] = []
            for i in 0..<c.patches {
                let mu: Tensor, lv: Tensor
                if let next = try decoder?.step(tokens.last) {
                    (mu, lv) = next
                } else {
                    let prefix = tokens.isEmpty ? nil : try Tensor.concat(tokens, axis: 1)
                    let h = try hidden(prefix: prefix, batch: b, context: ctx)
                    (mu, lv) = try heads(h.slice(axis: 1, i, i + 1))
                }
                let mean = try layout.map { try mu + $0.slice(axis: 1, i, i + 1) } ?? mu
                let token = try Tensor.empty([b, 1, c.tokenSize], on: device)
                var d = PatchSampleDesc(batch: b, channels: c.latentChannels, size: c.latentSize, patch: c.patchSize,
                                        gridY: i / c.grid, gridX: i % c.grid, seed: seed, temperature: temperature)
                d.logvarMin = -20
                d.logvarMax = 10
                try device.run(Op.SamplePatch(d, mu: mean.ref, logvar: lv.ref, eps: eps?.ref, latent: latent.ref, token: token.ref))
                tokens.append(token)
                if !progress(i + 1, c.patches) {
                    throw NoiseError.cancelled("NoiseAR sampling stopped after patch \(i + 1) of \(c.patches)")
                }
            }
            return latent
        }
    }

    /// Incremental decoding: one new token per step, attention over cached keys and values.
    struct CachedDecoder {
        let net: NoiseARNet
        let batch: Int
        struct LayerState {
            let q: (w: Tensor, b: Tensor), k: (w: Tensor, b: Tensor), v: (w: Tensor, b: Tensor)
            let crossQ: (w: Tensor, b: Tensor)
            let crossK: Tensor, crossV: Tensor   // [B, T_text, H, d/H], computed once
            let keys: Tensor, values: Tensor     // [B, N, H, d/H] caches
        }
        var states: [LayerState] = []
        var position = 0

        init(_ net: NoiseARNet, context ctx: Tensor, batch: Int) throws {
            self.net = net
            self.batch = batch
            let c = net.config, hd = c.dModel / c.nHeads
            for layer in net.layers {
                let sa = layer.selfAttn, ca = layer.crossAttn
                let (ckw, ckb) = try ca.projection(1), (cvw, cvb) = try ca.projection(2)
                states.append(LayerState(
                    q: try sa.projection(0), k: try sa.projection(1), v: try sa.projection(2),
                    crossQ: try ca.projection(0),
                    crossK: try ca.split(Tensor.linear(ctx, weight: ckw, bias: ckb)),
                    crossV: try ca.split(Tensor.linear(ctx, weight: cvw, bias: cvb)),
                    keys: try Tensor.empty([batch, c.patches, c.nHeads, hd], on: net.device),
                    values: try Tensor.empty([batch, c.patches, c.nHeads, hd], on: net.device)))
            }
        }

        /// mu, logvar [B, 1, C P P] of the next patch, given the previous patch's token (nil first).
        mutating func step(_ previous: Tensor?) throws -> (Tensor, Tensor) {
            let c = net.config, d = c.dModel, i = position
            var x = try previous.map { try net.encode($0) } ?? net.startToken.reshaped([1, 1, d]).expanded(to: [batch, 1, d])
            x = try x + net.posEncoding.slice(axis: 1, i, i + 1)
            let cacheStrides = [c.patches * d, d, 1]
            for (layer, s) in zip(net.layers, states) {
                let sa = layer.selfAttn, ca = layer.crossAttn
                var h = try layer.selfNorm(x)
                let q = try sa.split(Tensor.linear(h, weight: s.q.w, bias: s.q.b))
                let k = try Tensor.linear(h, weight: s.k.w, bias: s.k.b)
                let v = try Tensor.linear(h, weight: s.v.w, bias: s.v.b)
                try Tensor.scatterStrided(k, into: s.keys, strides: cacheStrides, dstOffset: i * d)
                try Tensor.scatterStrided(v, into: s.values, strides: cacheStrides, dstOffset: i * d)
                let a = try Tensor.cachedAttention(q: q, keys: s.keys, values: s.values, tokens: i + 1)
                x = try sa.outProj(sa.merge(a), residual: h)
                h = try layer.crossNorm(x)
                let cq = try ca.split(Tensor.linear(h, weight: s.crossQ.w, bias: s.crossQ.b))
                let ctxA = try Tensor.attention(q: cq, k: s.crossK, v: s.crossV, layout: .bthd)
                x = try ca.outProj(ca.merge(ctxA), residual: h)
                h = try layer.ffnNorm(x)
                x = try layer.ffn3(layer.ffn0(h, activation: .gelu), residual: h)
            }
            position += 1
            return try net.heads(x)
        }
    }
}

/// Spherical interpolation between two latents per batch item: s = 0 gives `a`, 1 gives `b`.
/// Falls back to linear interpolation when the two are (anti)parallel.
public func slerp(_ a: Tensor, _ b: Tensor, _ s: Float) throws -> Tensor {
    try requireShape(a.shape == b.shape && a.rank >= 1, "slerp of \(a.shape) and \(b.shape)")
    let n = a.shape[0], per = a.count / max(n, 1)
    let av = try a.toArray(), bv = try b.toArray()
    var out = [Float](repeating: 0, count: a.count)
    for i in 0..<n {
        var dot = 0.0, na = 0.0, nb = 0.0
        for j in i * per..<(i + 1) * per {
            dot += Double(av[j]) * Double(bv[j]); na += Double(av[j] * av[j]); nb += Double(bv[j] * bv[j])
        }
        let cosine = max(-1, min(1, dot / max((na * nb).squareRoot(), 1e-30)))
        let omega = Foundation.acos(cosine), so = Foundation.sin(omega)
        let (wa, wb): (Double, Double) = so < 1e-6 ? (1 - Double(s), Double(s))
            : (Foundation.sin((1 - Double(s)) * omega) / so, Foundation.sin(Double(s) * omega) / so)
        for j in i * per..<(i + 1) * per { out[j] = Float(wa * Double(av[j]) + wb * Double(bv[j])) }
    }
    return try Tensor(out, shape: a.shape, on: a.device)
}
