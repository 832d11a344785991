import Foundation
import NoiseARCore

/// Settings of an NPNet ("golden noise") network. JSON keys are those of the fixtures'
/// `config` metadata; unknown keys are ignored, missing ones take the authors' SDXL defaults
/// (4x128x128 latent, 77 x 2048 prompt embeddings, swin_tiny, 8 attention heads in the
/// singular-value branch).
public struct NPNetConfig: Codable, Sendable, Equatable {
    public var latentChannels = 4
    public var latentSize = 128
    /// Prompt tokens T and features D: AdaGroupNorm's Linear sees the flattened [T D] embedding,
    /// so only the product matters (a config inferred from weights has T = 1).
    public var textTokens = 77
    public var textDim = 2048
    public var swin = SwinConfig()
    public var svdAttentionHeads = 8
    public var adaGroupNormEps: Float = 1e-6
    public var adaGroupNormGroups = 1
    /// The paper's ablations: without the singular-value branch the noise itself takes its
    /// place in the sum; without the residual (Swin) branch its term is left out and the Swin
    /// is never run. Both on in the authors' network.
    public var svdBranch = true
    public var residualBranch = true

    public init() {}

    enum CodingKeys: String, CodingKey {
        case latentChannels = "latent_channels", latentSize = "latent_size", textTokens = "text_tokens"
        case textDim = "text_dim", swin, svdAttentionHeads = "svd_attention_heads"
        case adaGroupNormEps = "adagroupnorm_eps", adaGroupNormGroups = "adagroupnorm_groups"
        case swinLayerNormEps = "swin_layernorm_eps"
        case svdBranch = "svd_branch", residualBranch = "residual_branch"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = NPNetConfig()
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? d.latentChannels
        latentSize = try c.decodeIfPresent(Int.self, forKey: .latentSize) ?? d.latentSize
        textTokens = try c.decodeIfPresent(Int.self, forKey: .textTokens) ?? d.textTokens
        textDim = try c.decodeIfPresent(Int.self, forKey: .textDim) ?? d.textDim
        swin = try c.decodeIfPresent(SwinConfig.self, forKey: .swin) ?? d.swin
        svdAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .svdAttentionHeads) ?? d.svdAttentionHeads
        adaGroupNormEps = try c.decodeIfPresent(Float.self, forKey: .adaGroupNormEps) ?? d.adaGroupNormEps
        adaGroupNormGroups = try c.decodeIfPresent(Int.self, forKey: .adaGroupNormGroups) ?? d.adaGroupNormGroups
        if let eps = try c.decodeIfPresent(Float.self, forKey: .swinLayerNormEps) { swin.layerNormEps = eps }
        svdBranch = try c.decodeIfPresent(Bool.self, forKey: .svdBranch) ?? d.svdBranch
        residualBranch = try c.decodeIfPresent(Bool.self, forKey: .residualBranch) ?? d.residualBranch
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(latentChannels, forKey: .latentChannels)
        try c.encode(latentSize, forKey: .latentSize)
        try c.encode(textTokens, forKey: .textTokens)
        try c.encode(textDim, forKey: .textDim)
        try c.encode(swin, forKey: .swin)
        try c.encode(svdAttentionHeads, forKey: .svdAttentionHeads)
        try c.encode(adaGroupNormEps, forKey: .adaGroupNormEps)
        try c.encode(adaGroupNormGroups, forKey: .adaGroupNormGroups)
        try c.encode(swin.layerNormEps, forKey: .swinLayerNormEps)
        try c.encode(svdBranch, forKey: .svdBranch)
        try c.encode(residualBranch, forKey: .residualBranch)
    }

    /// Side of the tiled singular-value matrix: 2 L.
    public var matrixSize: Int { 2 * latentSize }
    /// Features of one flattened prompt embedding: T D.
    public var textFeatures: Int { textTokens * textDim }
    /// The latent's shape for one sample: [C, L, L].
    public var latentShape: [Int] { [latentChannels, latentSize, latentSize] }

    /// Throws `invalidArgument` naming the first field out of range; `source` names the file
    /// (or model) in the message.
    public func validate(source: String = "NPNet") throws {
        let c = ConfigCheck(source: source)
        // The authors tile the channels as "b (a c) h w -> b (a h) (c w)" with a = c = 2.
        if latentChannels != 4 {
            throw c.error("latent_channels", "\(latentChannels)", "must be 4 (the 2x2 channel tiling)")
        }
        try c.int("latent_size", latentSize, max: 4096)
        try c.int("text_tokens", textTokens, max: 1 << 16)
        try c.int("text_dim", textDim, max: 1 << 20)
        try c.product("text_tokens x text_dim x 2 x latent_channels (embeeding.linear.weight)",
                      [textTokens, textDim, 2, latentChannels])
        try c.int("svd_attention_heads", svdAttentionHeads, max: matrixSize)
        try c.divides("svd_attention_heads", svdAttentionHeads, "2 x latent_size", matrixSize)
        try c.epsilon("adagroupnorm_eps", Double(adaGroupNormEps))
        try c.int("adagroupnorm_groups", adaGroupNormGroups, max: latentChannels)
        try c.divides("adagroupnorm_groups", adaGroupNormGroups, "latent_channels", latentChannels)
        try swin.validate(c.nested("swin."))
    }

    public func jsonString() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }

    /// The config stored in a file's `config` metadata (nil when absent).
    public static func fromMetadata(_ file: SafeTensorsFile) throws -> NPNetConfig? {
        guard let json = file.metadata["config"] else { return nil }
        do {
            return try JSONDecoder().decode(NPNetConfig.self, from: Data(json.utf8))
        } catch {
            throw NoiseError.invalidArgument("\(file.source): `config` metadata is not an NPNet config: \(error)")
        }
    }

    /// The config implied by the weight shapes. Not stored in weights: the SVD branch's heads
    /// (stays 8), the epsilons and groups (the authors'), and the split of the prompt features
    /// into tokens and dims (T = 1, D = T D). `prefix` is prepended to the authors' key names.
    public static func inferred(from file: SafeTensorsFile, prefix: String = "") throws -> NPNetConfig {
        func shape(_ key: String, rank: Int) throws -> [Int] {
            guard let t = file[prefix + key] else {
                throw NoiseError.shapeMismatch("\(file.source): missing \(prefix + key): not an NPNet checkpoint")
            }
            try requireShape(t.shape.count == rank && t.shape.allSatisfy { $0 > 0 },
                             "\(file.source): \(prefix + key) has shape \(t.shape), expected \(rank) positive dimensions")
            return t.shape
        }
        var c = NPNetConfig()
        let sw = "unet_embedding.swin."
        let mlp1 = try shape("unet_svd.mlp1.0.weight", rank: 2)          // [64, 2L]
        let emb = try shape("embeeding.linear.weight", rank: 2)          // [2C, T D]
        let up = try shape("unet_embedding.upconv.weight", rank: 4)      // [C, r, 1, 1]
        let patch = try shape(sw + "patch_embed.proj.weight", rank: 4)   // [E, in, p, p]
        try requireShape(mlp1[1] % 2 == 0 && emb[0] % 2 == 0,
                         "\(file.source): cannot infer the latent from \(prefix)unet_svd.mlp1.0.weight \(mlp1) and \(prefix)embeeding.linear.weight \(emb)")
        c.latentSize = mlp1[1] / 2
        c.latentChannels = emb[0] / 2
        c.textTokens = 1
        c.textDim = emb[1]
        c.swin.embedDim = patch[0]
        c.swin.inChans = patch[1]
        c.swin.patchSize = patch[2]
        var depths: [Int] = [], heads: [Int] = []
        while file[prefix + sw + "layers.\(depths.count).blocks.0.norm1.weight"] != nil {
            let i = depths.count
            var n = 0
            while file[prefix + sw + "layers.\(i).blocks.\(n).norm1.weight"] != nil { n += 1 }
            let table = try shape(sw + "layers.\(i).blocks.0.attn.relative_position_bias_table", rank: 2)
            depths.append(n)
            heads.append(table[1])
            if i == 0 {
                guard let side = exactSquareRoot(table[0]), side % 2 == 1 else {
                    throw NoiseError.shapeMismatch(
                        "\(file.source): \(prefix + sw)layers.0.blocks.0.attn.relative_position_bias_table \(table) is not [(2w-1)^2, heads]")
                }
                c.swin.windowSize = (side + 1) / 2
            }
        }
        try requireShape(!depths.isEmpty, "\(file.source): missing \(prefix + sw)layers.0.blocks.0.*: not an NPNet checkpoint")
        c.swin.depths = depths
        c.swin.numHeads = heads
        let fc1 = try shape(sw + "layers.0.blocks.0.mlp.fc1.weight", rank: 2)
        c.swin.mlpRatio = max(fc1[0] / max(patch[0], 1), 1)
        // The final map is upconv's input channels wide (the authors' quirky resize).
        guard depths.count <= 32, let size = checkedProduct([up[1], c.swin.patchSize, 1 << (depths.count - 1)]) else {
            throw NoiseError.shapeMismatch(
                "\(file.source): image size \(up[1]) x \(c.swin.patchSize) x 2^\(depths.count - 1) from \(prefix)unet_embedding.upconv.weight \(up), \(prefix + sw)patch_embed.proj.weight \(patch) and \(depths.count) stages overflows")
        }
        c.swin.imgSize = size
        return c
    }
}

