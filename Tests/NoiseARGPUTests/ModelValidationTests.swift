import Foundation
import NoiseARGPU
import Testing

// Hostile model files: configs with zero, negative, non-dividing, mismatched or huge fields, weight
// shapes that defeat config inference, and NaN / Inf weights. Every one must give a one-line
// NoiseError naming the field (or tensor) at fault, never a trap.

/// One config mutation: JSON values (as JSON text) set at key paths ("unet.heads",
/// "swin.depths"), and a fragment the error must contain.
struct ConfigCase: Sendable, CustomStringConvertible {
    var edits: [String: String]
    var expect: String
    var description: String { edits.keys.sorted().map { "\($0)=\(edits[$0] ?? "")" }.joined(separator: ",") }
    init(_ path: String, _ json: String, _ expect: String) {
        edits = [path: json]
        self.expect = expect
    }
    init(_ edits: [String: String], _ expect: String) {
        self.edits = edits
        self.expect = expect
    }
}

/// `file` with its `config` metadata edited and its source renamed to `source`.
private func mutated(_ file: SafeTensorsFile, _ c: ConfigCase, source: String) throws -> SafeTensorsFile {
    let json = try #require(file.metadata["config"])
    var object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    func set(_ dict: inout [String: Any], _ path: ArraySlice<Substring>, _ value: Any) {
        guard let head = path.first else { return }
        let key = String(head)
        if path.count == 1 {
            dict[key] = value
        } else {
            var inner = dict[key] as? [String: Any] ?? [:]
            set(&inner, path.dropFirst(), value)
            dict[key] = inner
        }
    }
    for (path, text) in c.edits {
        let value = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        set(&object, path.split(separator: ".")[...], value)
    }
    var out = file
    out.metadata["config"] = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    out.source = source
    return out
}

/// The description of the NoiseError `body` throws (an issue is recorded when it succeeds or
/// throws something else).
private func loadError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    do {
        try body()
        Issue.record("expected an error, but it loaded", sourceLocation: sourceLocation)
    } catch let error as NoiseError {
        let m = error.description
        #expect(!m.contains("\n"), "multi-line message: \(m)", sourceLocation: sourceLocation)
        return m
    } catch {
        Issue.record("expected a NoiseError, got \(error)", sourceLocation: sourceLocation)
    }
    return ""
}

/// `file` with one value of tensor `name` replaced.
private func poisoned(_ file: SafeTensorsFile, _ name: String, index: Int, _ value: Float) throws -> SafeTensorsFile {
    var out = file
    var t = try #require(file[name], "no tensor \(name)")
    try #require(index < t.data.count)
    t.data[index] = value
    out.tensors[name] = t
    return out
}

// MARK: - diffusion model (UNet + text encoder + schedule)

@Suite struct DiffusionModelValidationTests {
    static let source = "shapes-diffusion.safetensors"

    static let shipped: SafeTensorsFile? = {
        guard let url = ShippedModels.locate(ShippedModels.diffusionFile, environment: [:]) else { return nil }
        return try? SafeTensorsFile.read(url)
    }()

