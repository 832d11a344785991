import Foundation
import NoiseARCore

/// The sigma schedule shared by the two Euler schedulers (diffusers' `set_timesteps` of
/// `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler`): timesteps by spacing, sigmas
/// interpolated at them, optionally Karras sigmas, then the final sigma appended.
struct EulerSchedule {
    var timesteps: [Double]
    var sigmas: [Double]
    var initNoiseSigma: Double

    init(config c: SchedulerConfig, alphasCumprod: [Double], steps: Int, karras: Bool,
         finalSigmas: FinalSigmasType, name: String) throws {
        try ScheduleMath.checkSteps(steps, c, name)
        let spacing = c.timestepSpacing ?? .linspace
        var ts = ScheduleMath.eulerTimesteps(c, spacing: spacing, steps: steps)
        try require(ts.allSatisfy { $0 >= 0 && $0 <= Double(c.numTrainTimesteps - 1) },
                    "\(name): timesteps \(ts) fall outside 0...\(c.numTrainTimesteps - 1) (check steps_offset)")
        let trainSigmas = ScheduleMath.sigmas(alphasCumprod)
        var sig = ts.map { ScheduleMath.interp($0, trainSigmas) }
        if karras {
            let logSigmas = trainSigmas.map { Foundation.log($0) }
            sig = ScheduleMath.karras(sigmaMin: c.sigmaMin ?? sig[sig.count - 1],
                                      sigmaMax: c.sigmaMax ?? sig[0], steps: steps)
            ts = sig.map { ScheduleMath.sigmaToT($0, logSigmas: logSigmas) }
        }
        switch finalSigmas {
        case .zero: sig.append(0)
        case .sigmaMin: sig.append(trainSigmas[0])
        }
        timesteps = ts
        sigmas = sig
        let maxSigma = sig.max() ?? 0
        initNoiseSigma = (spacing == .linspace || spacing == .trailing)
            ? maxSigma : (maxSigma * maxSigma + 1).squareRoot()
    }

    /// `sample / sqrt(sigma^2 + 1)`.
    func scale(_ sample: Tensor, stepIndex: Int, name: String) throws -> Tensor {
        try ScheduleMath.checkStepIndex(stepIndex, timesteps.count, name)
        let s = sigmas[stepIndex]
        return try sample.scaled(Float(1 / (s * s + 1).squareRoot()))
    }

    /// The ODE derivative `(x - x0) / sigma` as `(coefficient of x, coefficient of model output)`.
    static func derivative(_ prediction: PredictionType, sigma s: Double) -> (x: Double, m: Double) {
        switch prediction {
        case .epsilon:
            // x0 = x - sigma * eps
            return (0, 1)
        case .vPrediction:
            // x0 = -sigma / sqrt(sigma^2 + 1) * v + x / (sigma^2 + 1)
            return (s / (s * s + 1), 1 / (s * s + 1).squareRoot())
        }
    }
}

/// The Euler method on the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 2
/// without churn), mirroring diffusers' `EulerDiscreteScheduler` (`interpolation_type="linear"`,
/// `timestep_type="discrete"`, `s_churn=0`): `prev = x + (x - x0) / sigma_i * (sigma_{i+1} - sigma_i)`.
/// The model input is `x / sqrt(sigma_i^2 + 1)`; `initNoiseSigma` is `max sigma` for linspace and
/// trailing spacings, `sqrt(max sigma^2 + 1)` for leading. With `useKarrasSigmas` the timesteps
/// are fractional.
public struct EulerDiscreteScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let alphasCumprod: [Double]
    let schedule: EulerSchedule
    public var kind: SamplerKind { .euler }
    public var timesteps: [Double] { schedule.timesteps }
    public var sigmas: [Double]? { schedule.sigmas }
    public var initNoiseSigma: Double { schedule.initNoiseSigma }
    public var needsNoise: Bool { false }

    public init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        alphasCumprod = try ScheduleMath.alphasCumprod(config)
        schedule = try EulerSchedule(config: config, alphasCumprod: alphasCumprod, steps: steps,
                                     karras: config.useKarrasSigmas, finalSigmas: config.finalSigmasType,
                                     name: "Euler")
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try schedule.scale(sample, stepIndex: stepIndex, name: "Euler")
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try checkStep(stepIndex, modelOutput, sample, noise)
        let s = schedule.sigmas[stepIndex], next = schedule.sigmas[stepIndex + 1]
        let d = EulerSchedule.derivative(config.predictionType, sigma: s)
        let dt = next - s
        return try ScheduleMath.combine([(1 + dt * d.x, sample), (dt * d.m, modelOutput)])
    }
}

/// Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`, eta 1), mirroring diffusers'
/// `EulerAncestralDiscreteScheduler`: with `s = sigma_i`, `s' = sigma_{i+1}`,
/// `up = sqrt(s'^2 (s^2 - s'^2) / s^2)`, `down = sqrt(s'^2 - up^2)`:
/// `prev = x + (x - x0) / s * (down - s) + up * noise`. Same model-input scaling and
/// `initNoiseSigma` as Euler. diffusers' class has no Karras option, so `useKarrasSigmas` and
/// `finalSigmasType` are ignored (the last sigma is 0).
public struct EulerAncestralDiscreteScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let alphasCumprod: [Double]
    let schedule: EulerSchedule
    public var kind: SamplerKind { .eulerA }
    public var timesteps: [Double] { schedule.timesteps }
    public var sigmas: [Double]? { schedule.sigmas }
    public var initNoiseSigma: Double { schedule.initNoiseSigma }
    public var needsNoise: Bool { true }

    public init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        alphasCumprod = try ScheduleMath.alphasCumprod(config)
        schedule = try EulerSchedule(config: config, alphasCumprod: alphasCumprod, steps: steps,
                                     karras: false, finalSigmas: .zero, name: "Euler ancestral")
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try schedule.scale(sample, stepIndex: stepIndex, name: "Euler ancestral")
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        let name = kind.displayName
        try checkStep(stepIndex, modelOutput, sample, noise)
        let s = schedule.sigmas[stepIndex], next = schedule.sigmas[stepIndex + 1]
        let up = (next * next * (s * s - next * next) / (s * s)).squareRoot()
        let down = max(next * next - up * up, 0).squareRoot()
        let d = EulerSchedule.derivative(config.predictionType, sigma: s)
        let dt = down - s
        var terms: [(Double, Tensor)] = [(1 + dt * d.x, sample), (dt * d.m, modelOutput)]
        if up > 0 {
            guard let noise else { throw NoiseError.invalidArgument("\(name): step \(stepIndex) needs a noise tensor") }
            terms.append((up, noise))
        }
        return try ScheduleMath.combine(terms)
    }
}