/// Everything NPNet computes for a batch.
public struct NPNetOutput {
    /// The golden noise [B, C, L, L].
    public var golden: Tensor
    /// AdaGroupNorm of the noise conditioned on the prompt [B, C, L, L].
    public var textEmb: Tensor
    /// The singular-value branch [B, C, L, L].
    public var svdBranch: Tensor
    /// The Swin branch after the resize and 1x1 conv [B, C, L, L] (nil when the config leaves
    /// the branch out).
    public var residualBranch: Tensor?
    /// Swin `forward_features` of the (noise + text_emb) image [B, r, r, E 2^(S-1)] (NHWC; nil
    /// without the residual branch).
    public var swinFeatures: Tensor?
}

/// NPNet, the authors' "noise prompt network": it maps an initial noise latent and the
/// prompt's embeddings to a "golden" noise.
///
///     text_emb = GN(x) (1 + scale) + shift,  [scale, shift] = Linear(flatten(prompt))   (AdaGroupNorm, no activation)
///     M        = tile(x)        [B, 2L, 2L]: channels 0 1 / 2 3 as the quadrants
///     U, S, Vh = svd(M)
///     h        = mlp1(U^T) + mlp2(Vh) + mlp3(S)           (mlp1/2: Linear-ReLU-Linear, mlp3: Linear)
///     S'       = mlp4(mean_rows(MHSA(h))) + S             (8 heads, qkv without bias; mlp4 Linear-ReLU-Linear)
///     svd      = untile(U diag(S') Vh)                    (`bn` is in the checkpoint but unused)
///     y        = Swin(conv1x1(nearest_224(x + text_emb)))   [B, r, r, F] NHWC
///     residual = conv1x1(nearest_L(y read as [B, r(channels), r, F]))
///     golden   = svd + (2 sigmoid(alpha) - 1) text_emb + beta residual
///
/// The ablations (`NPNetConfig.svdBranch`, `.residualBranch`) replace `svd` by x and drop the
/// `beta residual` term.
///
/// Parameter names are the authors' checkpoint keys (`unet_svd.mlp1.0.weight`,
/// `unet_embedding.swin.layers.1.downsample.reduction.weight`, `embeeding.linear.weight`, `alpha`, ...).
public final class NPNet {
    public let config: NPNetConfig
    public let params: Parameters
    public var device: Device { params.device }

