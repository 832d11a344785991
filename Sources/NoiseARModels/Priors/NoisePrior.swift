import Foundation
import NoiseARCore

/// The noise priors by name, as every host names them (`--prior`, the C API, Python).
public enum NoisePriorKind: String, Sendable, CaseIterable {
    /// Standard Gaussian noise: no learned prior.
    case gaussian
    /// NoiseAR: autoregressive patch prior (sample, score).
    case noiseAR = "noisear"
    /// NPNet: golden noise from an initial noise and the prompt.
    case npnet

    /// Parses a prior name (case-insensitive); the error lists the known names.
    public static func parse(_ name: String, allowed: [NoisePriorKind] = allCases, option: String = "--prior") throws -> NoisePriorKind {
        let key = name.trimmingCharacters(in: .whitespaces).lowercased()
        guard let kind = NoisePriorKind(rawValue: key), allowed.contains(kind) else {
            throw NoiseError.invalidArgument(
                "\(option) \(Text.quoted(name, limit: 40)): expected \(allowed.map(\.rawValue).joined(separator: ", "))")
        }
        return kind
    }
}

/// A learned prior loaded from a file, of the kind its keys say.
public enum NoisePrior {
    case noiseAR(NoiseARNet)
    case npnet(NPNet)

    public var kind: NoisePriorKind {
        switch self {
        case .noiseAR: return .noiseAR
        case .npnet: return .npnet
        }
    }

    /// The latent of one image: [channels, height, width].
    public var latentShape: [Int] {
        switch self {
        case .noiseAR(let n): return n.config.latentShape
        case .npnet(let n): return n.config.latentShape
        }
    }

    /// What the prior needs of prompt embeddings [B, T, D]: NoiseAR's cross-attention takes any
    /// T with this D; NPNet projects the flattened T x D, so any T and D with T * D equal to this.
    public var embedSize: Int {
        switch self {
        case .noiseAR(let n): return n.config.contextDim
        case .npnet(let n): return n.config.textFeatures
        }
    }

    /// Checks prompt embeddings of shape [b, t, d] against `embedSize`.
    public func checkEmbeddings(batch b: Int, tokens t: Int, dim d: Int) throws {
        switch self {
        case .noiseAR:
            try requireShape(d == embedSize, "prompt_embeds [\(b), \(t), \(d)]: this NoiseAR prior takes D = \(embedSize)")
        case .npnet(let n):
            let (f, o) = t.multipliedReportingOverflow(by: d)
            try requireShape(!o && f == embedSize,
                             "prompt_embeds [\(b), \(t), \(d)]: this NPNet takes T x D = \(embedSize) features (e.g. [\(b), \(n.config.textTokens), \(n.config.textDim)])")
        }
    }

    /// An upper estimate of the working memory of one call on `batch` images with prompts of
    /// `tokens` tokens (activations, attention scores, the SVD's matrices, inputs and outputs),
    /// in bytes; nil when it overflows. Hosts check it against the device before working
    /// (`MemoryBudget.check`), so an oversized request is refused instead of aborting.
    public func estimatedBytes(batch: Int, tokens: Int) -> UInt64? {
        let p = MemoryBudget.product
        let perImage: [Int?]
        switch self {
        case .noiseAR(let n):
            let c = n.config
            let side = c.patchSize > 0 ? c.latentSize / c.patchSize : 0
            let s = side * side, t = max(tokens, 1), d = c.dModel, layers = max(c.nLayers, 1)
            let patch = c.latentChannels * c.patchSize * c.patchSize
            let hidden = c.headHidden ?? 2 * d
            perImage = [
                p([s, patch, 8]),                          // patches, mu, logvar, eps, sample
                p([s, d, 8 * layers + 4]),                 // block activations (and the KV cache)
                p([s, c.dFF, 2 * layers]),                 // feed-forward hidden layers
                p([s, hidden, 4]),                         // the mu / logvar heads
                p([c.nHeads, s, s + t, 2 * layers]),       // self- and cross-attention scores
                p([t, max(d, c.textDim ?? d), 2 * layers + 2]), // prompt states, cross-attention K/V
            ]
        case .npnet(let n):
            let c = n.config, l = c.latentSize, latent = c.latentChannels * l * l
            let grid = c.swin.patchSize > 0 ? c.swin.imgSize / c.swin.patchSize : 0
            let blocks = c.swin.depths.reduce(0, +)
            perImage = [
                p([latent, 24]),                           // noise, branches, text injection, result
                p([2 * l, 2 * l, 12]),                     // the SVD's tiled matrix, U, S, Vh, work
                p([grid, grid, c.swin.embedDim, (c.swin.mlpRatio + 4) * max(blocks, 1)]), // Swin activations
                p([c.swin.imgSize, c.swin.imgSize, c.swin.inChans, 4]), // the resized input
                p([max(tokens, 1), max(c.textDim, 1), 4]), // prompt embeddings
            ]
        }
        var floats = 0
        for term in perImage {
            guard let term else { return nil }
            let (sum, o) = floats.addingReportingOverflow(term)
            if o { return nil }
            floats = sum
        }
        guard let total = p([max(batch, 0), floats]) else { return nil }
        return MemoryBudget.floatBytes([total])
    }

