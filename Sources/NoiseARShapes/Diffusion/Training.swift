import Foundation
import NoiseARCore
import NoiseARModels

/// Settings of `train diffusion`.
public struct DiffusionTrainingSettings: Sendable, Equatable {
    public var steps = 4000
    public var batch = 16
    public var lr: Float = 1e-3
    public var warmup = 200
    public var weightDecay: Float = 0.0
    public var promptDropout = 0.1
    public var emaDecay: Float = 0.999
    public var seed: UInt64 = 0
    public init() {}
}

/// DDPM training of the shapes-world model: random train-split prompts rendered at random
/// positions, t uniform, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, MSE to eps (epsilon
/// prediction) or to v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (v-prediction);
/// AdamW with linear warm-up, EMA of weights, prompt dropout for classifier-free guidance.
/// The state (weights, EMA, optimizer moments, step) is saved in one safetensors checkpoint.
public final class DiffusionTrainer {
    public let model: TextToImageModel
    public let settings: DiffusionTrainingSettings
    public let optimizer: AdamW
    public private(set) var ema: [String: Tensor] = [:]
    public private(set) var step = 0
    let alphasCumprod: [Double]

    public init(model: TextToImageModel, settings: DiffusionTrainingSettings) throws {
        try require(settings.batch >= 1 && settings.steps >= 1, "batch and steps must be at least 1")
        try require(settings.promptDropout >= 0 && settings.promptDropout < 1, "prompt dropout must be in [0, 1)")
        self.model = model
        self.settings = settings
        optimizer = AdamW(lr: settings.lr, weightDecay: settings.weightDecay)
        let sched = try makeScheduler(.ddpm, config: model.config.schedulerConfig(), steps: 1)
        alphasCumprod = sched.alphasCumprod
        for name in model.params.names {
            if let p = model.params.tensors[name] { ema[name] = try model.device.noGrad { try p.scaled(1) } }
        }
    }

    /// A deterministic batch for step `step`: prompts (some dropped to ""), x_0, t, eps.
    func batch(_ step: Int) throws -> (prompts: [String], x0: Tensor, t: [Int], eps: Tensor) {
        let b = settings.batch, dev = model.device
        var rng = ShapesRNG(seed: settings.seed &+ UInt64(step) &* 0x9E37_79B9)
        var prompts: [String] = [], images: [Float] = [], ts: [Int] = []
        for _ in 0..<b {
            let prompt = PromptSplit.train[rng.below(PromptSplit.train.count)]
            let scene = try Scene.sample(prompt: prompt, seed: rng.next())
            images += scene.renderTensor().data
            let drop = rng.unit() < settings.promptDropout
            prompts.append(drop ? "" : prompt)
            ts.append(rng.below(alphasCumprod.count))
        }
        let x0 = try Tensor(images, shape: [b, 3, Scene.size, Scene.size], on: dev)
        let eps = try Tensor.randn(x0.shape, seed: settings.seed &+ 0x5EED, offset: UInt64(step) * UInt64(x0.count), on: dev)
        return (prompts, x0, ts, eps)
    }

    /// One optimisation step; returns the loss.
    @discardableResult
    public func trainStep() throws -> Float {
        let dev = model.device
        let (prompts, x0, ts, eps) = try batch(step)
        let b = settings.batch
        let a = try Tensor(ts.map { Float(alphasCumprod[$0].squareRoot()) }, shape: [b, 1, 1, 1], on: dev)
        let s = try Tensor(ts.map { Float((1 - alphasCumprod[$0]).squareRoot()) }, shape: [b, 1, 1, 1], on: dev)
        let (xt, target) = try dev.noGrad {
            (try x0 * a + eps * s, model.config.predictionType == "v_prediction" ? try eps * a - x0 * s : eps)
        }
        let context = try model.encode(prompts)
        let pred = try model.predict(xt, timesteps: ts.map(Double.init), context: context)
        let loss = try (pred - target).square().mean()
        let warm = Float(min(step + 1, settings.warmup)) / Float(max(settings.warmup, 1))
        try optimizer.minimize(loss, params: model.params, lr: settings.lr * warm)
        try dev.noGrad {
            let d = settings.emaDecay
            for name in model.params.names {
                guard let p = model.params.tensors[name], let e = ema[name] else { continue }
                try e.assign(e.scaled(d) + p.scaled(1 - d))
            }
        }
        step += 1
        return try loss.item()
    }

    /// Writes weights, EMA weights and optimizer moments (atomically).
    public func saveCheckpoint(_ url: URL, extraMetadata: [String: String] = [:]) throws {
        var tensors = try model.params.hostTensors()
        tensors.merge(try optimizer.hostTensors(for: model.params)) { a, _ in a }
        for name in model.params.names {
            if let e = ema[name] { tensors["ema." + name] = try e.toHost() }
        }
        var meta = extraMetadata
        meta["config"] = try model.config.jsonString()
        meta["kind"] = "checkpoint"
        meta["step"] = String(step)
        meta["adam_step"] = String(optimizer.step)
        meta["seed"] = String(settings.seed)
        try SafeTensorsFile(tensors: tensors, metadata: meta).write(to: url)
    }

    /// Restores weights, EMA, optimizer moments and the step from a checkpoint.
    public func resume(from url: URL) throws {
        let file = try SafeTensorsFile.read(url)
        guard file.metadata["kind"] == "checkpoint", let stepText = file.metadata["step"], let s = Int(stepText),
              let adamStep = Int(file.metadata["adam_step"] ?? "") else {
            throw NoiseError.invalidArgument("\(url.path) is not a noisear-gpu training checkpoint")
        }
        if let json = file.metadata["config"], try DiffusionModelConfig.parse(json: json, source: url.path) != model.config {
            throw NoiseError.invalidArgument("\(url.path): checkpoint config differs from this model's")
        }
        try model.params.load(file, allowUnexpected: true)
        for name in model.params.names {
            if let e = file["ema." + name], let t = ema[name] {
                try e.requireFinite("ema." + name, in: file.source)
                try t.assign(Tensor(e, on: model.device))
            }
        }
        try optimizer.restore(step: adamStep, from: file, params: model.params)
        step = s
    }

    /// The EMA weights as a standalone model file (what `sample` loads), by default in half
    /// precision (the shipped file stays small; compute is float32 after loading).
    public func exportEMA(_ url: URL, metadata: [String: String] = [:], storage: SafeTensorsFile.Storage = .f16) throws {
        var tensors: [String: HostTensor] = [:]
        for name in model.params.names { if let e = ema[name] { tensors[name] = try e.toHost() } }
        var meta = metadata
        meta["config"] = try model.config.jsonString()
        meta["kind"] = "model"
        meta["step"] = String(step)
        try SafeTensorsFile(tensors: tensors, metadata: meta).write(to: url, as: storage)
    }
}