    // unet_svd
    let mlp1: (Linear, Linear), mlp2: (Linear, Linear)   // .0 [64, 2L], .2 [2L, 64]
    let mlp3: Linear                                      // .0 [2L, 2L]
    let qkv: Linear                                       // attention.qkv [3 2L, 2L], no bias
    let proj: Linear                                      // attention.proj [2L, 2L]
    let mlp4: (Linear, Linear)                            // .0 [1024, 2L], .2 [2L, 1024]
    /// BatchNorm2d(2L) `bn` (weight, bias, running_mean, running_var): registered so checkpoints
    /// load strictly, but the authors' forward never applies it.
    let bnWeight: Tensor, bnBias: Tensor, bnRunningMean: Tensor, bnRunningVar: Tensor
    // unet_embedding
    let downconv: Conv2d                                  // [in_chans, C, 1, 1]
    let swin: SwinTransformer                             // unet_embedding.swin.*
    let upconv: Conv2d                                    // [C, r, 1, 1]
    // embeeding (sic): AdaGroupNorm's Linear [2C, T D]
    let embedding: Linear
    let alpha: Tensor, beta: Tensor                       // [1], [1]

    /// A freshly initialised network (Philox stream `seed`; alpha and beta start at 0 as the
    /// authors' do).
    public init(config: NPNetConfig, device: Device, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        let p = Parameters(device: device, seed: seed)
        params = p
        let n = config.matrixSize, c = config.latentChannels
        mlp1 = (try Linear(p, "unet_svd.mlp1.0", n, 64), try Linear(p, "unet_svd.mlp1.2", 64, n))
        mlp2 = (try Linear(p, "unet_svd.mlp2.0", n, 64), try Linear(p, "unet_svd.mlp2.2", 64, n))
        mlp3 = try Linear(p, "unet_svd.mlp3.0", n, n)
        qkv = try Linear(p, "unet_svd.attention.qkv", n, 3 * n, bias: false)
        proj = try Linear(p, "unet_svd.attention.proj", n, n)
        bnWeight = try p.make("unet_svd.bn.weight", [n], .ones)
        bnBias = try p.make("unet_svd.bn.bias", [n], .zeros)
        bnRunningMean = try p.make("unet_svd.bn.running_mean", [n], .zeros)
        bnRunningVar = try p.make("unet_svd.bn.running_var", [n], .ones)
        for t in [bnWeight, bnBias, bnRunningMean, bnRunningVar] { t.requiresGrad = false }
        mlp4 = (try Linear(p, "unet_svd.mlp4.0", n, 1024), try Linear(p, "unet_svd.mlp4.2", 1024, n))
        downconv = try Conv2d(p, "unet_embedding.downconv", c, config.swin.inChans, kernel: 1)
        swin = try SwinTransformer(p, "unet_embedding.swin.", config: config.swin)
        upconv = try Conv2d(p, "unet_embedding.upconv", config.swin.outputResolution, c, kernel: 1)
        embedding = try Linear(p, "embeeding.linear", config.textFeatures, 2 * c)
        alpha = try p.make("alpha", [1], .zeros)
        beta = try p.make("beta", [1], .zeros)
    }

