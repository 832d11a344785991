import Foundation
import NoiseARCore
import NoiseARModels

/// NPNet in the shapes world. The authors' 2x2 tiling needs four latent channels and the
/// shapes world's start is RGB, so the network sees a four-channel start whose first three
/// channels are exactly the RGB start of the same seed (`Tensor.randn` of [1, 4, 32, 32] begins
/// with the [1, 3, 32, 32] draws: Philox offsets are element indices) and whose fourth is a
/// spare channel; the golden noise's first three channels are the sampler's start.
public enum ShapesNPNet {
    /// A reduced Swin (embed 24, depths 2,2,2,2, heads 1,2,3,6, window 7, 224 input) over the
    /// 4x32x32 start, conditioned on the shapes world's [12, 64] prompt states.
    public static func config(textTokens: Int = 12, textDim: Int = 64, embedDim: Int = 24) -> NPNetConfig {
        var c = NPNetConfig()
        c.latentChannels = 4
        c.latentSize = Scene.size
        c.textTokens = textTokens
        c.textDim = textDim
        c.swin.embedDim = embedDim
        c.swin.depths = [2, 2, 2, 2]
        c.swin.numHeads = [1, 2, 3, 6].map { max(1, $0 * embedDim / 24) }
        return c
    }

    /// Four-channel starts [B, 4, 32, 32], image i from Philox stream seeds[i] (or PyTorch's
    /// generator, a run of consecutive seeds as one batch).
    public static func start(seeds: [UInt64], on device: Device, rng: GaussianSource = .philox) throws -> Tensor {
        try Evaluation.consecutiveRuns(seeds) { first, count in
            try rng.standardNormal(count: count, shape: [4, Scene.size, Scene.size], seed: first, on: device)
        }
    }

    /// The spare fourth channels [B, 1, 32, 32] of those starts.
    static func spare(seeds: [UInt64], on device: Device) throws -> Tensor {
        let plane = Scene.size * Scene.size
        let parts = try seeds.map { try Tensor.randn([1, 1, Scene.size, Scene.size], seed: $0, offset: UInt64(3 * plane), on: device) }
        return parts.count == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
    }
}

extension NoisePriors {
    /// The shapes world's NPNet source: the golden noise of each seed's four-channel start,
    /// its RGB channels handed to the sampler.
    public static func npnet(_ net: NPNet, model: TextToImageModel, rng: GaussianSource = .philox) throws -> NoiseSource {
        try requireShape(net.config.latentShape == [4, Scene.size, Scene.size]
                            && net.config.textFeatures == model.config.text.maxLength * model.config.text.hiddenSize,
                         "the NPNet (latent \(net.config.latentShape), \(net.config.textFeatures) prompt features) does not fit the shapes-world model")
        return { prompts, seeds in
            try model.device.noGrad {
                let x = try ShapesNPNet.start(seeds: seeds, on: model.device, rng: rng)
                let golden = try net.golden(noise: x, promptEmbeds: model.encode(prompts))
                return try golden.slice(axis: 1, 0, 3)
            }
        }
    }
}

/// NPNet training on re-denoise pairs: MSE between the golden noise of x_T and x'_T (the spare
/// channel's target is itself), AdamW (lr 1e-4 by default), alpha and beta learned, the Swin
/// from scratch.
public final class NPNetTrainer {
    public let net: NPNet
    public let settings: PriorTrainingSettings
    public let optimizer: AdamW
    public let train: NoiseDataset
    public let validation: NoiseDataset
    public private(set) var step = 0

    public init(net: NPNet, train: NoiseDataset, validation: NoiseDataset, settings: PriorTrainingSettings) throws {
        try require(settings.batch >= 1 && settings.steps >= 1, "batch and steps must be at least 1")
        try require(train.count > 0 && train.target != nil, "no re-denoise pairs (collect --method redenoise)")
        try requireShape(Array(train.noise.shape.dropFirst()) == [3, Scene.size, Scene.size],
                         "dataset noise \(train.noise.shape) is not a shapes-world start")
        self.net = net
        self.train = train
        self.validation = validation
        self.settings = settings
        optimizer = AdamW(lr: settings.lr, weightDecay: settings.weightDecay)
    }

    /// (four-channel input, four-channel target, prompt embeddings) of dataset items.
    func tensors(_ d: NoiseDataset, _ idx: [Int]) throws -> (Tensor, Tensor, Tensor) {
        let s = d.subset(idx), dev = net.device
        guard let target = s.target else { throw NoiseError.invalidArgument("the dataset has no re-denoise targets") }
        let spare = try ShapesNPNet.spare(seeds: s.seeds, on: dev)
        let x = try Tensor.concat([Tensor(s.noise, on: dev), spare], axis: 1)
        let t = try Tensor.concat([Tensor(target, on: dev), spare], axis: 1)
        return (x, t, try Tensor(s.promptEmbeds, on: dev))
    }

