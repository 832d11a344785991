import Foundation
import NoiseARCore

/// A text-conditioned denoiser the sampler loop can drive: any network predicting eps or v (its
/// scheduler configuration says which) from x_t, timesteps and conditioning states.
public protocol Denoiser: AnyObject {
    var device: Device { get }
    /// The scheduler configuration of the model's training schedule (prediction type included).
    func schedulerConfig(karras: Bool) throws -> SchedulerConfig
    /// The network's output for x_t [B, C, H, W]: eps or v, per `schedulerConfig`'s prediction
    /// type, conditioned on prompt embeddings `context` [B, ...].
    func predict(_ x: Tensor, timesteps: [Double], context: Tensor) throws -> Tensor
}

/// A denoiser with its own text encoder, so it can be sampled from prompt strings. A host that
/// already has embeddings samples any `Denoiser` with them instead.
public protocol TextToImageDenoiser: Denoiser {
    /// Conditioning states [B, ...] for prompts; "" is the unconditional prompt.
    func encode(_ prompts: [String]) throws -> Tensor
}

/// Initial noise for prompts and seeds (image i from seeds[i]): Gaussian noise or a learned prior.
public typealias NoiseSource = (_ prompts: [String], _ seeds: [UInt64]) throws -> Tensor

/// Progress of a long call (sampler steps, NoiseAR patches): (finished, total); return false to
/// cancel (the call then throws `NoiseError.cancelled`). The one progress type of the library,
/// as the C API's `noisear_progress_callback` is.
public typealias SamplingProgress = (_ done: Int, _ total: Int) -> Bool

/// Settings of one sampling run.
public struct SamplingSettings: Sendable, Equatable {
    public var sampler: SamplerKind = .dpmpp2m
    public var steps = 30
    public var cfg = 5.0
    public var karras = false
    public init(sampler: SamplerKind = .dpmpp2m, steps: Int = 30, cfg: Double = 5.0, karras: Bool = false) {
        self.sampler = sampler
        self.steps = steps
        self.cfg = cfg
        self.karras = karras
    }
}

/// The denoising loop with classifier-free guidance (uncond and cond batched in one call).
public enum DiffusionSampler {
    /// Initial noise [count, C, H, W], unscaled (standard normal): image i from Philox stream
    /// seed + i (the same on every backend), or the batch as PyTorch's CPU generator draws it
    /// for `seed` (`rng: .torch`).
    public static func gaussianNoise(count: Int, shape: [Int], seed: UInt64, on device: Device,
                                     rng: GaussianSource = .philox) throws -> Tensor {
        try rng.standardNormal(count: count, shape: shape, seed: seed, on: device)
    }

    /// Denoises standard-normal `noise` [B, C, H, W] for `prompts` (B of them), encoded by the
    /// model's own text encoder. Step noise of the stochastic samplers comes from stream seed + i
    /// of image i, after its initial noise. Returns x_0 (images in about [-1, 1]). Throws
    /// `cancelled` when `progress` returns false.
    public static func sample(model: any TextToImageDenoiser, prompts: [String], noise: Tensor, seed: UInt64,
                              settings: SamplingSettings, progress: SamplingProgress = { _, _ in true }) throws -> Tensor {
        let b = noise.shape.first ?? 0
        try require(prompts.count == b, "\(prompts.count) prompts for a batch of \(b)")
        let context = try model.device.noGrad { try guidanceContext(model: model, prompts: prompts, cfg: settings.cfg) }
        return try sample(model: model, context: context, noise: noise, seed: seed, settings: settings, progress: progress)
    }

    /// The same from prompt embeddings a host already has: `context` is [uncond; cond] (2B rows)
    /// when cfg != 1, else the B conditional rows (see `guidanceContext(cond:uncond:cfg:)`).
    public static func sample(model: any Denoiser, context: Tensor, noise: Tensor, seed: UInt64,
                              settings: SamplingSettings, progress: SamplingProgress = { _, _ in true }) throws -> Tensor {
        let dev = model.device
        return try dev.noGrad {
            let b = noise.shape[0]
            let rows = context.shape.first ?? 0
            try requireShape(rows == (settings.cfg != 1 ? 2 * b : b),
                             "prompt states of \(rows) rows for a batch of \(b) (\(settings.cfg != 1 ? "unconditional and conditional, 2B" : "B") rows expected)")
            try require(settings.steps >= 1, "steps must be at least 1, got \(settings.steps)")
            try require(settings.cfg.isFinite && settings.cfg >= 0, "cfg must be a non-negative number, got \(settings.cfg)")
            var scheduler = try makeScheduler(settings.sampler, config: model.schedulerConfig(karras: settings.karras),
                                              steps: settings.steps)
            var x = try noise.scaled(Float(scheduler.initNoiseSigma))
            let per = noise.count / b
            let ts = scheduler.timesteps
            for (i, t) in ts.enumerated() {
                let input = try scheduler.scaleModelInput(x, stepIndex: i)
                let output = try guidedPrediction(model: model, input, t: t, context: context, cfg: settings.cfg)
                var stepNoise: Tensor? = nil
                if scheduler.needsNoise {
                    let parts = try (0..<b).map {
                        try Tensor.randn([1] + Array(noise.shape.dropFirst()), seed: seed &+ UInt64($0),
                                         offset: UInt64((i + 1) * per), on: dev)
                    }
                    stepNoise = b == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
                }
                x = try scheduler.step(modelOutput: output, stepIndex: i, sample: x, noise: stepNoise)
                if !progress(i + 1, ts.count) { throw NoiseError.cancelled("sampling stopped at step \(i + 1) of \(ts.count)") }
            }
            return x
        }
    }