    /// Keys a checkpoint may carry that the network does not use: buffers of older timm
    /// versions (`relative_position_index`, `attn_mask`), BatchNorm's `num_batches_tracked`
    /// and the Swin classifier head.
    static func isIgnored(_ key: String) -> Bool {
        key.hasSuffix(".relative_position_index") || key.hasSuffix(".attn_mask") || key.hasSuffix(".num_batches_tracked")
            || key.contains("unet_embedding.swin.head.")
    }

    /// Loads a checkpoint with the authors' key names (optionally under a prefix such as the
    /// fixtures' `weights.`, found automatically). The config comes from the `config` metadata
    /// when present, else from the weight shapes; `adjust` then overrides fields.
    public static func load(_ url: URL, device: Device, adjust: (inout NPNetConfig) -> Void = { _ in }) throws -> NPNet {
        try load(WeightsFile.read(url, skippingUnsupported: true), device: device, adjust: adjust)
    }

    public static func load(_ file: SafeTensorsFile, device: Device,
                            adjust: (inout NPNetConfig) -> Void = { _ in }) throws -> NPNet {
        let key = "unet_svd.mlp1.0.weight"
        let prefix = ["", "weights.", "model."].first { file[$0 + key] != nil } ?? ""
        let file = movingDownsamplesToTheNextStage(file, prefix: prefix)
        var config = try NPNetConfig.fromMetadata(file) ?? NPNetConfig.inferred(from: file, prefix: prefix)
        adjust(&config)
        try config.validate(source: file.metadata["config"] != nil ? file.source
                                : "\(file.source) (config inferred from the weight shapes)")
        let net = try NPNet(config: config, device: device)
        try net.params.load(file, prefix: prefix, ignoring: isIgnored)
        return net
    }

