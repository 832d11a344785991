import Foundation

/// Everything that defines the shapes-world text-to-image model: the UNet, the text encoder
/// and the training noise schedule.
public struct DiffusionModelConfig: Codable, Sendable, Equatable {
    public var unet = UNetConfig()
    public var text = TextEncoderConfig()
    /// Training schedule: Stable Diffusion's scaled-linear betas (terminal alpha-bar 0.0047),
    /// with v-prediction, which keeps the model's image estimate bounded at high noise (an eps
    /// model's x0 error is amplified by 1/sqrt(alpha-bar) there; a small, briefly trained
    /// pixel-space eps model drifts off its sampling trajectory).
    public var numTrainTimesteps = 1000
    public var betaStart = 0.00085
    public var betaEnd = 0.012
    public var betaSchedule = "scaled_linear"
    /// "epsilon" or "v_prediction".
    public var predictionType = "v_prediction"

    public init() {
        text.vocabSize = PromptTokenizer.vocabulary.count
        text.maxLength = PromptTokenizer.length
        unet.crossAttentionDim = text.hiddenSize
    }

    /// The sampler configuration matching the training schedule.
    public func schedulerConfig(karras: Bool = false) throws -> SchedulerConfig {
        var c = SchedulerConfig.stableDiffusion
        c.numTrainTimesteps = numTrainTimesteps
        c.betaStart = betaStart
        c.betaEnd = betaEnd
        c.betaSchedule = try BetaSchedule(rawValue: betaSchedule)
            ?? { throw NoiseError.invalidArgument("unknown beta schedule \(betaSchedule)") }()
        c.predictionType = try PredictionType(rawValue: predictionType)
            ?? { throw NoiseError.invalidArgument("unknown prediction type \(predictionType)") }()
        c.useKarrasSigmas = karras
        // A pixel-space model: keep predicted images in range (DDIM/DDPM clip_sample; DPM-Solver
        // thresholding with sample_max_value 1).
        c.clipSample = true
        return c
    }

    /// Throws `invalidArgument` naming the first field out of range (`unet.heads`,
    /// `text.hiddenSize`, `betaStart`, ...); `source` names the file (or model) in the message.
    public func validate(source: String = "diffusion model") throws {
        let c = ConfigCheck(source: source)
        try unet.validate(c.nested("unet."))
        try text.validate(c.nested("text."))
        if unet.crossAttentionDim != text.hiddenSize {
            throw c.error("unet.crossAttentionDim", "\(unet.crossAttentionDim)",
                          "must equal text.hiddenSize = \(text.hiddenSize)")
        }
        let words = PromptTokenizer.vocabulary.count
        if text.vocabSize < words {
            throw c.error("text.vocabSize", "\(text.vocabSize)",
                          "must be at least \(words) (the prompt tokenizer's vocabulary)")
        }
        try c.int("numTrainTimesteps", numTrainTimesteps, min: 2, max: 1_000_000)
        try c.float("betaStart", betaStart, "must lie in (0, 1)") { $0 > 0 && $0 < 1 }
        try c.float("betaEnd", betaEnd, "must lie in (0, 1)") { $0 > 0 && $0 < 1 }
        if BetaSchedule(rawValue: betaSchedule) == nil {
            throw c.error("betaSchedule", "\"\(betaSchedule)\"", "must be \"linear\" or \"scaled_linear\"")
        }
        if PredictionType(rawValue: predictionType) == nil {
            throw c.error("predictionType", "\"\(predictionType)\"", "must be \"epsilon\" or \"v_prediction\"")
        }
    }

    public func jsonString() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }

    public static func parse(json: String, source: String) throws -> DiffusionModelConfig {
        do {
            return try JSONDecoder().decode(DiffusionModelConfig.self, from: Data(json.utf8))
        } catch {
            throw NoiseError.invalidArgument("\(source): bad model config metadata: \(error)")
        }
    }
}

/// The shapes-world text-to-image model: a small CLIP-like text encoder and a small
/// UNet2DConditionModel predicting the noise of x_t.
public final class TextToImageModel {
    public let config: DiffusionModelConfig
    public let params: Parameters
    public let textEncoder: TextEncoder
    public let unet: UNet2DConditionModel
    public var device: Device { params.device }

