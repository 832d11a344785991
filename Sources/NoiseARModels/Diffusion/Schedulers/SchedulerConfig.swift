import Foundation
import NoiseARCore

/// How the training betas are spaced (diffusers' `beta_schedule`).
public enum BetaSchedule: String, Codable, Sendable {
    /// `linspace(beta_start, beta_end, N)`.
    case linear
    /// `linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2` (Stable Diffusion's schedule).
    case scaledLinear = "scaled_linear"
}

/// How the inference timesteps are picked out of the training ones (diffusers'
/// `timestep_spacing`, Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
public enum TimestepSpacing: String, Codable, Sendable {
    case leading, linspace, trailing
}

/// What the denoising model predicts (diffusers' `prediction_type`).
public enum PredictionType: String, Codable, Sendable {
    /// The added noise.
    case epsilon
    /// `v = sqrt(alpha_cumprod) * noise - sqrt(1 - alpha_cumprod) * x0` (Salimans & Ho).
    case vPrediction = "v_prediction"
}

/// The sigma appended after the last inference sigma (diffusers' `final_sigmas_type`; used by the
/// Euler and DPM-Solver schedulers).
public enum FinalSigmasType: String, Codable, Sendable {
    /// The last step lands on sigma 0 (a clean sample).
    case zero
    /// The last step lands on the smallest training sigma.
    case sigmaMin = "sigma_min"
}

/// The posterior variance of `DDPMScheduler` (diffusers' `variance_type`; the learned kinds are not
/// supported).
public enum DDPMVarianceType: String, Codable, Sendable {
    /// `beta~_t = (1 - a_prev) / (1 - a_t) * beta_t` (the DDPM paper's sigma_t^2 = beta~_t).
    case fixedSmall = "fixed_small"
    /// The same value computed through a log (identical result).
    case fixedSmallLog = "fixed_small_log"
    /// `beta_t`.
    case fixedLarge = "fixed_large"
}

/// A diffusion scheduler configuration: the union of the fields of diffusers' `DDIMScheduler`,
/// `DDIMInverseScheduler`, `DDPMScheduler`, `EulerDiscreteScheduler`,
/// `EulerAncestralDiscreteScheduler` and `DPMSolverMultistepScheduler` configs that this library
/// implements, with diffusers' defaults. Each scheduler reads the fields it has in diffusers and
/// ignores the others (as diffusers' `from_config` does).
///
/// `eta` is not a diffusers config field (it is an argument of `DDIMScheduler.step`); it is kept
/// here so a scheduler is fully described by its config.
public struct SchedulerConfig: Sendable, Equatable {
    /// Number of training timesteps `N` (diffusers' `num_train_timesteps`, default 1000).
    public var numTrainTimesteps: Int
    public var betaStart: Double
    public var betaEnd: Double
    public var betaSchedule: BetaSchedule
    /// Explicit betas (diffusers' `trained_betas`): when set, overrides the three fields above and
    /// must hold `numTrainTimesteps` values in (0, 1).
    public var trainedBetas: [Double]?
    /// `nil` means the scheduler class's own default, as in diffusers: `leading` for DDIM, DDIM
    /// inversion and DDPM; `linspace` for Euler, Euler ancestral and DPM-Solver.
    public var timestepSpacing: TimestepSpacing?
    /// Added to `leading` timesteps (diffusers' `steps_offset`; Stable Diffusion uses 1).
    public var stepsOffset: Int
    public var predictionType: PredictionType
    /// Karras et al. (2022) sigmas (Euler and DPM-Solver only; ignored by the others, as in diffusers).
    public var useKarrasSigmas: Bool
    /// Overrides of the Karras schedule's ends (Euler only; diffusers' `sigma_min`, `sigma_max`).
    public var sigmaMin: Double?
    public var sigmaMax: Double?
    /// Euler and DPM-Solver: the sigma after the last step.
    public var finalSigmasType: FinalSigmasType
    /// DDIM: the weight of the added noise (0 = deterministic DDIM, 1 = DDPM-like).
    public var eta: Double
    /// DDIM: `alpha_cumprod` used past the last step (1 if true, else `alphas_cumprod[0]`);
    /// DDIM inversion: the same for before the first step.
    public var setAlphaToOne: Bool
    /// DDIM, DDIM inversion, DDPM: clamp the predicted x0 to `[-clipSampleRange, clipSampleRange]`.
    public var clipSample: Bool
    public var clipSampleRange: Double
    /// DDPM: the posterior variance.
    public var varianceType: DDPMVarianceType
    /// DPM-Solver: first-order last step when there are fewer than 15 steps.
    public var lowerOrderFinal: Bool
    /// DPM-Solver: always a first-order (Euler) last step.
    public var eulerAtFinal: Bool
    /// DPM-Solver: timesteps whose log-SNR is below this are not used (diffusers' `lambda_min_clipped`).
    public var lambdaMinClipped: Double

