import Foundation
import NoiseARCore
import NoiseARModels

extension NoisePriors {
    /// The shipped shapes-world NoiseAR prior.
    public static let noiseARFile = "shapes-noisear.safetensors"
    /// The shipped shapes-world NPNet.
    public static let npnetFile = "shapes-npnet.safetensors"
    /// Metadata keys of a prior file: the mean and standard deviation of every element of its
    /// training data (the prompt-independent control's constants).
    public static let dataMeanKey = "data_mean", dataStdKey = "data_std"

    /// The training data's mean and standard deviation recorded in a prior file.
    public static func dataStatistics(_ url: URL) throws -> (mean: Float, std: Float) {
        let file = try WeightsFile.read(url, skippingUnsupported: true)
        guard let m = file.metadata[dataMeanKey].flatMap(Float.init), let s = file.metadata[dataStdKey].flatMap(Float.init),
              m.isFinite, s.isFinite, s > 0 else {
            throw NoiseError.invalidArgument(
                "\(url.relativePath) records no \(dataMeanKey) / \(dataStdKey) metadata (its training data's statistics; priors trained before they were recorded lack them)")
        }
        return (m, s)
    }

    /// The prompt-independent control: every element of image i from N(mean, (temperature std)^2),
    /// with the standard normals of Philox stream seeds[i] (the same draws as Gaussian noise and
    /// the NoiseAR prior's). Any gain a prior shows over it is prompt-specific.
    public static func constant(mean: Float, std: Float, temperature: Float, on device: Device) -> NoiseSource {
        let gaussian = Evaluation.gaussian(on: device)
        return { prompts, seeds in try gaussian(prompts, seeds).affine(temperature * std, mean) }
    }

    /// The shapes world's NoiseAR source: prompt embeddings from the diffusion model's text
    /// encoder, image i drawn from stream seeds[i] (runs of consecutive seeds share a batch).
    public static func noiseAR(_ net: NoiseARNet, model: TextToImageModel, temperature: Float = 0.5,
                               strength: Float = 1, rng: GaussianSource = .philox) throws -> NoiseSource {
        let want = [3, Scene.size, Scene.size]
        try requireShape(net.config.latentShape == want,
                         "the NoiseAR prior's latent \(net.config.latentShape) does not match the shapes-world model's \(want)")
        try requireShape(net.config.contextDim == model.config.text.hiddenSize,
                         "the NoiseAR prior takes \(net.config.contextDim)-wide prompt embeddings; the model's text encoder gives \(model.config.text.hiddenSize)")
        return { prompts, seeds in
            try require(prompts.count == seeds.count, "\(prompts.count) prompts for \(seeds.count) seeds")
            var done = 0
            return try Evaluation.consecutiveRuns(seeds) { first, count in
                let text = try model.device.noGrad { try model.encode(Array(prompts[done ..< done + count])) }
                done += count
                return try noiseAR(net, text: text, seed: first, temperature: temperature, strength: strength, rng: rng)
            }
        }
    }
}

extension NoisePrior {
    /// The shipped shapes-world prior of a kind ($NOISEAR_PRIOR / $NOISEAR_NPNET, the source
    /// tree, or beside the binary), or `path` when given.
    public static func shapesWorld(_ kind: NoisePriorKind, path: String?, device: Device) throws -> NoisePrior {
        let (file, variable) = kind == .npnet ? (NoisePriors.npnetFile, "NOISEAR_NPNET") : (NoisePriors.noiseARFile, "NOISEAR_PRIOR")
        guard kind != .gaussian else { throw NoiseError.invalidArgument("gaussian noise has no weights") }
        guard let url = path.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(file, variable: variable) else {
            throw NoiseError.io("no \(kind.rawValue) weights: pass a weights file or set \(variable) (the shipped \(file) was not found)")
        }
        return try load(url, device: device, expected: kind)
    }
}
