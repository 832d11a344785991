import Foundation
import NoiseARCore

/// Initial noises from the learned priors for host pipelines (prompt embeddings in, latents out);
/// the shapes world's sources (prompts in, through its text encoder) extend this in NoiseARShapes.
public enum NoisePriors {
    /// A NoiseAR sample for prompt embeddings `text` [B, T, D]; with `strength` below 1 it is
    /// blended by spherical interpolation with the Gaussian noise of the same draws
    /// (`eps` when given, else seed + b): 0 gives that Gaussian noise, 1 the prior's sample.
    public static func noiseAR(_ net: NoiseARNet, text: Tensor, seed: UInt64, temperature: Float = 0.5,
                               strength: Float = 1, eps given: Tensor? = nil, cached: Bool = true, rng: GaussianSource = .philox,
                               progress: SamplingProgress = { _, _ in true }) throws -> Tensor {
        try require(strength >= 0 && strength <= 1, "strength must be in [0, 1], got \(strength)")
        let b = text.shape.first ?? 0
        // PyTorch's generator draws the whole batch's standard normals up front.
        let eps = try given ?? (rng == .torch && b > 0
            ? DiffusionSampler.gaussianNoise(count: b, shape: net.config.latentShape, seed: seed, on: net.device, rng: .torch) : nil)
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
}