    public init(
        numTrainTimesteps: Int = 1000,
        betaStart: Double = 0.0001,
        betaEnd: Double = 0.02,
        betaSchedule: BetaSchedule = .linear,
        trainedBetas: [Double]? = nil,
        timestepSpacing: TimestepSpacing? = nil,
        stepsOffset: Int = 0,
        predictionType: PredictionType = .epsilon,
        useKarrasSigmas: Bool = false,
        sigmaMin: Double? = nil,
        sigmaMax: Double? = nil,
        finalSigmasType: FinalSigmasType = .zero,
        eta: Double = 0,
        setAlphaToOne: Bool = true,
        clipSample: Bool = true,
        clipSampleRange: Double = 1.0,
        varianceType: DDPMVarianceType = .fixedSmall,
        lowerOrderFinal: Bool = true,
        eulerAtFinal: Bool = false,
        lambdaMinClipped: Double = -.infinity
    ) {
        self.numTrainTimesteps = numTrainTimesteps
        self.betaStart = betaStart
        self.betaEnd = betaEnd
        self.betaSchedule = betaSchedule
        self.trainedBetas = trainedBetas
        self.timestepSpacing = timestepSpacing
        self.stepsOffset = stepsOffset
        self.predictionType = predictionType
        self.useKarrasSigmas = useKarrasSigmas
        self.sigmaMin = sigmaMin
        self.sigmaMax = sigmaMax
        self.finalSigmasType = finalSigmasType
        self.eta = eta
        self.setAlphaToOne = setAlphaToOne
        self.clipSample = clipSample
        self.clipSampleRange = clipSampleRange
        self.varianceType = varianceType
        self.lowerOrderFinal = lowerOrderFinal
        self.eulerAtFinal = eulerAtFinal
        self.lambdaMinClipped = lambdaMinClipped
    }

    /// Stable Diffusion XL's (and 1.x/2.x's) training schedule: scaled-linear betas
    /// 0.00085...0.012, leading spacing, steps offset 1, no clipping, `set_alpha_to_one` false.
    public static var stableDiffusion: SchedulerConfig {
        SchedulerConfig(betaStart: 0.00085, betaEnd: 0.012, betaSchedule: .scaledLinear,
                        timestepSpacing: .leading, stepsOffset: 1, setAlphaToOne: false,
                        clipSample: false)
    }

    /// Throws `invalidArgument` when a field is out of range.
    public func validate() throws {
        try require(numTrainTimesteps >= 2 && numTrainTimesteps <= 1_000_000,
                    "num_train_timesteps must be in 2...1000000, got \(numTrainTimesteps)")
        if let trainedBetas {
            try require(trainedBetas.count == numTrainTimesteps,
                        "trained_betas has \(trainedBetas.count) values, num_train_timesteps is \(numTrainTimesteps)")
        } else {
            try require(betaStart.isFinite && betaEnd.isFinite && betaStart > 0 && betaEnd > 0
                            && betaStart < 1 && betaEnd < 1,
                        "beta_start and beta_end must lie in (0, 1), got \(betaStart) and \(betaEnd)")
        }
        try require(stepsOffset >= 0 && stepsOffset < numTrainTimesteps,
                    "steps_offset must be in 0..<\(numTrainTimesteps), got \(stepsOffset)")
        try require(eta.isFinite && eta >= 0, "eta must be finite and >= 0, got \(eta)")
        try require(clipSampleRange.isFinite && clipSampleRange > 0,
                    "clip_sample_range must be finite and > 0, got \(clipSampleRange)")
        if let sigmaMin {
            try require(sigmaMin.isFinite && sigmaMin > 0, "sigma_min must be finite and > 0, got \(sigmaMin)")
        }
        if let sigmaMax {
            try require(sigmaMax.isFinite && sigmaMax > 0, "sigma_max must be finite and > 0, got \(sigmaMax)")
        }
        if let sigmaMin, let sigmaMax {
            try require(sigmaMin < sigmaMax, "sigma_min (\(sigmaMin)) must be below sigma_max (\(sigmaMax))")
        }
        try require(!lambdaMinClipped.isNaN, "lambda_min_clipped is NaN")
    }
}

