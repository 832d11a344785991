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
            return .npnet(try NPNet.load(file, device: device))
        case .gaussian:
            throw NoiseError.invalidArgument("gaussian noise has no weights")
        }
    }
}