    static let cases: [ConfigCase] = [
        ConfigCase("unet.heads", "0", "\(source): config unet.heads = 0: must be at least 1"),
        ConfigCase("unet.heads", "-4", "config unet.heads = -4: must be at least 1"),
        ConfigCase("unet.heads", "3", "config unet.blockOutChannels[0] = 32: must be a multiple of unet.heads = 3"),
        ConfigCase("unet.normGroups", "0", "config unet.normGroups = 0: must be at least 1"),
        ConfigCase("unet.normGroups", "-8", "config unet.normGroups = -8"),
        ConfigCase("unet.normGroups", "5", "config unet.blockOutChannels[0] = 32: must be a multiple of unet.normGroups = 5"),
        ConfigCase("unet.blockOutChannels", "[]", "config unet.blockOutChannels = a list of 0: must have at least 1 entry"),
        ConfigCase("unet.blockOutChannels", "[32, 64]", "config unet.attentionLevels = a list of 3: must have as many entries as unet.blockOutChannels (2)"),
        ConfigCase("unet.blockOutChannels", "[32, 0, 64]", "config unet.blockOutChannels[1] = 0: must be at least 1"),
        ConfigCase("unet.blockOutChannels", "[32, -64, 64]", "config unet.blockOutChannels[1] = -64"),
        ConfigCase("unet.blockOutChannels", "[36, 64, 64]", "config unet.blockOutChannels[0] = 36: must be a multiple of unet.normGroups = 8"),
        ConfigCase("unet.blockOutChannels", "[32, 64, 1048576]", "config unet.blockOutChannels[2] = 1048576: must be at most 65536"),
        ConfigCase("unet.blockOutChannels", "[32, 64, 65536]", "config unet.blockOutChannels[2]^2 x 8 = 65536 x 65536 x 8 is too large"),
        // 70 levels: today `1 << 69` is 0 and `sampleSize % 0` traps.
        ConfigCase(["unet.blockOutChannels": "[" + Array(repeating: "32", count: 70).joined(separator: ",") + "]",
                    "unet.attentionLevels": "[" + Array(repeating: "false", count: 70).joined(separator: ",") + "]"],
                   "config unet.blockOutChannels = a list of 70: must have at most 8 entries"),
        ConfigCase("unet.attentionLevels", "[true]", "config unet.attentionLevels = a list of 1: must have as many entries as unet.blockOutChannels (3)"),
        ConfigCase("unet.sampleSize", "0", "config unet.sampleSize = 0: must be at least 1"),
        ConfigCase("unet.sampleSize", "30", "config unet.sampleSize = 30: must be a multiple of 4"),
        ConfigCase("unet.sampleSize", "1000000", "config unet.sampleSize = 1000000: must be at most 4096"),
        ConfigCase("unet.inChannels", "0", "config unet.inChannels = 0: must be at least 1"),
        ConfigCase("unet.outChannels", "-3", "config unet.outChannels = -3: must be at least 1"),
        ConfigCase("unet.layersPerBlock", "0", "config unet.layersPerBlock = 0: must be at least 1"),
        ConfigCase("unet.layersPerBlock", "100000", "config unet.layersPerBlock = 100000: must be at most 16"),
        ConfigCase("unet.crossAttentionDim", "0", "config unet.crossAttentionDim = 0: must be at least 1"),
        ConfigCase("unet.crossAttentionDim", "32", "config unet.crossAttentionDim = 32: must equal text.hiddenSize = 64"),
        ConfigCase("text.heads", "0", "config text.heads = 0: must be at least 1"),
        ConfigCase("text.heads", "-1", "config text.heads = -1"),
        ConfigCase("text.heads", "5", "config text.hiddenSize = 64: must be a multiple of text.heads = 5"),
        ConfigCase("text.layers", "-1", "config text.layers = -1: must be at least 1"),
        ConfigCase("text.layers", "0", "config text.layers = 0: must be at least 1"),
        ConfigCase("text.hiddenSize", "0", "config text.hiddenSize = 0: must be at least 1"),
        ConfigCase("text.vocabSize", "0", "config text.vocabSize = 0: must be at least 1"),
        ConfigCase("text.vocabSize", "5", "config text.vocabSize = 5: must be at least 18"),
        ConfigCase("text.vocabSize", "100000000", "config text.vocabSize = 100000000: must be at most 16777215"),
        ConfigCase("text.maxLength", "0", "config text.maxLength = 0: must be at least 1"),
        ConfigCase("numTrainTimesteps", "0", "config numTrainTimesteps = 0: must be at least 2"),
        ConfigCase("betaStart", "-0.5", "config betaStart = -0.5: must lie in (0, 1)"),
        ConfigCase("betaEnd", "2", "config betaEnd = 2.0: must lie in (0, 1)"),
        ConfigCase("betaSchedule", "\"cosine\"", "config betaSchedule = \"cosine\""),
        ConfigCase("predictionType", "\"sample\"", "config predictionType = \"sample\""),
    ]

    @Test(arguments: cases) func badConfigIsNamed(_ c: ConfigCase) throws {
        guard let file = Self.shipped else {
            Issue.record("the shipped model \(ShippedModels.diffusionFile) was not found")
            return
        }
        let bad = try mutated(file, c, source: Self.source)
        let m = loadError { _ = try TextToImageModel.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains(c.expect), "\(m)")
    }

