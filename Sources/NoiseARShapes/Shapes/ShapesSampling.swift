import Foundation
import NoiseARCore
import NoiseARModels

/// The shapes world's main job, shared by the CLI (`sample`) and the C API
/// (`noisear_shapes_sample`): a prompt, seeds and settings in, 8-bit RGB images and their
/// exact prompt-fidelity scores out.
public struct ShapesSampleRequest: Sendable {
    public var prompt: String
    /// Image i uses seed + i.
    public var seed: UInt64
    public var batch: Int
    public var settings: SamplingSettings
    public var prior: NoisePriorKind
    /// Prior weights; nil: the shipped shapes-world prior of that kind.
    public var priorPath: String?
    /// NoiseAR sampling temperature and strength (0 Gaussian ... 1 prior).
    public var temperature: Float
    public var strength: Float
    /// The source of the standard normals (Philox per image, or PyTorch's generator for the batch).
    public var rng: GaussianSource

    public init(prompt: String, seed: UInt64, batch: Int = 1, settings: SamplingSettings = SamplingSettings(),
                prior: NoisePriorKind = .gaussian, priorPath: String? = nil, temperature: Float = 0.5, strength: Float = 1,
                rng: GaussianSource = .philox) {
        self.rng = rng
        self.prompt = prompt
        self.seed = seed
        self.batch = batch
        self.settings = settings
        self.prior = prior
        self.priorPath = priorPath
        self.temperature = temperature
        self.strength = strength
    }

    /// Every value checked, with a message naming the one at fault.
    public func validate() throws {
        try require(batch >= 1, "batch must be at least 1, got \(batch)")
        try require(settings.steps >= 1, "steps must be at least 1, got \(settings.steps)")
        try require(settings.cfg.isFinite && settings.cfg >= 0, "cfg must be a non-negative number, got \(settings.cfg)")
        try require(settings.sampler != .ddimInverse, "ddim-inverse inverts images to noise; it does not sample")
        try require(temperature.isFinite && temperature >= 0, "temperature must be a non-negative number, got \(temperature)")
        try require(strength >= 0 && strength <= 1, "strength must be in [0, 1], got \(strength)")
        try Seeds.check(seed, count: batch, option: "seed")
        _ = try PromptFacts.parse(prompt)
    }
}

public struct ShapesSampleResult: Sendable {
    /// The prompt as parsed (normalised).
    public var prompt: String
    public var seeds: [UInt64]
    /// 8-bit RGB, row-major, `size` x `size` each.
    public var images: [[UInt8]]
    /// The exact prompt-fidelity reward of each image.
    public var scores: [Double]
    public var size: Int { Scene.size }
}

public enum ShapesSampling {
    /// The noise source of a prior kind for the shapes-world model (the shipped prior of that
    /// kind unless `path` names weights).
    public static func noiseSource(_ kind: NoisePriorKind, path: String?, model: TextToImageModel,
                                   temperature: Float = 0.5, strength: Float = 1, rng: GaussianSource = .philox) throws -> NoiseSource {
        switch kind {
        case .gaussian:
            return Evaluation.gaussian(on: model.device, rng: rng)
        case .noiseAR:
            guard case .noiseAR(let net) = try NoisePrior.shapesWorld(.noiseAR, path: path, device: model.device) else {
                throw NoiseError.invalidArgument("not a NoiseAR prior")
            }
            return try NoisePriors.noiseAR(net, model: model, temperature: temperature, strength: strength, rng: rng)
        case .npnet:
            guard case .npnet(let net) = try NoisePrior.shapesWorld(.npnet, path: path, device: model.device) else {
                throw NoiseError.invalidArgument("not an NPNet")
            }
            return try NoisePriors.npnet(net, model: model, rng: rng)
        }
    }

    /// Samples the request's images (a prior is loaded when one is named).
    public static func sample(_ request: ShapesSampleRequest, model: TextToImageModel, source: NoiseSource? = nil,
                              progress: SamplingProgress = { _, _ in true }) throws -> ShapesSampleResult {
        try request.validate()
        try MemoryBudget.check(model.config.unet.estimatedSamplingBytes(batch: request.batch), on: model.device,
                               what: "sampling \(request.batch) images")
        let facts = try PromptFacts.parse(request.prompt)
        let noiseSource = try source ?? noiseSource(request.prior, path: request.priorPath, model: model,
                                                    temperature: request.temperature, strength: request.strength, rng: request.rng)
        let seeds = try Seeds.consecutive(from: request.seed, count: request.batch, option: "seed")
        let prompts = [String](repeating: facts.prompt, count: request.batch)
        let noise = try noiseSource(prompts, seeds)
        let images = try DiffusionSampler.sample(model: model, prompts: prompts, noise: noise, seed: request.seed,
                                                 settings: request.settings, progress: progress)
        let rgbs = try DiffusionSampler.rgb(images)
        let scores = try rgbs.map { try Reward.evaluate(image: $0, width: Scene.size, height: Scene.size, facts: facts).score }
        return ShapesSampleResult(prompt: facts.prompt, seeds: seeds, images: rgbs, scores: scores)
    }
}