    /// A freshly initialised model.
    public init(config: DiffusionModelConfig, device: Device, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        params = Parameters(device: device, seed: seed)
        textEncoder = try TextEncoder(params, config: config.text)
        unet = try UNet2DConditionModel(params, config: config.unet)
    }

    /// Loads a model file (config from its `config` metadata). A training checkpoint loads its
    /// EMA weights unless `prefix` selects another set ("" for the raw weights).
    public static func load(_ url: URL, device: Device, prefix: String? = nil) throws -> TextToImageModel {
        try load(SafeTensorsFile.read(url), device: device, prefix: prefix)
    }

    /// Loads a model from a parsed file (`file.source` names it in errors). The config is
    /// validated before anything is allocated; every loaded weight must be finite.
    public static func load(_ file: SafeTensorsFile, device: Device, prefix: String? = nil) throws -> TextToImageModel {
        let prefix = prefix ?? (file.metadata["kind"] == "checkpoint" ? "ema." : "")
        guard let json = file.metadata["config"] else {
            throw NoiseError.invalidArgument("\(file.source): no `config` metadata: not a noisear-gpu diffusion model")
        }
        let config = try DiffusionModelConfig.parse(json: json, source: file.source)
        try config.validate(source: file.source)
        let model = try TextToImageModel(config: config, device: device)
        try model.params.load(file, prefix: prefix, allowUnexpected: !prefix.isEmpty || file.metadata["kind"] == "checkpoint")
        return model
    }

    /// Text hidden states [B, L, D] for prompts; "" is the unconditional (all padding) prompt.
    public func encode(_ prompts: [String]) throws -> Tensor {
        let tokens = prompts.map { $0.isEmpty ? [Int](repeating: PromptTokenizer.padID, count: config.text.maxLength)
            : PromptTokenizer.tokenize($0, length: config.text.maxLength) }
        return try textEncoder(tokens, on: device)
    }

    /// The network's prediction (eps or v, per `config.predictionType`) for x_t [B, 3, 32, 32].
    public func predictNoise(_ x: Tensor, timesteps: [Double], context: Tensor) throws -> Tensor {
        try unet(x, timesteps: timesteps, context: context)
    }
}

/// Progress of a sampling run: (finished steps, total steps); return false to cancel.
public typealias SamplingProgress = (Int, Int) -> Bool

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
    /// Initial noise for image i of a batch from seed + i (Philox, the same on every backend),
    /// shape [count, C, H, W], unscaled (standard normal).
    public static func gaussianNoise(count: Int, shape: [Int], seed: UInt64, on device: Device) throws -> Tensor {
        let per = try (0..<count).map {
            try Tensor.randn([1] + shape, seed: seed &+ UInt64($0), on: device)
        }
        return count == 1 ? per[0] : try Tensor.concat(per, axis: 0)
    }

    /// Denoises standard-normal `noise` [B, C, H, W] for `prompts` (B of them). Step noise of
    /// the stochastic samplers comes from stream seed + i of image i, after its initial noise.
    /// Returns x_0 (images in about [-1, 1]). Throws `invalidArgument` when cancelled.
    public static func sample(model: TextToImageModel, prompts: [String], noise: Tensor, seed: UInt64,
                              settings: SamplingSettings, progress: SamplingProgress = { _, _ in true }) throws -> Tensor {
        let dev = model.device
        return try dev.noGrad {
            let b = noise.shape[0]
            try require(prompts.count == b, "\(prompts.count) prompts for a batch of \(b)")
            try require(settings.steps >= 1, "steps must be at least 1, got \(settings.steps)")
            try require(settings.cfg.isFinite && settings.cfg >= 0, "cfg must be a non-negative number, got \(settings.cfg)")
            var scheduler = try makeScheduler(settings.sampler, config: model.config.schedulerConfig(karras: settings.karras),
                                              steps: settings.steps)
            let context = try guidanceContext(model: model, prompts: prompts, cfg: settings.cfg)
            var x = try noise.scaled(Float(scheduler.initNoiseSigma))
            let per = noise.count / b
            let ts = scheduler.timesteps
            for (i, t) in ts.enumerated() {
                let input = try scheduler.scaleModelInput(x, stepIndex: i)
                let eps = try guidedPrediction(model: model, input, t: t, context: context, cfg: settings.cfg)
                var stepNoise: Tensor? = nil
                if scheduler.needsNoise {
                    let parts = try (0..<b).map {
                        try Tensor.randn([1] + Array(noise.shape.dropFirst()), seed: seed &+ UInt64($0),
                                         offset: UInt64((i + 1) * per), on: dev)
                    }
                    stepNoise = b == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
                }
                x = try scheduler.step(modelOutput: eps, stepIndex: i, sample: x, noise: stepNoise)
                if !progress(i + 1, ts.count) { throw NoiseError.cancelled("sampling stopped at step \(i + 1) of \(ts.count)") }
            }
            return x
        }
    }

    /// The model's prediction for x [B, ...] at timestep t with classifier-free guidance:
    /// `context` is [uncond; cond] (2B rows) when cfg != 1, else the B conditional rows;
    /// uncond + cfg * (cond - uncond) from one batched call.
    public static func guidedPrediction(model: TextToImageModel, _ x: Tensor, t: Double, context: Tensor,
                                        cfg: Double) throws -> Tensor {
        let b = x.shape[0]
        guard cfg != 1 else {
            return try model.predictNoise(x, timesteps: [Double](repeating: t, count: b), context: context)
        }
        let both = try model.predictNoise(Tensor.concat([x, x], axis: 0),
                                          timesteps: [Double](repeating: t, count: 2 * b), context: context)
        let un = try both.slice(axis: 0, 0, b), co = try both.slice(axis: 0, b, 2 * b)
        return try un + (co - un).scaled(Float(cfg))
    }

    /// Prompt states for guidance: [uncond; cond] when cfg != 1, else cond.
    public static func guidanceContext(model: TextToImageModel, prompts: [String], cfg: Double) throws -> Tensor {
        let cond = try model.encode(prompts)
        return cfg != 1 ? try Tensor.concat([model.encode([String](repeating: "", count: prompts.count)), cond], axis: 0) : cond
    }

    /// 8-bit RGB (HWC) of image i of a [B, 3, H, W] batch in [-1, 1].
    public static func rgb(_ images: Tensor) throws -> [[UInt8]] {
        let b = images.shape[0], per = images.count / b
        let all = try images.toArray()
        return try (0..<b).map { i in
            try Scene.rgb(tensor: HostTensor(shape: Array(images.shape.dropFirst()), data: Array(all[(i * per)..<((i + 1) * per)])))
        }
    }
}