    /// A config built in code is validated the same way (the field is named, no trap).
    @Test func modelsBuiltInCodeAreValidated() throws {
        var c = DiffusionModelConfig()
        c.text.heads = 0
        var m = loadError { _ = try TextToImageModel(config: c, device: Device.cpuDevice()) }
        #expect(m.contains("config text.heads = 0"), "\(m)")
        var u = UNetConfig()
        u.heads = 0
        m = loadError { _ = try UNet2DConditionModel(Parameters(device: Device.cpuDevice()), config: u) }
        #expect(m.contains("config heads = 0"), "\(m)")
        var t = TextEncoderConfig()
        t.heads = 0
        m = loadError { _ = try TextEncoder(Parameters(device: Device.cpuDevice()), config: t) }
        #expect(m.contains("config heads = 0"), "\(m)")
    }

    @Test func nonFiniteWeightsAreNamed() throws {
        guard var file = Self.shipped else {
            Issue.record("the shipped model \(ShippedModels.diffusionFile) was not found")
            return
        }
        file.source = Self.source
        let nan = try poisoned(file, "conv_in.weight", index: 7, .nan)
        var m = loadError { _ = try TextToImageModel.load(nan, device: Device.cpuDevice()) }
        #expect(m.contains("\(Self.source): tensor 'conv_in.weight' holds nan at flat index 7"), "\(m)")
        let inf = try poisoned(file, "text_model.final_layer_norm.weight", index: 63, -.infinity)
        m = loadError { _ = try TextToImageModel.load(inf, device: Device.cpuDevice()) }
        #expect(m.contains("tensor 'text_model.final_layer_norm.weight' holds -inf at flat index 63"), "\(m)")
        // The untouched file still loads.
        _ = try TextToImageModel.load(file, device: Device.cpuDevice())
    }
}

// MARK: - NoiseAR

@Suite struct NoiseARValidationTests {
    static let source = "noisear_tiny.safetensors"

    static func fixture() throws -> SafeTensorsFile? {
        guard let dir = fixturesDirectory() else { return nil }
        return try SafeTensorsFile.read(dir.appendingPathComponent("noisear/noisear_tiny.safetensors"))
    }

    static let cases: [ConfigCase] = [
        ConfigCase("n_heads", "0", "\(source): config n_heads = 0: must be at least 1"),
        ConfigCase("n_heads", "-2", "config n_heads = -2: must be at least 1"),
        ConfigCase("n_heads", "3", "config d_model = 64: must be a multiple of n_heads = 3"),
        ConfigCase("d_model", "0", "config d_model = 0: must be at least 1"),
        ConfigCase("d_model", "1099511627776", "config d_model = 1099511627776: must be at most 65536"),
        ConfigCase("d_ff", "-8", "config d_ff = -8: must be at least 1"),
        ConfigCase("latent_channels", "0", "config latent_channels = 0: must be at least 1"),
        ConfigCase("latent_size", "-32", "config latent_size = -32: must be at least 1"),
        ConfigCase("latent_size", "30", "config latent_size = 30: must be a multiple of patch_size = 8"),
        ConfigCase("patch_size", "0", "config patch_size = 0: must be at least 1"),
        ConfigCase("patch_size", "64", "config patch_size = 64: must be at most 32"),
        ConfigCase("n_layers", "0", "config n_layers = 0: must be at least 1"),
        ConfigCase("n_layers", "100000", "config n_layers = 100000: must be at most 256"),
        ConfigCase("head_hidden", "0", "config head_hidden = 0: must be at least 1"),
        ConfigCase("text_dim", "-3", "config text_dim = -3: must be at least 1"),
        ConfigCase("dropout", "1.5", "config dropout = 1.5: must lie in [0, 1)"),
        ConfigCase("dropout", "-0.25", "config dropout = -0.25: must lie in [0, 1)"),
        ConfigCase(["latent_size": "8192", "patch_size": "256"],
                   "config latent_channels x patch_size^4 x 2 (latent_patch_encoder.0.weight) = 4 x 256 x 256 x 256 x 256 x 2 is too large"),
        ConfigCase(["d_model": "65536", "d_ff": "65536"], "config d_model^2 x 3 (in_proj_weight) = 65536 x 65536 x 3 is too large"),
    ]

