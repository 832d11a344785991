import Foundation
import NoiseARCore

/// DPM-Solver++(2M) (Lu et al. 2022), mirroring diffusers' `DPMSolverMultistepScheduler` with
/// `algorithm_type="dpmsolver++"`, `solver_order=2`, `solver_type="midpoint"` (no thresholding,
/// no Lu lambdas / exponential / beta / flow sigmas).
///
/// With `alpha(s) = 1 / sqrt(s^2 + 1)`, `sigma_t(s) = s * alpha(s)`, `lambda = -log s` and the
/// data prediction `D_i` (x0 from the model output at step i): the first step (and the last one
/// when `lowerOrderFinal` with fewer than 15 steps, `eulerAtFinal`, or a zero final sigma) is
/// first order, `x = sigma_t(s') / sigma_t(s) * x + alpha(s') (1 - e^-h) D_i`; the others are
/// `x = sigma_t(s') / sigma_t(s) * x + alpha(s') (1 - e^-h) (D_i + (D_i - D_{i-1}) / (2 r))`,
/// `h = lambda(s') - lambda(s)`, `r = (lambda(s) - lambda(s_{i-1})) / h`.
///
/// The scheduler keeps the previous data prediction: steps must be taken in order (a first call
/// may start at any index, as in img2img; the value copied before the loop is a fresh solver).
public struct DPMSolverMultistepScheduler: NoiseScheduler {
    public let config: SchedulerConfig
    public let timesteps: [Double]
    public let alphasCumprod: [Double]
    let sigmaSchedule: [Double]
    public var kind: SamplerKind { .dpmpp2m }
    public var sigmas: [Double]? { sigmaSchedule }
    public var initNoiseSigma: Double { 1 }
    public var needsNoise: Bool { false }

    /// The data prediction of the previous step, and its index.
    private var previous: (x0: Tensor, stepIndex: Int)?
    /// How many steps have been taken, up to the solver order (diffusers' `lower_order_nums`).
    private var lowerOrderNums = 0

    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DPM-Solver++(2M)"
        try ScheduleMath.checkSteps(steps, config, name)
        self.config = config
        let ac = try ScheduleMath.alphasCumprod(config)
        alphasCumprod = ac
        let n = config.numTrainTimesteps
        let trainSigmas = ScheduleMath.sigmas(ac)

        var ts: [Double]
        var sig: [Double]
        if config.useKarrasSigmas {
            let logSigmas = trainSigmas.map { Foundation.log($0) }
            sig = ScheduleMath.karras(sigmaMin: trainSigmas[0], sigmaMax: trainSigmas[n - 1], steps: steps)
            ts = sig.map { ScheduleMath.npRound(ScheduleMath.sigmaToT($0, logSigmas: logSigmas)) }
        } else {
            // lambda_t = log(sqrt(a)) - log(sqrt(1 - a)) decreases with t; the timesteps whose
            // lambda is below lambda_min_clipped are dropped from the top.
            let lambdas = ac.map { 0.5 * Foundation.log($0) - 0.5 * Foundation.log(1 - $0) }
            let clipped = lambdas.filter { $0 < config.lambdaMinClipped }.count
            let last = n - clipped
            let intTs: [Int]
            switch config.timestepSpacing ?? .linspace {
            case .linspace:
                intTs = Array(ScheduleMath.linspace(0, Double(last - 1), steps + 1)
                    .map { Int(ScheduleMath.npRound($0)) }.reversed().dropLast())
            case .leading:
                let ratio = last / (steps + 1)
                intTs = (1...steps).reversed().map { $0 * ratio + config.stepsOffset }
            case .trailing:
                // arange(last, 0, -N/steps): fewer than `steps` values when lambda clipping
                // lowered `last` (diffusers then runs fewer steps).
                let ratio = Double(n) / Double(steps)
                let count = last == n ? steps : min(steps, Int((Double(last) / ratio).rounded(.up)))
                intTs = (0..<count).map { Int(ScheduleMath.npRound(Double(last) - Double($0) * ratio)) - 1 }
            }
            try ScheduleMath.checkTimesteps(intTs, config, name)
            ts = intTs.map(Double.init)
            sig = ts.map { ScheduleMath.interp($0, trainSigmas) }
        }
        switch config.finalSigmasType {
        case .zero: sig.append(0)
        case .sigmaMin: sig.append(trainSigmas[0])
        }
        try require(!ts.isEmpty && zip(sig.dropLast(), sig.dropLast().dropFirst()).allSatisfy { $0 > $1 },
                    "\(name): \(steps) steps give repeated timesteps \(ts.map { Int($0) }) (too many steps for this spacing)")
        timesteps = ts
        sigmaSchedule = sig
    }

    public mutating func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        let name = kind.displayName
        try checkStep(i, modelOutput, sample, noise)
        if let previous {
            try require(previous.stepIndex + 1 == i,
                        "\(name): steps must be taken in order; got step \(i) after step \(previous.stepIndex) (use a fresh copy of the scheduler for a new run)")
        }
        let count = timesteps.count
        let lowerOrderFinal = i == count - 1
            && (config.eulerAtFinal || (config.lowerOrderFinal && count < 15) || config.finalSigmasType == .zero)

        func alpha(_ s: Double) -> Double { 1 / (s * s + 1).squareRoot() }
        let s0 = sigmaSchedule[i], s = sigmaSchedule[i + 1]
        let a0 = alpha(s0), sig0 = s0 * a0
        let at = alpha(s), sigt = s * at

        // Data prediction (convert_model_output).
        let x0: Tensor
        switch config.predictionType {
        case .epsilon: x0 = try ScheduleMath.combine([(1 / a0, sample), (-sig0 / a0, modelOutput)])
        case .vPrediction: x0 = try ScheduleMath.combine([(a0, sample), (-sig0, modelOutput)])
        }

        // e^-h = s / s0 (lambda = -log sigma); 0 when the target sigma is 0.
        let expMinusH = s / s0
        let c = at * (1 - expMinusH)
        let xCoeff = sigt / sig0
        let result: Tensor
        if let previous, lowerOrderNums >= 1, !lowerOrderFinal {
            let s1 = sigmaSchedule[i - 1]
            let h = Foundation.log(s0 / s), h0 = Foundation.log(s1 / s0)
            let r0 = h0 / h
            result = try ScheduleMath.combine([
                (xCoeff, sample), (c * (1 + 0.5 / r0), x0), (-c * 0.5 / r0, previous.x0),
            ])
        } else {
            result = try ScheduleMath.combine([(xCoeff, sample), (c, x0)])
        }
        previous = (x0, i)
        if lowerOrderNums < 2 { lowerOrderNums += 1 }
        return result
    }
}