// MARK: - diffusers JSON

extension SchedulerConfig {
    /// Parses a diffusers scheduler config (`scheduler_config.json`, or the `config` saved by
    /// `scheduler.config`), including Python's non-standard `Infinity`, `-Infinity` and `NaN`.
    ///
    /// Keys this library does not model are ignored (`_class_name`, `solver_order`,
    /// `algorithm_type`, ... : the sampler kind fixes those). Options that would change the results
    /// but are not implemented (`thresholding`, `rescale_betas_zero_snr`, `squaredcos_cap_v2`,
    /// exponential/beta/Lu/flow sigmas, log-linear interpolation, continuous timesteps, learned
    /// variances, `sample` prediction) throw `unsupported`; malformed values throw `invalidArgument`.
    /// A `null` value means the default.
    public static func fromDiffusersJSON(_ text: String) throws -> SchedulerConfig {
        let cleaned = sanitizePythonJSON(text)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(cleaned.utf8), options: [])
        } catch {
            throw NoiseError.invalidArgument("scheduler config is not valid JSON: \(error.localizedDescription)")
        }
        guard let dict = object as? [String: Any] else {
            throw NoiseError.invalidArgument("scheduler config is not a JSON object")
        }
        let j = JSONFields(dict)
        var c = SchedulerConfig()

        if let v = try j.int("num_train_timesteps") { c.numTrainTimesteps = v }
        if let v = try j.double("beta_start") { c.betaStart = v }
        if let v = try j.double("beta_end") { c.betaEnd = v }
        if let s = try j.string("beta_schedule") {
            guard let v = BetaSchedule(rawValue: s) else {
                if s == "squaredcos_cap_v2" {
                    throw NoiseError.unsupported("beta_schedule squaredcos_cap_v2 is not implemented (use linear or scaled_linear)")
                }
                throw NoiseError.invalidArgument("unknown beta_schedule '\(s)' (expected linear or scaled_linear)")
            }
            c.betaSchedule = v
        }
        if let v = try j.doubleArray("trained_betas") { c.trainedBetas = v }
        if let s = try j.string("timestep_spacing") {
            guard let v = TimestepSpacing(rawValue: s) else {
                throw NoiseError.invalidArgument("unknown timestep_spacing '\(s)' (expected leading, linspace or trailing)")
            }
            c.timestepSpacing = v
        }
        if let v = try j.int("steps_offset") { c.stepsOffset = v }
        if let s = try j.string("prediction_type") {
            guard let v = PredictionType(rawValue: s) else {
                if s == "sample" || s == "flow_prediction" {
                    throw NoiseError.unsupported("prediction_type '\(s)' is not implemented (use epsilon or v_prediction)")
                }
                throw NoiseError.invalidArgument("unknown prediction_type '\(s)' (expected epsilon or v_prediction)")
            }
            c.predictionType = v
        }
        if let v = try j.bool("use_karras_sigmas") { c.useKarrasSigmas = v }
        if let v = try j.double("sigma_min") { c.sigmaMin = v }
        if let v = try j.double("sigma_max") { c.sigmaMax = v }
        if let s = try j.string("final_sigmas_type") {
            guard let v = FinalSigmasType(rawValue: s) else {
                throw NoiseError.invalidArgument("unknown final_sigmas_type '\(s)' (expected zero or sigma_min)")
            }
            c.finalSigmasType = v
        }
        if let v = try j.double("eta") { c.eta = v }
        if let v = try j.bool("set_alpha_to_one") { c.setAlphaToOne = v }
        if let v = try j.bool("clip_sample") { c.clipSample = v }
        if let v = try j.double("clip_sample_range") { c.clipSampleRange = v }
        if let s = try j.string("variance_type") {
            guard let v = DDPMVarianceType(rawValue: s) else {
                if ["fixed_large_log", "learned", "learned_range"].contains(s) {
                    throw NoiseError.unsupported("variance_type '\(s)' is not implemented (use fixed_small or fixed_large)")
                }
                throw NoiseError.invalidArgument("unknown variance_type '\(s)'")
            }
            c.varianceType = v
        }
        if let v = try j.bool("lower_order_final") { c.lowerOrderFinal = v }
        if let v = try j.bool("euler_at_final") { c.eulerAtFinal = v }
        if let v = try j.double("lambda_min_clipped") { c.lambdaMinClipped = v }

        // Options that change the results and are not implemented.
        for key in ["thresholding", "rescale_betas_zero_snr", "use_exponential_sigmas", "use_beta_sigmas",
                    "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"] {
            if try j.bool(key) == true {
                throw NoiseError.unsupported("scheduler option \(key)=true is not implemented")
            }
        }
        if let s = try j.string("interpolation_type"), s != "linear" {
            throw NoiseError.unsupported("interpolation_type '\(s)' is not implemented (only linear)")
        }
        if let s = try j.string("timestep_type"), s != "discrete" {
            throw NoiseError.unsupported("timestep_type '\(s)' is not implemented (only discrete)")
        }
        try c.validate()
        return c
    }

    /// Replaces the bare tokens `Infinity`, `-Infinity` and `NaN` outside strings (Python's
    /// `json.dumps` writes them) by the strings `"Infinity"`, `"-Infinity"`, `"NaN"`, which the
    /// number readers below accept.
    static func sanitizePythonJSON(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var inString = false
        var escaped = false
        var i = 0
        func matches(_ word: String, at k: Int) -> Bool {
            let w = Array(word.unicodeScalars)
            guard k + w.count <= scalars.count else { return false }
            for (n, u) in w.enumerated() where scalars[k + n] != u { return false }
            // Not part of a longer identifier.
            if k + w.count < scalars.count {
                let next = scalars[k + w.count]
                if next.properties.isAlphabetic || next == "_" || ("0"..."9").contains(next) { return false }
            }
            return true
        }
        while i < scalars.count {
            let u = scalars[i]
            if inString {
                out.append(u)
                if escaped {
                    escaped = false
                } else if u == "\\" {
                    escaped = true
                } else if u == "\"" {
                    inString = false
                }
                i += 1
                continue
            }
            if u == "\"" {
                inString = true
                out.append(u)
                i += 1
                continue
            }
            var replaced = false
            for word in ["-Infinity", "Infinity", "NaN"] where matches(word, at: i) {
                out.append(contentsOf: "\"\(word)\"".unicodeScalars)
                i += word.unicodeScalars.count
                replaced = true
                break
            }
            if !replaced {
                out.append(u)
                i += 1
            }
        }
        return String(out)
    }
}