    /// Training's working memory: the forward estimate three times over (activations kept for
    /// the backward pass, their gradients, the recomputed pieces); nil when it overflows.
    public func estimatedTrainingBytes(batch: Int, tokens: Int) -> UInt64? {
        guard let f = estimatedBytes(batch: batch, tokens: tokens) else { return nil }
        let (t, o) = f.multipliedReportingOverflow(by: 3)
        return o ? nil : t
    }

    /// The kind of prior a weights file holds, from its keys (with or without the fixtures'
    /// `weights.` / `model.` prefixes); nil when it is neither.
    public static func detect(_ file: SafeTensorsFile) -> NoisePriorKind? {
        let keys = file.tensors.keys
        func has(_ name: String) -> Bool { ["", "weights.", "model."].contains { file[$0 + name] != nil } }
        if has("latent_patch_encoder.0.weight") { return .noiseAR }
        if has("unet_svd.mlp1.0.weight") || keys.contains(where: { $0.contains("unet_svd.") }) { return .npnet }
        return nil
    }

    /// Loads a prior file. `expected` (when given) must match what the file holds; `heads`
    /// overrides NoiseAR's head count (the authors' checkpoints do not store it).
    public static func load(_ url: URL, device: Device, expected: NoisePriorKind? = nil, heads: Int? = nil) throws -> NoisePrior {
        try load(url, device: device, expected: expected, options: PriorLoadOptions(heads: heads))
    }

    /// Loads a prior file with what its weights cannot say: each option given here, else from a
    /// `config.json` (or `NAME.json`, which wins) beside the file when it has the key, else the
    /// file's own config, else the authors' released values.
    public static func load(_ url: URL, device: Device, expected: NoisePriorKind? = nil,
                            options given: PriorLoadOptions) throws -> NoisePrior {
        let options = try given.filled(from: PriorLoadOptions.sidecar(of: url))
        let heads = options.heads, svdHeads = options.svdHeads
        let file = try WeightsFile.read(url, skippingUnsupported: true)
        guard let kind = detect(file) else {
            throw NoiseError.invalidArgument(
                "\(url.relativePath): neither a NoiseAR prior (no latent_patch_encoder.0.weight) nor an NPNet (no unet_svd.*)")
        }
        if let expected, expected != kind {
            throw NoiseError.invalidArgument("\(url.relativePath) holds a \(kind.rawValue) prior, not \(expected.rawValue)")
        }
        switch kind {
        case .noiseAR:
            return .noiseAR(try NoiseARNet.load(file, device: device) { c in
                if let heads { c.nHeads = heads }
            })
        case .npnet:
            return .npnet(try NPNet.load(file, device: device) { c in
                if let svdHeads { c.svdAttentionHeads = svdHeads }
            })
        case .gaussian:
            throw NoiseError.invalidArgument("gaussian noise has no weights")
        }
    }
}

/// What a prior's weights do not say about its network (`NoisePrior.load(options:)`).
public struct PriorLoadOptions: Sendable, Equatable {
    /// NoiseAR attention heads (`n_heads`; the authors' checkpoints use 1).
    public var heads: Int?
    /// NPNet singular-value branch attention heads (`svd_attention_heads`; 8).
    public var svdHeads: Int?

    public init(heads: Int? = nil, svdHeads: Int? = nil) {
        self.heads = heads
        self.svdHeads = svdHeads
    }

    /// These options, with the unset ones taken from `other`.
    public func filled(from other: PriorLoadOptions?) -> PriorLoadOptions {
        PriorLoadOptions(heads: heads ?? other?.heads, svdHeads: svdHeads ?? other?.svdHeads)
    }

    /// The options in a JSON config beside `url`: `NAME.json` for NAME.pth / NAME.safetensors,
    /// else `config.json` in the same folder (as diffusers keeps one per model folder); nil when
    /// neither exists. Keys: `n_heads` (or `num_heads`), `svd_attention_heads`; others are ignored.
    public static func sidecar(of url: URL) throws -> PriorLoadOptions? {
        let folder = url.deletingLastPathComponent()
        let candidates = [url.deletingPathExtension().appendingPathExtension("json"), folder.appendingPathComponent("config.json")]
        guard let config = candidates.first(where: { $0 != url && FileManager.default.fileExists(atPath: $0.path) }) else {
            return nil
        }
        let data = try InputFile.contents(of: config)
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw NoiseError.format("\(config.relativePath): not a JSON object (the config beside \(url.lastPathComponent))")
        }
        func positive(_ keys: [String]) throws -> Int? {
            for key in keys {
                guard let v = object[key] else { continue }
                guard let n = v as? Int, n >= 1, n <= 4096 else {
                    throw NoiseError.invalidArgument("\(config.relativePath): \(key) must be an integer in 1 ... 4096, got \(v)")
                }
                return n
            }
            return nil
        }
        return PriorLoadOptions(heads: try positive(["n_heads", "num_heads"]), svdHeads: try positive(["svd_attention_heads"]))
    }
}