    @Test(arguments: cases) func badConfigIsNamed(_ c: ConfigCase) throws {
        guard let file = try Self.fixture() else { return }
        let bad = try mutated(file, c, source: Self.source)
        let m = loadError { _ = try NoiseARNet.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains(c.expect), "\(m)")
    }

    /// Without `config` metadata the config comes from the weight shapes: shapes that would
    /// divide by zero, take the square root of -1 or index an empty shape give errors.
    @Test func badShapesForInferenceAreNamed() throws {
        guard var file = try Self.fixture() else { return }
        file.metadata = [:]
        file.source = Self.source
        let cases: [(String, HostTensor, String)] = [
            ("weights.pos_encoding", HostTensor(shape: [1, 0, 64], data: []), "weights.pos_encoding has shape [1, 0, 64]"),
            ("weights.pos_encoding", HostTensor(shape: [1, 1, 64], data: [Float](repeating: 0, count: 64)),
             "cannot infer patch size / latent size"),
            ("weights.pos_encoding", HostTensor(shape: [1, 18, 4], data: [Float](repeating: 0, count: 72)),
             "cannot infer patch size / latent size"),
            ("weights.latent_patch_encoder.0.weight", HostTensor(shape: [1, 256], data: [Float](repeating: 0, count: 256)),
             "cannot infer patch size / latent size"),
            ("weights.latent_patch_encoder.0.weight", HostTensor(shape: [0, 256], data: []),
             "weights.latent_patch_encoder.0.weight has shape [0, 256]"),
            ("weights.ffn_layers.0.0.weight", HostTensor(shape: [], data: [0]), "weights.ffn_layers.0.0.weight has shape []"),
            ("weights.prediction_head_mu.0.weight", HostTensor(shape: [128], data: [Float](repeating: 0, count: 128)),
             "weights.prediction_head_mu.0.weight has shape [128]"),
        ]
        for (name, tensor, expect) in cases {
            var bad = file
            bad.tensors[name] = tensor
            let m = loadError { _ = try NoiseARNet.load(bad, device: Device.cpuDevice()) }
            #expect(m.contains(Self.source) && m.contains(expect), "\(name) \(tensor.shape): \(m)")
        }
        // An inferred config is validated like a stored one (heads from the caller).
        let m = loadError { _ = try NoiseARNet.load(file, device: Device.cpuDevice()) { $0.nHeads = 0 } }
        #expect(m.contains("\(Self.source) (config inferred from the weight shapes): config n_heads = 0"), "\(m)")
    }

    @Test func nonFiniteWeightsAreNamed() throws {
        guard var file = try Self.fixture() else { return }
        file.source = Self.source
        let nan = try poisoned(file, "weights.self_attn_layers.0.in_proj_weight", index: 5, .nan)
        var m = loadError { _ = try NoiseARNet.load(nan, device: Device.cpuDevice()) }
        #expect(m.contains("\(Self.source): tensor 'weights.self_attn_layers.0.in_proj_weight' holds nan at flat index 5"), "\(m)")
        let inf = try poisoned(file, "weights.prediction_head_mu.2.bias", index: 3, .infinity)
        m = loadError { _ = try NoiseARNet.load(inf, device: Device.cpuDevice()) }
        #expect(m.contains("tensor 'weights.prediction_head_mu.2.bias' holds inf at flat index 3"), "\(m)")
        _ = try NoiseARNet.load(file, device: Device.cpuDevice())
    }
}

// MARK: - NPNet and its Swin

@Suite struct NPNetValidationTests {
    static let source = "npnet_tiny.safetensors"

    static func fixture() throws -> SafeTensorsFile? {
        guard let dir = fixturesDirectory() else { return nil }
        return try SafeTensorsFile.read(dir.appendingPathComponent("npnet/npnet_tiny.safetensors"), skippingUnsupported: true)
    }