    /// timm before 0.9 keeps each stage's patch merging at its end (`layers.i.downsample`,
    /// i < S - 1); timm 0.9+ (our layout) at the start of the next stage (`layers.(i+1).downsample`).
    /// Old-layout checkpoints are renamed; the computation is the same.
    static func movingDownsamplesToTheNextStage(_ file: SafeTensorsFile, prefix: String) -> SafeTensorsFile {
        let layers = prefix + "unet_embedding.swin.layers."
        guard file[layers + "0.downsample.reduction.weight"] != nil else { return file }
        var out = file
        out.tensors = [:]
        for (key, value) in file.tensors {
            var name = key
            if key.hasPrefix(layers) {
                let rest = key.dropFirst(layers.count)
                if let dot = rest.firstIndex(of: "."), let stage = Int(rest[..<dot]), stage >= 0, stage < Int.max,
                   rest[rest.index(after: dot)...].hasPrefix("downsample.") {
                    name = layers + "\(stage + 1)" + rest[dot...]
                }
            }
            out.tensors[name] = value
        }
        return out
    }

    // MARK: branches

    func checkLatent(_ x: Tensor, _ what: String) throws {
        let b = x.shape.first ?? 0
        try requireShape(x.rank == 4 && x.shape == [b] + config.latentShape,
                         "NPNet \(what) \(x.shape) does not match [B, \(config.latentChannels), \(config.latentSize), \(config.latentSize)]")
        try require(x.device === device, "NPNet \(what) is on another device")
    }

    /// [B, 4, L, L] -> [B, 2L, 2L]: channel 2a + c is the quadrant (row a, column c).
    public func tiled(_ x: Tensor) throws -> Tensor {
        try checkLatent(x, "latent")
        let b = x.shape[0], l = config.latentSize
        return try x.reshaped([b, 2, 2, l, l]).permuted([0, 1, 3, 2, 4]).reshaped([b, 2 * l, 2 * l])
    }

    /// The inverse of `tiled`.
    public func untiled(_ m: Tensor) throws -> Tensor {
        let b = m.shape.first ?? 0, l = config.latentSize
        try requireShape(m.shape == [b, 2 * l, 2 * l], "NPNet matrix \(m.shape) does not match [B, \(2 * l), \(2 * l)]")
        return try m.reshaped([b, 2, l, 2, l]).permuted([0, 1, 3, 2, 4]).reshaped([b] + config.latentShape)
    }

    /// AdaGroupNorm: group_norm(x) (1 + scale) + shift with [scale, shift] = Linear(flattened
    /// prompt embeddings) (no activation on the embedding, no affine in the norm).
    public func textEmbedding(noise x: Tensor, promptEmbeds: Tensor) throws -> Tensor {
        try checkLatent(x, "noise")
        let b = x.shape[0], c = config.latentChannels
        try requireShape(promptEmbeds.rank >= 2 && promptEmbeds.shape[0] == b
                            && promptEmbeds.count == b * config.textFeatures,
                         "NPNet prompt embeddings \(promptEmbeds.shape) do not match [\(b), \(config.textTokens), \(config.textDim)]")
        try require(promptEmbeds.device === device, "NPNet prompt embeddings are on another device")
        let e = try embedding(promptEmbeds.reshaped([b, config.textFeatures]))     // [B, 2C]
        let scale = try e.slice(axis: 1, 0, c).reshaped([b, c, 1, 1])
        let shift = try e.slice(axis: 1, c, 2 * c).reshaped([b, c, 1, 1])
        let normed = try x.groupNorm(groups: config.adaGroupNormGroups, gamma: nil, beta: nil, eps: config.adaGroupNormEps)
        return try normed * (scale + 1) + shift
    }