    /// One optimisation step; returns the MSE.
    @discardableResult
    public func trainStep() throws -> Float {
        var rng = ShapesRNG(seed: settings.seed &+ UInt64(step) &* 0x9E37_79B9 &+ 0x77)
        let idx = (0..<settings.batch).map { _ in rng.below(train.count) }
        let (x, t, text) = try tensors(train, idx)
        let loss = try (net.golden(noise: x, promptEmbeds: text) - t).square().mean()
        try optimizer.minimize(loss, params: net.params,
                               lr: settings.lr * Float(min(step + 1, settings.warmup)) / Float(max(settings.warmup, 1)))
        step += 1
        return try loss.item()
    }

    /// Mean MSE of the network and of the identity (x_T itself) to x'_T on a dataset.
    public func evaluate(_ d: NoiseDataset, batch: Int = 16) throws -> (net: Double, identity: Double) {
        guard d.count > 0 else { return (.nan, .nan) }
        var total = 0.0, identity = 0.0
        try net.device.noGrad {
            var start = 0
            while start < d.count {
                let idx = Array(start..<min(start + batch, d.count))
                let (x, t, text) = try tensors(d, idx)
                total += Double(try (net.golden(noise: x, promptEmbeds: text) - t).square().mean().item()) * Double(idx.count)
                identity += Double(try (x - t).square().mean().item()) * Double(idx.count)
                start += idx.count
            }
        }
        return (total / Double(d.count), identity / Double(d.count))
    }

    /// Weights, optimizer moments and the step, atomically.
    public func saveCheckpoint(_ url: URL, extraMetadata: [String: String] = [:]) throws {
        try TrainingCheckpoint.save(url, params: net.params, optimizer: optimizer, step: step, seed: settings.seed,
                                    config: net.config.jsonString(), metadata: extraMetadata)
    }

    /// Restores weights, optimizer moments and the step.
    public func resume(from url: URL) throws {
        step = try TrainingCheckpoint.restore(url, params: net.params, optimizer: optimizer) { json in
            try JSONDecoder().decode(NPNetConfig.self, from: Data(json.utf8)) == net.config
        }
    }

    /// The weights as a standalone NPNet file (F16 by default, like the other shipped weights).
    public func export(_ url: URL, metadata: [String: String] = [:], storage: SafeTensorsFile.Storage = .f16) throws {
        var meta = metadata
        meta["config"] = try net.config.jsonString()
        meta["kind"] = "npnet"
        meta["step"] = String(step)
        try SafeTensorsFile(tensors: net.params.hostTensors(), metadata: meta).write(to: url, as: storage)
    }
}

/// Training checkpoints shared by the prior trainers: parameters, AdamW moments, step, config.
public enum TrainingCheckpoint {
    public static func save(_ url: URL, params: Parameters, optimizer: AdamW, step: Int, seed: UInt64,
                            config: String, metadata: [String: String]) throws {
        var tensors = try params.hostTensors()
        tensors.merge(try optimizer.hostTensors(for: params)) { a, _ in a }
        var meta = metadata
        meta["config"] = config
        meta["kind"] = "checkpoint"
        meta["step"] = String(step)
        meta["adam_step"] = String(optimizer.step)
        meta["seed"] = String(seed)
        try SafeTensorsFile(tensors: tensors, metadata: meta).write(to: url)
    }

    /// Loads a checkpoint into `params` and `optimizer`; `sameConfig` checks its config JSON.
    /// Returns the step.
    public static func restore(_ url: URL, params: Parameters, optimizer: AdamW,
                               sameConfig: (String) throws -> Bool) throws -> Int {
        let file = try SafeTensorsFile.read(url)
        guard file.metadata["kind"] == "checkpoint", let s = Int(file.metadata["step"] ?? ""),
              let adamStep = Int(file.metadata["adam_step"] ?? "") else {
            throw NoiseError.invalidArgument("\(url.path) is not a noisear-gpu training checkpoint")
        }
        if let json = file.metadata["config"], try !sameConfig(json) {
            throw NoiseError.invalidArgument("\(url.path): checkpoint config differs from this network's")
        }
        try params.load(file, allowUnexpected: true)
        try optimizer.restore(step: adamStep, from: file, params: params)
        return s
    }
}