    static let cases: [ConfigCase] = [
        ConfigCase("svd_attention_heads", "0", "\(source): config svd_attention_heads = 0: must be at least 1"),
        ConfigCase("svd_attention_heads", "-8", "config svd_attention_heads = -8: must be at least 1"),
        ConfigCase("svd_attention_heads", "5", "config svd_attention_heads = 5: must divide 2 x latent_size = 64"),
        ConfigCase("latent_channels", "3", "config latent_channels = 3: must be 4"),
        ConfigCase("latent_channels", "0", "config latent_channels = 0: must be 4"),
        ConfigCase("latent_size", "0", "config latent_size = 0: must be at least 1"),
        ConfigCase("latent_size", "1000000", "config latent_size = 1000000: must be at most 4096"),
        ConfigCase("text_tokens", "0", "config text_tokens = 0: must be at least 1"),
        ConfigCase("text_dim", "-16", "config text_dim = -16: must be at least 1"),
        ConfigCase(["text_tokens": "65536", "text_dim": "1048576"],
                   "config text_tokens x text_dim x 2 x latent_channels (embeeding.linear.weight) = 65536 x 1048576 x 2 x 4 is too large"),
        ConfigCase("adagroupnorm_groups", "0", "config adagroupnorm_groups = 0: must be at least 1"),
        ConfigCase("adagroupnorm_groups", "3", "config adagroupnorm_groups = 3: must divide latent_channels = 4"),
        ConfigCase("adagroupnorm_eps", "-1", "config adagroupnorm_eps = -1.0: must be a finite number > 0"),
        ConfigCase("adagroupnorm_eps", "0", "config adagroupnorm_eps = 0.0: must be a finite number > 0"),
        ConfigCase("swin_layernorm_eps", "0", "config swin.layer_norm_eps = 0.0: must be a finite number > 0"),
        // (the top-level swin_layernorm_eps, when present, overrides swin.layer_norm_eps)
        ConfigCase(["swin.layer_norm_eps": "-0.5", "swin_layernorm_eps": "null"], "config swin.layer_norm_eps = -0.5"),
        ConfigCase("swin.depths", "[]", "config swin.depths = a list of 0: must have at least 1 entry"),
        ConfigCase("swin.depths", "[2, 2]", "config swin.num_heads = a list of 4: must have as many entries as swin.depths (2)"),
        ConfigCase("swin.depths", "[2, 2, 0, 2]", "config swin.depths[2] = 0: must be at least 1"),
        ConfigCase("swin.depths", "[2, 2, -2, 2]", "config swin.depths[2] = -2: must be at least 1"),
        ConfigCase(["swin.depths": "[2, 2, 2, 2, 2]", "swin.num_heads": "[1, 2, 3, 6, 12]"],
                   "config swin.depths = a list of 5: stage 3 would see a 7x7 map"),
        ConfigCase("swin.num_heads", "[1, 2, 0, 6]", "config swin.num_heads[2] = 0: must be at least 1"),
        ConfigCase("swin.num_heads", "[1, 2, 5, 6]", "config swin.num_heads[2] = 5: must divide the stage 2 width embed_dim x 2^2 = 96"),
        ConfigCase("swin.window_size", "0", "config swin.window_size = 0: must be at least 1"),
        ConfigCase("swin.window_size", "5", "config swin.window_size = 5: must divide the stage 0 map size 56"),
        ConfigCase("swin.window_size", "100000", "config swin.window_size = 100000: must be at most 64"),
        ConfigCase("swin.patch_size", "0", "config swin.patch_size = 0: must be at least 1"),
        ConfigCase("swin.patch_size", "5", "config swin.img_size = 224: must be a multiple of swin.patch_size = 5"),
        ConfigCase("swin.img_size", "0", "config swin.img_size = 0: must be at least 1"),
        ConfigCase("swin.embed_dim", "0", "config swin.embed_dim = 0: must be at least 1"),
        ConfigCase("swin.embed_dim", "1000000", "config swin.embed_dim = 1000000: must be at most 65536"),
        ConfigCase("swin.embed_dim", "60000",
                   "config swin.mlp_ratio x (swin.embed_dim x 2^0)^2 (stage 0 mlp.fc1.weight) = 4 x 60000 x 60000 is too large"),
        ConfigCase("swin.mlp_ratio", "0", "config swin.mlp_ratio = 0: must be at least 1"),
        ConfigCase("swin.in_chans", "-1", "config swin.in_chans = -1: must be at least 1"),
    ]

    @Test(arguments: cases) func badConfigIsNamed(_ c: ConfigCase) throws {
        guard let file = try Self.fixture() else { return }
        let bad = try mutated(file, c, source: Self.source)
        let m = loadError { _ = try NPNet.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains(c.expect), "\(m)")
    }

