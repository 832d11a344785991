import Foundation
import NoiseARCore

/// Denoising diffusion probabilistic models (Ho et al. 2020), mirroring diffusers'
/// `DDPMScheduler` with a fixed variance (`fixed_small`, `fixed_small_log` or `fixed_large`) and
/// `variance_noise` = the supplied noise; no thresholding.
///
/// The previous timestep is the next entry of `timesteps` (-1 after the last, where
/// `alpha_cumprod` is 1). With `a_t`, `a_p` the cumulative alphas and `beta = 1 - a_t / a_p`:
/// `prev = sqrt(a_p) * beta / (1 - a_t) * x0 + sqrt(1 - beta) * (1 - a_p) / (1 - a_t) * x_t
///  + sqrt(var) * noise` (the noise term only for `t > 0`), with x0 optionally clipped.
public struct DDPMScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let timesteps: [Double]
    public let alphasCumprod: [Double]
    public var kind: SamplerKind { .ddpm }
    public var initNoiseSigma: Double { 1 }
    public var needsNoise: Bool { true }
    let intTimesteps: [Int]

    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DDPM"
        try ScheduleMath.checkSteps(steps, config, name)
        self.config = config
        alphasCumprod = try ScheduleMath.alphasCumprod(config)
        intTimesteps = ScheduleMath.discreteTimesteps(config, spacing: config.timestepSpacing ?? .leading, steps: steps)
        try ScheduleMath.checkTimesteps(intTimesteps, config, name)
        timesteps = intTimesteps.map(Double.init)
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        let name = kind.displayName
        try checkStep(stepIndex, modelOutput, sample, noise)
        let t = intTimesteps[stepIndex]
        let prevT = stepIndex + 1 < intTimesteps.count ? intTimesteps[stepIndex + 1] : -1
        let aT = alphasCumprod[t]
        let aPrev = prevT >= 0 ? alphasCumprod[prevT] : 1
        let betaProd = 1 - aT, betaProdPrev = 1 - aPrev
        let currentAlpha = aT / aPrev
        let currentBeta = 1 - currentAlpha

        let x0Coeff = aPrev.squareRoot() * currentBeta / betaProd
        let sampleCoeff = currentAlpha.squareRoot() * betaProdPrev / betaProd
        let (x0, _) = ScheduleMath.x0AndEpsilon(config.predictionType, alphaProd: aT)

        var terms: [(Double, Tensor)]
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            let x0T = try ScheduleMath.combine([(x0.x, sample), (x0.m, modelOutput)]).clamp(-r, r)
            terms = [(x0Coeff, x0T), (sampleCoeff, sample)]
        } else {
            terms = [(x0Coeff * x0.x + sampleCoeff, sample), (x0Coeff * x0.m, modelOutput)]
        }
        if t > 0 {
            let variance: Double
            switch config.varianceType {
            case .fixedSmall, .fixedSmallLog:
                variance = max(betaProdPrev / betaProd * currentBeta, 1e-20)
            case .fixedLarge:
                variance = currentBeta
            }
            guard let noise else {
                throw NoiseError.invalidArgument("\(name): step at t=\(t) needs a noise tensor")
            }
            terms.append((variance.squareRoot(), noise))
        }
        return try ScheduleMath.combine(terms)
    }
}
