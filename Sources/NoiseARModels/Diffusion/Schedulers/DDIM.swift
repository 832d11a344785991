import Foundation
import NoiseARCore

/// Denoising diffusion implicit models (Song et al. 2020), mirroring diffusers' `DDIMScheduler`
/// (`step` with `eta` from the config, `use_clipped_model_output=False`, `variance_noise` = the
/// supplied noise; no thresholding).
///
/// `prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev - std^2) * eps + std * noise`,
/// `std = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))`, where the previous timestep
/// is `t - N / steps` and `a_prev` past the end is 1 (`set_alpha_to_one`) or `alphas_cumprod[0]`.
public struct DDIMScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let timesteps: [Double]
    public let alphasCumprod: [Double]
    public var kind: SamplerKind { .ddim }
    public var initNoiseSigma: Double { 1 }
    public var needsNoise: Bool { config.eta > 0 }
    let intTimesteps: [Int]
    let finalAlphaCumprod: Double
    let stepRatio: Int

    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DDIM"
        try ScheduleMath.checkSteps(steps, config, name)
        self.config = config
        alphasCumprod = try ScheduleMath.alphasCumprod(config)
        intTimesteps = ScheduleMath.discreteTimesteps(config, spacing: config.timestepSpacing ?? .leading, steps: steps)
        try ScheduleMath.checkTimesteps(intTimesteps, config, name)
        timesteps = intTimesteps.map(Double.init)
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        stepRatio = config.numTrainTimesteps / steps
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        let name = kind.displayName
        try checkStep(stepIndex, modelOutput, sample, noise)
        let t = intTimesteps[stepIndex]
        let prevT = t - stepRatio
        let aT = alphasCumprod[t]
        let aPrev = prevT >= 0 ? alphasCumprod[prevT] : finalAlphaCumprod
        let variance = (1 - aPrev) / (1 - aT) * (1 - aT / aPrev)
        let std = config.eta * variance.squareRoot()
        let dirSquared = 1 - aPrev - std * std
        try require(dirSquared >= -1e-12,
                    "\(name): eta \(config.eta) is too large (1 - a_prev - std^2 = \(dirSquared) < 0)")
        let dir = max(dirSquared, 0).squareRoot()
        if std > 0 { try require(noise != nil, "\(name): eta > 0 needs a noise tensor") }

        let (x0, eps) = ScheduleMath.x0AndEpsilon(config.predictionType, alphaProd: aT)
        let sPrev = aPrev.squareRoot()
        var terms: [(Double, Tensor)]
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            let x0T = try ScheduleMath.combine([(x0.x, sample), (x0.m, modelOutput)]).clamp(-r, r)
            terms = [(sPrev, x0T), (dir * eps.x, sample), (dir * eps.m, modelOutput)]
        } else {
            terms = [(sPrev * x0.x + dir * eps.x, sample), (sPrev * x0.m + dir * eps.m, modelOutput)]
        }
        if std > 0, let noise { terms.append((std, noise)) }
        return try ScheduleMath.combine(terms)
    }
}

/// DDIM inversion, mirroring diffusers' `DDIMInverseScheduler`: the deterministic DDIM update run
/// from clean (t small) to noisy. Timesteps ascend; step `i` moves from noise level
/// `t_i - N / steps` (or `alphas_cumprod[0]` / 1 before the first, per `set_alpha_to_one`) to
/// `t_i`: `next = sqrt(a_next) * x0 + sqrt(1 - a_next) * eps`. Only `leading` and `trailing`
/// spacings exist, as in diffusers.
public struct DDIMInverseScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let timesteps: [Double]
    public let alphasCumprod: [Double]
    public var kind: SamplerKind { .ddimInverse }
    public var initNoiseSigma: Double { 1 }
    public var needsNoise: Bool { false }
    let intTimesteps: [Int]
    let initialAlphaCumprod: Double
    let stepRatio: Int

    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DDIM inversion"
        try ScheduleMath.checkSteps(steps, config, name)
        self.config = config
        alphasCumprod = try ScheduleMath.alphasCumprod(config)
        let spacing = config.timestepSpacing ?? .leading
        switch spacing {
        case .leading, .trailing:
            intTimesteps = ScheduleMath.discreteTimesteps(config, spacing: spacing, steps: steps).reversed()
        case .linspace:
            throw NoiseError.invalidArgument(
                "\(name): timestep_spacing linspace is not supported (diffusers' DDIMInverseScheduler has leading or trailing)")
        }
        try ScheduleMath.checkTimesteps(intTimesteps, config, name)
        timesteps = intTimesteps.map(Double.init)
        initialAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        stepRatio = config.numTrainTimesteps / steps
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try checkStep(stepIndex, modelOutput, sample, noise)
        let next = intTimesteps[stepIndex]
        let from = min(next - stepRatio, config.numTrainTimesteps - 1)
        let aT = from >= 0 ? alphasCumprod[from] : initialAlphaCumprod
        let aNext = alphasCumprod[next]
        let (x0, eps) = ScheduleMath.x0AndEpsilon(config.predictionType, alphaProd: aT)
        let sNext = aNext.squareRoot(), dir = (1 - aNext).squareRoot()
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            let x0T = try ScheduleMath.combine([(x0.x, sample), (x0.m, modelOutput)]).clamp(-r, r)
            return try ScheduleMath.combine([(sNext, x0T), (dir * eps.x, sample), (dir * eps.m, modelOutput)])
        }
        return try ScheduleMath.combine([(sNext * x0.x + dir * eps.x, sample), (sNext * x0.m + dir * eps.m, modelOutput)])
    }
}