/// Where the shipped shapes-world weights are found: the environment variable (`NOISEAR_MODEL`,
/// `NOISEAR_PRIOR`, `NOISEAR_NPNET`), else beside the running executable or beside the loaded
/// library (libnoisear.so): the file itself or the package's resource folder
/// `noisear-gpu_NoiseARGPU.resources/weights/` that the build puts there (copy it along with a
/// binary), else this source tree (`Sources/NoiseARGPU/Models/weights/`).
public enum ShippedModels {
    public static let diffusionFile = "shapes-diffusion.safetensors"
    /// The resource folder SwiftPM builds beside the products (`resources: [.copy("Models/weights")]`).
    public static let resourceFolder = "noisear-gpu_NoiseARGPU.resources/weights"

    /// Folders of the running executable and of the image holding this library (they differ
    /// when a host program loads libnoisear.so).
    static var productFolders: [URL] {
        var out: [URL] = []
        if let exe = Bundle.main.executableURL { out.append(exe.resolvingSymlinksInPath().deletingLastPathComponent()) }
        if let arg0 = CommandLine.arguments.first, !arg0.isEmpty {
            out.append(URL(fileURLWithPath: arg0).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        if let image = imagePath(containing: UInt(bitPattern: #dsohandle)) {
            out.append(URL(fileURLWithPath: image).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        return out
    }

    /// The file mapped at `address` in this process (/proc/self/maps), e.g. libnoisear.so.
    static func imagePath(containing address: UInt) -> String? {
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return nil }
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[5].hasPrefix("/") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else { continue }
            if address >= lo && address < hi { return fields[5...].joined(separator: " ") }
        }
        return nil
    }

    public static func locate(_ file: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                              variable: String = "NOISEAR_MODEL") -> URL? {
        if let p = environment[variable], !p.isEmpty { return URL(fileURLWithPath: p) }
        var candidates: [URL] = []
        for dir in productFolders {
            candidates.append(dir.appendingPathComponent(file))
            candidates.append(dir.appendingPathComponent(resourceFolder).appendingPathComponent(file))
        }
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Models/weights/\(file)"))
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) }
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
}
