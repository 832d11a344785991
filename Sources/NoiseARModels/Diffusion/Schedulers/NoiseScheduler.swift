import Foundation
import NoiseARCore

/// The samplers this library implements, each mirroring one diffusers scheduler class.
public enum SamplerKind: String, CaseIterable, Sendable {
    /// `DDIMScheduler` (eta from the config).
    case ddim
    /// `DDIMInverseScheduler`: deterministic DDIM run from clean to noisy (for inversion).
    case ddimInverse = "ddim-inverse"
    /// `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`, `solver_order=2`,
    /// `solver_type="midpoint"`.
    case dpmpp2m
    /// `EulerDiscreteScheduler`.
    case euler
    /// `EulerAncestralDiscreteScheduler`.
    case eulerA = "euler-a"
    /// `DDPMScheduler`.
    case ddpm

    /// The diffusers class this kind mirrors.
    public var diffusersClassName: String {
        switch self {
        case .ddim: return "DDIMScheduler"
        case .ddimInverse: return "DDIMInverseScheduler"
        case .dpmpp2m: return "DPMSolverMultistepScheduler"
        case .euler: return "EulerDiscreteScheduler"
        case .eulerA: return "EulerAncestralDiscreteScheduler"
        case .ddpm: return "DDPMScheduler"
        }
    }

    /// The kind mirroring a diffusers scheduler class name (`_class_name` of a
    /// `scheduler_config.json`), or nil.
    public init?(diffusersClassName name: String) {
        guard let kind = SamplerKind.allCases.first(where: { $0.diffusersClassName == name }) else {
            return nil
        }
        self = kind
    }

    /// Parses a sampler name: a raw value (`ddim`, `ddim-inverse`, `dpmpp2m`, `euler`, `euler-a`,
    /// `ddpm`, any case, `_` accepted for `-`), a few common aliases (`dpm++2m`, `euler_ancestral`,
    /// ...) or a diffusers class name. Throws `invalidArgument` listing the valid names otherwise.
    public static func parse(_ name: String) throws -> SamplerKind {
        let key = name.trimmingCharacters(in: .whitespaces).lowercased()
            .replacingOccurrences(of: "_", with: "-")
        if let kind = SamplerKind(rawValue: key) { return kind }
        let aliases: [String: SamplerKind] = [
            "dpm++2m": .dpmpp2m, "dpm++-2m": .dpmpp2m, "dpmpp-2m": .dpmpp2m, "dpm-solver++": .dpmpp2m,
            "eulera": .eulerA, "euler-ancestral": .eulerA, "ddim-inversion": .ddimInverse,
        ]
        if let kind = aliases[key] { return kind }
        if let kind = SamplerKind(diffusersClassName: name) { return kind }
        let valid = SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")
        throw NoiseError.invalidArgument("unknown sampler \(Text.quoted(name, limit: 40)) (expected one of: \(valid))")
    }
}

/// A diffusion sampler: the inference timesteps and the update `x_t -> x_{t-1}` of one diffusers
/// scheduler class. Conforming types are value types; copying one copies its state (so a copy
/// taken before the loop is a fresh scheduler).
///
/// Usage, for `i` in `0..<timesteps.count`:
/// `m = model(scheduler.scaleModelInput(x, stepIndex: i), t: timesteps[i])`,
/// `x = try scheduler.step(modelOutput: m, stepIndex: i, sample: x, noise: needsNoise ? n : nil)`,
/// starting from standard-normal noise times `initNoiseSigma`.
public protocol NoiseScheduler {
    /// Which sampler this is.
    var kind: SamplerKind { get }
    /// The configuration it was built from.
    var config: SchedulerConfig { get }
    /// Inference timesteps in order (Euler kinds may be fractional).
    var timesteps: [Double] { get }
    /// The sigmas (`timesteps.count + 1` values, the last one appended) of the Euler and
    /// DPM-Solver kinds; nil for the others.
    var sigmas: [Double]? { get }
    /// The training schedule `alphas_cumprod` (`numTrainTimesteps` values).
    var alphasCumprod: [Double] { get }
    /// The standard deviation of the initial noise.
    var initNoiseSigma: Double { get }
    /// The model input for step `stepIndex` (the sample itself except for the Euler kinds, which
    /// divide by `sqrt(sigma^2 + 1)`).
    func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor
    /// true when `step()` consumes a standard-normal noise tensor.
    var needsNoise: Bool { get }
    /// One update: the sample for the next timestep. `noise` (same shape as `sample`) is used by
    /// the stochastic kinds and ignored by the others.
    mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor
}