/// Typed access to the values of a parsed JSON object; `null` or a missing key reads as nil.
private struct JSONFields {
    let dict: [String: Any]
    init(_ dict: [String: Any]) { self.dict = dict }

    private func raw(_ key: String) -> Any? {
        guard let v = dict[key], !(v is NSNull) else { return nil }
        return v
    }

    private static func isBool(_ n: NSNumber) -> Bool {
        // JSON booleans come back as NSNumber with objCType 'c' (Linux and Darwin).
        UInt8(bitPattern: n.objCType.pointee) == UInt8(ascii: "c")
    }

    private static func number(_ v: Any) -> Double? {
        if let s = v as? String {
            switch s {
            case "Infinity": return .infinity
            case "-Infinity": return -.infinity
            case "NaN": return .nan
            default: return nil
            }
        }
        guard let n = v as? NSNumber, !isBool(n) else { return nil }
        return n.doubleValue
    }

    func double(_ key: String) throws -> Double? {
        guard let v = raw(key) else { return nil }
        guard let d = Self.number(v) else {
            throw NoiseError.invalidArgument("scheduler config: \(key) must be a number, got \(v)")
        }
        return d
    }

    func int(_ key: String) throws -> Int? {
        guard let d = try double(key) else { return nil }
        guard d.isFinite, d == d.rounded(), abs(d) < 1e15 else {
            throw NoiseError.invalidArgument("scheduler config: \(key) must be an integer, got \(d)")
        }
        return Int(d)
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = raw(key) else { return nil }
        guard let n = v as? NSNumber, Self.isBool(n) else {
            throw NoiseError.invalidArgument("scheduler config: \(key) must be true or false, got \(v)")
        }
        return n.boolValue
    }

    func string(_ key: String) throws -> String? {
        guard let v = raw(key) else { return nil }
        guard let s = v as? String else {
            throw NoiseError.invalidArgument("scheduler config: \(key) must be a string, got \(v)")
        }
        return s
    }

    func doubleArray(_ key: String) throws -> [Double]? {
        guard let v = raw(key) else { return nil }
        guard let a = v as? [Any] else {
            throw NoiseError.invalidArgument("scheduler config: \(key) must be an array of numbers")
        }
        return try a.map { e in
            guard let d = Self.number(e) else {
                throw NoiseError.invalidArgument("scheduler config: \(key) must be an array of numbers, got \(e)")
            }
            return d
        }
    }
}