    /// The model's prediction for x [B, ...] at timestep t with classifier-free guidance:
    /// `context` is [uncond; cond] (2B rows) when cfg != 1, else the B conditional rows;
    /// uncond + cfg * (cond - uncond) = (1 - cfg) uncond + cfg cond from one batched call (the
    /// combination in one pass).
    public static func guidedPrediction(model: any Denoiser, _ x: Tensor, t: Double, context: Tensor,
                                        cfg: Double) throws -> Tensor {
        let b = x.shape[0]
        guard cfg != 1 else {
            return try model.predict(x, timesteps: [Double](repeating: t, count: b), context: context)
        }
        let both = try model.predict(Tensor.concat([x, x], axis: 0),
                                          timesteps: [Double](repeating: t, count: 2 * b), context: context)
        let un = try both.slice(axis: 0, 0, b), co = try both.slice(axis: 0, b, 2 * b)
        return try Tensor.linearCombination([(Float(1 - cfg), un), (Float(cfg), co)])
    }

    /// Prompt states for guidance: [uncond; cond] when cfg != 1, else cond.
    public static func guidanceContext(model: any TextToImageDenoiser, prompts: [String], cfg: Double) throws -> Tensor {
        let cond = try model.encode(prompts)
        return try guidanceContext(cond: cond, uncond: cfg != 1 ? model.encode([String](repeating: "", count: prompts.count)) : nil,
                                   cfg: cfg)
    }

    /// Prompt states for guidance from embeddings: [uncond; cond] when cfg != 1 (uncond needed,
    /// of the same shape), else cond.
    public static func guidanceContext(cond: Tensor, uncond: Tensor?, cfg: Double) throws -> Tensor {
        guard cfg != 1 else { return cond }
        guard let uncond else {
            throw NoiseError.invalidArgument("guidance with cfg \(cfg) needs unconditional (negative) prompt embeddings")
        }
        try requireShape(uncond.shape == cond.shape, "unconditional embeddings \(uncond.shape) do not match the prompt's \(cond.shape)")
        return try Tensor.concat([uncond, cond], axis: 0)
    }
}

extension UNetConfig {
    /// An upper estimate of the memory one guided sampler step takes for `batch` images (float32,
    /// both halves of classifier-free guidance): about 32 live feature maps of each resolution
    /// level's size (activations, im2col buffers, the tape's and the scheduler's copies) plus the
    /// attention scores of the cross-attention levels. Measured on the shipped model with the CPU
    /// backend: 11 MiB per image against an estimate of 15 MiB. Nil when it overflows.
    public func estimatedSamplingBytes(batch: Int) -> UInt64? {
        var perPass = 0
        for (level, channels) in blockOutChannels.enumerated() {
            let side = sampleSize >> level
            guard let maps = MemoryBudget.product([32, channels, side, side]) else { return nil }
            perPass += maps
            if attentionLevels[level], let scores = MemoryBudget.product([heads, side * side, side * side]) {
                perPass += scores
            }
        }
        guard let images = MemoryBudget.product([2, batch, perPass]) else { return nil }
        return MemoryBudget.floatBytes([images])
    }

    /// An upper estimate of the memory one training step takes for `batch` images: the forward
    /// pass's tape, its gradients and the optimiser's work, taken as three guided sampler steps'
    /// worth. Measured on the shipped model with the CPU backend (peak resident memory at batch
    /// 16 and 64): 31 MiB per image against an estimate of 45 MiB. Nil when it overflows.
    public func estimatedTrainingBytes(batch: Int) -> UInt64? {
        guard let step = estimatedSamplingBytes(batch: batch) else { return nil }
        let (bytes, overflow) = step.multipliedReportingOverflow(by: 3)
        return overflow ? nil : bytes
    }
}