    /// The singular-value branch with our SVD of the tiled noise (float32 Jacobi: the singular
    /// vectors' signs may differ from LAPACK's, which the MLPs see).
    public func svdBranch(noise: Tensor) throws -> Tensor {
        let f = try Tensor.svd(tiled(noise))
        return try svdBranch(noise: noise, u: f.u, s: f.s, vh: f.vh)
    }

    /// The singular-value branch for given factors of the tiled noise: u [B, 2L, 2L],
    /// s [B, 2L], vh [B, 2L, 2L] (u diag(s) vh = tiled(noise)).
    public func svdBranch(noise: Tensor, u: Tensor, s: Tensor, vh: Tensor) throws -> Tensor {
        try checkLatent(noise, "noise")
        let b = noise.shape[0], n = config.matrixSize, heads = config.svdAttentionHeads
        try requireShape(u.shape == [b, n, n] && vh.shape == [b, n, n] && s.shape == [b, n],
                         "NPNet SVD factors \(u.shape), \(s.shape), \(vh.shape) do not match [\(b), \(n), \(n)], [\(b), \(n)]")
        for t in [u, s, vh] { try require(t.device === device, "NPNet SVD factors are on another device") }
        var h = try mlp1.1(mlp1.0(u.transposed(1, 2), activation: .relu))
        h = try mlp2.1(mlp2.0(vh, activation: .relu), residual: h)
        h = try h + mlp3(s).reshaped([b, 1, n])
        // timm Attention: qkv -> [B, N, 3, H, n/H], softmax(q k^T / sqrt(n/H)) v, proj.
        let a = try Tensor.attention(packed: qkv(h), heads: heads)                  // qkv [B, n, 3n] -> [B, n, n]
        let pooled = try proj(a).mean(axes: [1])                                    // [B, n]
        let sv = try mlp4.1(mlp4.0(pooled, activation: .relu), residual: s)         // [B, n]
        return try untiled(Tensor.matmul(u * sv.reshaped([b, 1, n]), vh))
    }

    /// The Swin branch: (residual [B, C, L, L], Swin features [B, r, r, F]) of `x` (the noise
    /// plus text_emb).
    public func residualBranch(_ x: Tensor) throws -> (residual: Tensor, features: Tensor) {
        try checkLatent(x, "residual input")
        let size = config.swin.imgSize, l = config.latentSize
        // 1x1 conv then nearest resize (the authors resize first; the two commute exactly).
        let image = try downconv(x).resized(height: size, width: size, mode: .nearest)
        let features = try swin(image)                                             // [B, r, r, F]
        // The authors resize the NHWC tensor as if it were NCHW: r "channels" of r x F images.
        let resized = try features.resized(height: l, width: l, mode: .nearest)   // [B, r, L, L]
        return (try upconv(resized), features)
    }

    /// The golden noise and every intermediate. `svdFactors` replaces our SVD of the tiled noise
    /// (e.g. LAPACK's, for parity checks).
    public func callAsFunction(noise: Tensor, promptEmbeds: Tensor,
                               svdFactors: (u: Tensor, s: Tensor, vh: Tensor)? = nil) throws -> NPNetOutput {
        let textEmb = try textEmbedding(noise: noise, promptEmbeds: promptEmbeds)
        let svd = !config.svdBranch ? noise
            : try svdFactors.map { try svdBranch(noise: noise, u: $0.u, s: $0.s, vh: $0.vh) } ?? svdBranch(noise: noise)
        let gate = try alpha.sigmoid().affine(2, -1)                              // 2 sigmoid(alpha) - 1
        var golden = try svd + gate * textEmb
        var residual: Tensor?, features: Tensor?
        if config.residualBranch {
            let r = try residualBranch(noise + textEmb)
            residual = r.residual
            features = r.features
            golden = try golden + beta * r.residual
        }
        return NPNetOutput(golden: golden, textEmb: textEmb, svdBranch: svd, residualBranch: residual,
                           swinFeatures: features)
    }

    /// The golden noise alone.
    public func golden(noise: Tensor, promptEmbeds: Tensor) throws -> Tensor {
        try callAsFunction(noise: noise, promptEmbeds: promptEmbeds).golden
    }
}
