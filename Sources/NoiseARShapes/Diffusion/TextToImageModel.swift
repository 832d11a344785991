import Foundation
import NoiseARCore
import NoiseARModels
import CSupport

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
        // A pixel-space model: keep predicted images in range with DDIM's and DDPM's clip_sample.
        // DPM-Solver++ runs without thresholding, as diffusers' default (its images match).
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
public final class TextToImageModel: TextToImageDenoiser {
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

    /// The scheduler configuration of the training schedule (`Denoiser`).
    public func schedulerConfig(karras: Bool) throws -> SchedulerConfig { try config.schedulerConfig(karras: karras) }

    /// The network's prediction (eps or v, per `config.predictionType`) for x_t [B, 3, 32, 32].
    public func predict(_ x: Tensor, timesteps: [Double], context: Tensor) throws -> Tensor {
        try unet(x, timesteps: timesteps, context: context)
    }
}

/// Where the shipped shapes-world weights are found: the environment variable (`NOISEAR_MODEL`,
/// `NOISEAR_PRIOR`, `NOISEAR_NPNET`), else beside the running executable or beside the loaded
/// library (libnoisear.so): the file itself or the package's resource folder
/// `noisear-gpu_NoiseARShapes.resources/weights/` that the build puts there (copy it along with a
/// binary), else this source tree (`Sources/NoiseARShapes/weights/`).
public enum ShippedModels {
    public static let diffusionFile = "shapes-diffusion.safetensors"
    /// The resource folder SwiftPM builds beside the products (`resources: [.copy("weights")]`).
    public static let resourceFolder = "noisear-gpu_NoiseARShapes.resources/weights"

    /// Folders of the running executable and of the image holding this library (they differ
    /// when a host program loads libnoisear.so).
    static var productFolders: [URL] {
        var out: [URL] = []
        if let exe = Bundle.main.executableURL { out.append(exe.resolvingSymlinksInPath().deletingLastPathComponent()) }
        if let arg0 = CommandLine.arguments.first, !arg0.isEmpty {
            out.append(URL(fileURLWithPath: arg0).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        if let image = imagePath(containing: #dsohandle) {
            out.append(URL(fileURLWithPath: image).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        return out
    }

    /// The shared object holding `address` as the dynamic linker knows it (dladdr), e.g.
    /// libnoisear.so when a host program loaded it.
    static func imagePath(containing address: UnsafeRawPointer) -> String? {
        noisear_image_path(address).map { String(cString: $0) }
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
            .appendingPathComponent("weights/\(file)"))
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) }
    }
}

extension DiffusionSampler {
    /// 8-bit RGB (HWC) of image i of a [B, 3, H, W] batch in [-1, 1].
    public static func rgb(_ images: Tensor) throws -> [[UInt8]] {
        let b = images.shape[0], per = images.count / b
        let all = try images.toArray()
        return try (0..<b).map { i in
            try Scene.rgb(tensor: HostTensor(shape: Array(images.shape.dropFirst()), data: Array(all[(i * per)..<((i + 1) * per)])))
        }
    }
}