extension NoiseScheduler {
    public var sigmas: [Double]? { nil }

    /// Validates one `step` call: the index is in range and the tensors share a shape.
    func checkStep(_ stepIndex: Int, _ modelOutput: Tensor, _ sample: Tensor, _ noise: Tensor?) throws {
        try ScheduleMath.checkStepIndex(stepIndex, timesteps.count, kind.displayName)
        try ScheduleMath.checkShapes(modelOutput, sample, noise, kind.displayName)
    }

    /// The model input is the sample itself (every kind but the Euler ones, which override).
    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try ScheduleMath.checkStepIndex(stepIndex, timesteps.count, kind.displayName)
        return sample
    }
}

extension SamplerKind {
    /// The name used in error messages.
    public var displayName: String {
        switch self {
        case .ddim: return "DDIM"
        case .ddimInverse: return "DDIM inversion"
        case .dpmpp2m: return "DPM-Solver++(2M)"
        case .euler: return "Euler"
        case .eulerA: return "Euler ancestral"
        case .ddpm: return "DDPM"
        }
    }
}

/// Builds the scheduler of `kind` for `steps` inference steps. Throws `invalidArgument` for
/// `steps < 1`, more steps than training timesteps, or an invalid config.
public func makeScheduler(_ kind: SamplerKind, config: SchedulerConfig, steps: Int) throws -> any NoiseScheduler {
    switch kind {
    case .ddim: return try DDIMScheduler(config: config, steps: steps)
    case .ddimInverse: return try DDIMInverseScheduler(config: config, steps: steps)
    case .dpmpp2m: return try DPMSolverMultistepScheduler(config: config, steps: steps)
    case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
    case .eulerA: return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
    case .ddpm: return try DDPMScheduler(config: config, steps: steps)
    }
}

/// Builds a scheduler from a sampler name (see `SamplerKind.parse`).
public func makeScheduler(_ name: String, config: SchedulerConfig, steps: Int) throws -> any NoiseScheduler {
    try makeScheduler(SamplerKind.parse(name), config: config, steps: steps)
}

// MARK: - Shared schedule arithmetic (host, Double)

/// Host-side schedule computations shared by the schedulers, following numpy/diffusers exactly
/// (including numpy's round-half-to-even) but in Double.
enum ScheduleMath {
    /// diffusers' betas and `alphas_cumprod` for a config.
    static func alphasCumprod(_ c: SchedulerConfig) throws -> [Double] {
        try c.validate()
        let n = c.numTrainTimesteps
        let betas: [Double]
        if let trained = c.trainedBetas {
            betas = trained
        } else {
            switch c.betaSchedule {
            case .linear:
                betas = linspace(c.betaStart, c.betaEnd, n)
            case .scaledLinear:
                betas = linspace(c.betaStart.squareRoot(), c.betaEnd.squareRoot(), n).map { $0 * $0 }
            }
        }
        try require(betas.allSatisfy { $0.isFinite && $0 > 0 && $0 < 1 }, "every beta must lie in (0, 1)")
        var out = [Double](repeating: 0, count: n)
        var p = 1.0
        for i in 0..<n {
            p *= 1 - betas[i]
            out[i] = p
        }
        return out
    }