    /// Weight shapes and key names that would overflow while inferring the config.
    @Test func badShapesForInferenceAreNamed() throws {
        guard var file = try Self.fixture() else { return }
        file.metadata = [:]
        file.source = Self.source
        var bad = file
        bad.tensors["weights.unet_embedding.upconv.weight"] = HostTensor(shape: [0, 1 << 62, 1, 1], data: [])
        var m = loadError { _ = try NPNet.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains("weights.unet_embedding.upconv.weight has shape [0, 4611686018427387904, 1, 1]"), "\(m)")

        bad = file
        bad.tensors["weights.unet_embedding.swin.layers.0.blocks.0.attn.relative_position_bias_table"] =
            HostTensor(shape: [48, 1], data: [Float](repeating: 0, count: 48))
        m = loadError { _ = try NPNet.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains("relative_position_bias_table [48, 1] is not [(2w-1)^2, heads]"), "\(m)")

        // An old-timm layout (downsample at the end of a stage) with a stage number of Int.max.
        bad = file
        bad.tensors["weights.unet_embedding.swin.layers.0.downsample.reduction.weight"] = HostTensor(shape: [1], data: [0])
        bad.tensors["weights.unet_embedding.swin.layers.9223372036854775807.downsample.norm.weight"] = HostTensor(shape: [1], data: [0])
        m = loadError { _ = try NPNet.load(bad, device: Device.cpuDevice()) }
        #expect(m.contains(Self.source), "\(m)")

        // An inferred config is validated like a stored one.
        m = loadError { _ = try NPNet.load(file, device: Device.cpuDevice()) { $0.svdAttentionHeads = 0 } }
        #expect(m.contains("\(Self.source) (config inferred from the weight shapes): config svd_attention_heads = 0"), "\(m)")
    }

    @Test func nonFiniteWeightsAreNamed() throws {
        guard var file = try Self.fixture() else { return }
        file.source = Self.source
        let nan = try poisoned(file, "weights.unet_svd.mlp3.0.weight", index: 10, .nan)
        var m = loadError { _ = try NPNet.load(nan, device: Device.cpuDevice()) }
        #expect(m.contains("\(Self.source): tensor 'weights.unet_svd.mlp3.0.weight' holds nan at flat index 10"), "\(m)")
        let inf = try poisoned(file, "weights.alpha", index: 0, .infinity)
        m = loadError { _ = try NPNet.load(inf, device: Device.cpuDevice()) }
        #expect(m.contains("tensor 'weights.alpha' holds inf at flat index 0"), "\(m)")
        let swin = try poisoned(file, "weights.unet_embedding.swin.layers.3.blocks.1.mlp.fc2.weight", index: 100, -.infinity)
        m = loadError { _ = try NPNet.load(swin, device: Device.cpuDevice()) }
        #expect(m.contains("tensor 'weights.unet_embedding.swin.layers.3.blocks.1.mlp.fc2.weight' holds -inf at flat index 100"), "\(m)")
        _ = try NPNet.load(file, device: Device.cpuDevice())
    }
}

// MARK: - parameter store

@Suite struct ParameterLimitTests {
    /// Shapes whose element count overflows, or would allocate terabytes, are refused before
    /// any memory is allocated.
    @Test func hugeParametersAreRefused() throws {
        let p = Parameters(device: Device.cpuDevice())
        for shape in [[Int.max, 2], [1 << 32, 1 << 32], [1 << 20, 1 << 20], [0, 4], [-1, 4]] {
            let m = loadError { _ = try p.make("w", shape, .zeros) }
            #expect(m.contains("parameter w"), "\(shape): \(m)")
        }
        _ = try p.make("w", [4, 4], .zeros)
        #expect(p.count == 16)
    }

    @Test func firstNonFiniteFindsTheIndex() {
        var data = [Float](repeating: 1, count: 10_000)
        #expect(HostTensor(shape: [10_000], data: data).firstNonFinite == nil)
        data[9_999] = .nan
        data[5_000] = -.infinity
        #expect(HostTensor(shape: [10_000], data: data).firstNonFinite == 5_000)
        data[3] = .infinity
        #expect(HostTensor(shape: [10_000], data: data).firstNonFinite == 3)
        #expect(HostTensor(shape: [0], data: []).firstNonFinite == nil)
    }
}
