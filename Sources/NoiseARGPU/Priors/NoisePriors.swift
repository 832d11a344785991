import Foundation

/// Initial noises from the learned priors, for host pipelines (prompt embeddings in, latents
/// out) and for the shapes world (prompts in, through the diffusion model's text encoder).
public enum NoisePriors {
    /// The shipped shapes-world NoiseAR prior.
    public static let noiseARFile = "shapes-noisear.safetensors"
    /// The shipped shapes-world NPNet (when present).
    public static let npnetFile = "shapes-npnet.safetensors"

    /// A NoiseAR sample for prompt embeddings `text` [B, T, D]; with `strength` below 1 it is
    /// blended by spherical interpolation with the Gaussian noise of the same draws
    /// (`eps` when given, else seed + b): 0 gives that Gaussian noise, 1 the prior's sample.
    public static func noiseAR(_ net: NoiseARNet, text: Tensor, seed: UInt64, temperature: Float = 0.5,
                               strength: Float = 1, eps: Tensor? = nil, cached: Bool = true,
                               progress: (Int, Int) throws -> Void = { _, _ in }) throws -> Tensor {
        try require(strength >= 0 && strength <= 1, "strength must be in [0, 1], got \(strength)")
        let b = text.shape.first ?? 0
        let gaussian = strength < 1 ? try eps ?? DiffusionSampler.gaussianNoise(count: b, shape: net.config.latentShape, seed: seed, on: net.device) : nil
        let prior = strength > 0 ? try net.sample(text: text, temperature: temperature, seed: seed, eps: eps,
                                                  cached: cached, progress: progress) : nil
        switch (gaussian, prior) {
        case let (g?, p?): return try slerp(g, p, strength)
        case let (nil, p?): return p
        case let (g?, nil): return g
        default: throw NoiseError.invalidArgument("no noise requested")
        }
    }

    /// The shapes world's NoiseAR source: prompt embeddings from the diffusion model's text
    /// encoder, image i drawn from stream seeds[i] (runs of consecutive seeds share a batch).
    public static func noiseAR(_ net: NoiseARNet, model: TextToImageModel, temperature: Float = 0.5,
                               strength: Float = 1) throws -> NoiseSource {
        let want = [3, Scene.size, Scene.size]
        try requireShape(net.config.latentShape == want,
                         "the NoiseAR prior's latent \(net.config.latentShape) does not match the shapes-world model's \(want)")
        try requireShape(net.config.contextDim == model.config.text.hiddenSize,
                         "the NoiseAR prior takes \(net.config.contextDim)-wide prompt embeddings; the model's text encoder gives \(model.config.text.hiddenSize)")
        return { prompts, seeds in
            try require(prompts.count == seeds.count, "\(prompts.count) prompts for \(seeds.count) seeds")
            var parts: [Tensor] = []
            var start = 0
            while start < seeds.count {
                var end = start + 1
                while end < seeds.count && seeds[end] == seeds[end - 1] &+ 1 { end += 1 }
                let text = try model.device.noGrad { try model.encode(Array(prompts[start..<end])) }
                parts.append(try noiseAR(net, text: text, seed: seeds[start], temperature: temperature, strength: strength))
                start = end
            }
            return parts.count == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
        }
    }
}