    /// numpy's `linspace(start, stop, num)` (endpoint included).
    static func linspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
        guard num > 1 else { return num == 1 ? [start] : [] }
        let step = (stop - start) / Double(num - 1)
        var out = (0..<num).map { start + Double($0) * step }
        out[num - 1] = stop
        return out
    }

    /// numpy's `round` (half to even).
    static func npRound(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// The integer timesteps of DDIM / DDPM (`set_timesteps`), descending.
    static func discreteTimesteps(_ c: SchedulerConfig, spacing: TimestepSpacing, steps: Int) -> [Int] {
        let n = c.numTrainTimesteps
        switch spacing {
        case .linspace:
            return linspace(0, Double(n - 1), steps).map { Int(npRound($0)) }.reversed()
        case .leading:
            let ratio = n / steps
            return (0..<steps).reversed().map { $0 * ratio + c.stepsOffset }
        case .trailing:
            let ratio = Double(n) / Double(steps)
            return (0..<steps).map { Int(npRound(Double(n) - Double($0) * ratio)) - 1 }
        }
    }

    /// The (float) timesteps of the Euler kinds, descending: linspace is not rounded (and is
    /// float32 in diffusers), the others are integers.
    static func eulerTimesteps(_ c: SchedulerConfig, spacing: TimestepSpacing, steps: Int) -> [Double] {
        switch spacing {
        case .linspace:
            return linspace(0, Double(c.numTrainTimesteps - 1), steps).reversed().map { Double(Float($0)) }
        case .leading, .trailing:
            return discreteTimesteps(c, spacing: spacing, steps: steps).map(Double.init)
        }
    }

    /// `sqrt((1 - a) / a)` for each `alphas_cumprod` value.
    static func sigmas(_ alphasCumprod: [Double]) -> [Double] {
        alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
    }

    /// numpy's `interp(x, arange(len(fp)), fp)`.
    static func interp(_ x: Double, _ fp: [Double]) -> Double {
        if x <= 0 { return fp[0] }
        let last = fp.count - 1
        if x >= Double(last) { return fp[last] }
        let lo = Int(x.rounded(.down))
        let frac = x - Double(lo)
        return frac == 0 ? fp[lo] : fp[lo] + (fp[lo + 1] - fp[lo]) * frac
    }

    /// Karras et al. (2022) sigmas, rho = 7, from `sigmaMax` down to `sigmaMin` (diffusers'
    /// `_convert_to_karras`).
    static func karras(sigmaMin: Double, sigmaMax: Double, steps: Int) -> [Double] {
        let rho = 7.0
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return linspace(0, 1, steps).map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma` by linear
    /// interpolation of log-sigma (`logSigmas` ascending with t).
    static func sigmaToT(_ sigma: Double, logSigmas: [Double]) -> Double {
        let logSigma = Foundation.log(max(sigma, 1e-10))
        // low = the last index with logSigmas[i] <= logSigma (0 when none), at most count - 2.
        var low = 0
        for (i, ls) in logSigmas.enumerated() where logSigma - ls >= 0 { low = i }
        low = min(low, logSigmas.count - 2)
        let high = low + 1
        let lo = logSigmas[low], hi = logSigmas[high]
        var w = (lo - logSigma) / (lo - hi)
        w = min(max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }

    static func checkSteps(_ steps: Int, _ c: SchedulerConfig, _ name: String) throws {
        try require(steps >= 1, "\(name): the number of inference steps must be at least 1, got \(steps)")
        try require(steps <= c.numTrainTimesteps,
                    "\(name): \(steps) inference steps exceed num_train_timesteps (\(c.numTrainTimesteps))")
    }

    static func checkTimesteps(_ ts: [Int], _ c: SchedulerConfig, _ name: String) throws {
        try require(ts.allSatisfy { $0 >= 0 && $0 < c.numTrainTimesteps },
                    "\(name): timesteps \(ts) fall outside 0..<\(c.numTrainTimesteps) (check steps_offset)")
    }

    static func checkStepIndex(_ i: Int, _ count: Int, _ name: String) throws {
        try require(i >= 0 && i < count, "\(name): step index \(i) is outside 0..<\(count)")
    }

    static func checkShapes(_ modelOutput: Tensor, _ sample: Tensor, _ noise: Tensor?, _ name: String) throws {
        try requireShape(modelOutput.shape == sample.shape,
                         "\(name): model output \(modelOutput.shape) and sample \(sample.shape) differ")
        if let noise {
            try requireShape(noise.shape == sample.shape,
                             "\(name): noise \(noise.shape) and sample \(sample.shape) differ")
        }
    }

    /// `sum(c_i * t_i)` in one pass (`Tensor.linearCombination`); coefficients computed in
    /// Double, applied as Float. Zero coefficients are skipped (a fresh tensor is returned even
    /// for a single term).
    static func combine(_ terms: [(Double, Tensor)]) throws -> Tensor {
        let live = terms.filter { $0.0 != 0 }
        guard !live.isEmpty else {
            precondition(!terms.isEmpty, "combine of no terms")
            return try terms[0].1.scaled(0)
        }
        return try Tensor.linearCombination(live.map { (Float($0.0), $0.1) })
    }

    /// x0 and epsilon as linear combinations `(coefficient of sample, coefficient of model output)`
    /// for a VP noise level `alphaProd` (diffusers' DDIM/DDPM step, formula (12) of DDIM).
    static func x0AndEpsilon(_ prediction: PredictionType, alphaProd a: Double)
        -> (x0: (x: Double, m: Double), eps: (x: Double, m: Double))
    {
        let sa = a.squareRoot(), sb = (1 - a).squareRoot()
        switch prediction {
        case .epsilon:
            return ((1 / sa, -sb / sa), (0, 1))
        case .vPrediction:
            return ((sa, -sb), (sb, sa))
        }
    }
}
