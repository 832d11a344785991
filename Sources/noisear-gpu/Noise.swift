import ArgumentParser
import Foundation
import NoiseARGPU

/// Reads tensor `name` from a .safetensors file, or the array of a .npy file; NaN or infinite
/// values are refused with the first bad index.
func readTensor(_ path: String, _ name: String, what: String) throws -> HostTensor {
    let url = URL(fileURLWithPath: path)
    let t: HostTensor
    if url.pathExtension.lowercased() == "npy" {
        t = try NPY.read(url)
    } else {
        t = try SafeTensorsFile.read(url, skippingUnsupported: true).tensor(name)
    }
    try t.requireFinite("\(path): \(what) '\(name)'")
    return t
}

/// Writes named tensors: .safetensors keeps all (with metadata); .npy takes the first name.
/// A NaN or infinity in a result is an error (naming the tensor), never a silent output.
func writeTensors(_ tensors: [(String, HostTensor)], to path: String, metadata: [String: String]) throws {
    for (name, t) in tensors { try t.requireFinite("the computed '\(name)' (not written to \(path))") }
    let url = URL(fileURLWithPath: path)
    if url.pathExtension.lowercased() == "npy" {
        guard let first = tensors.first else { return }
        try NPY.write(first.1, to: url)
        if tensors.count > 1 {
            note("\(path): .npy holds only '\(first.0)'; use .safetensors for \(tensors.dropFirst().map(\.0).joined(separator: ", "))")
        }
        return
    }
    var file = SafeTensorsFile(tensors: Dictionary(uniqueKeysWithValues: tensors), metadata: metadata)
    file.source = path
    try file.write(to: url)
}


/// Options shared by `noise` and `score` for the NoiseAR prior.
struct PriorOptions: ParsableArguments {
    @Option(help: "Prior: noisear | npnet (default: what --weights holds, else noisear).") var prior: String?
    @Option(help: "Prior weights: .safetensors or the authors' .pth (default: the shipped shapes-world prior).")
    var weights: String?
    @Option(help: "Attention heads (not stored in the weights; default: the file's config, else 1).") var heads: Int?
    @Option(help: "Prompt embeddings: .safetensors with `prompt_embeds` [B, T, D], or .npy.") var embeds: String?
    @Option(help: "Shapes-world prompts instead of --embeds (repeat for a batch): embedded by the diffusion model's text encoder.")
    var prompt: [String] = []
    @Option(help: "With --prompt: the diffusion model (default: $NOISEAR_MODEL or the shipped one).") var model: String?

    func validate() throws {
        if let prior { _ = try NoisePriorKind.parse(prior, allowed: [.noiseAR, .npnet]) }
        if let heads, heads < 1 { throw CLIError("--heads must be at least 1") }
        if (embeds == nil) == prompt.isEmpty { throw CLIError("pass either --embeds FILE or --prompt TEXT (repeatable)") }
        for p in prompt { _ = try PromptFacts.parse(p) }
    }

    /// The kind named by --prior (checked in `validate`), nil when not given.
    var kind: NoisePriorKind? { prior.flatMap { try? NoisePriorKind.parse($0) } }

    /// The prior: --weights (of the kind its keys say, which --prior, when given, must match),
    /// else the shipped shapes-world prior of the kind.
    func load(on device: Device) throws -> NoisePrior {
        if let weights { return try NoisePrior.load(URL(fileURLWithPath: weights), device: device, expected: kind, heads: heads) }
        return try NoisePrior.shapesWorld(kind ?? .noiseAR, path: nil, device: device)
    }

    /// The prompt embeddings [B, T, D] (NaN or infinity refused).
    func promptEmbeds(on device: Device) throws -> Tensor {
        if let embeds {
            let h = try readTensor(embeds, "prompt_embeds", what: "prompt embeddings [B, T, D]")
            return try Tensor(h.data, shape: h.shape, on: device)
        }
        guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
            throw NoiseError.io("--prompt needs the diffusion model's text encoder: pass --model FILE or set NOISEAR_MODEL")
        }
        let m = try TextToImageModel.load(url, device: device)
        let facts = try prompt.map { try PromptFacts.parse($0).prompt }
        return try device.noGrad { try m.encode(facts) }
    }
}

struct NoiseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noise",
        abstract: "Prompt embeddings in, initial latents out: sample a learned noise prior.",
        discussion: paragraphs("""
            --embeds holds `prompt_embeds` [B, T, D] (.safetensors, or a .npy array); or --prompt (repeatable)
            embeds shapes-world prompts with the diffusion model's text encoder. OUT gets `noise`
            [B, C, S, S] (.safetensors, or .npy). --weights takes .safetensors or the authors' .pth.
            noisear: image b draws its standard normals from Philox stream seed + b (the same numbers on
            every device), or with --rng torch the batch's from PyTorch's CPU generator seeded --seed
            (torch.randn, bit for bit, as diffusers and ComfyUI draw), or replays them from --eps (tensor `eps`, the latent's shape) for exact
            comparison with another implementation.
            npnet: maps an initial Gaussian noise (--init-noise, tensor `noise`, else drawn from the seed
            like noisear's) to the golden noise; --intermediates also writes text_emb, svd_branch,
            residual_branch and swin_features (safetensors output).
            """))

    @OptionGroup var options: DeviceOptions
    @OptionGroup var priorOptions: PriorOptions
    @Option(help: "Seed, 0 ... 2^64 - 1; -1 picks one at random (printed).") var seed = SeedArgument.random
    @Option(help: "Gaussian draws: philox (image b from stream seed + b) or torch (the batch as torch.randn with a CPU generator seeded --seed).")
    var rng = "philox"
    @Option(help: "Sampling temperature (scale of the predicted standard deviation).") var temperature: Float = 0.5
    @Option(help: "Blend with the Gaussian noise of the same draws: 0 Gaussian, 1 prior (spherical).") var strength: Float = 1
    @Option(help: "Standard-normal draws to replay: .safetensors with `eps`, or .npy.") var eps: String?
    @Flag(help: "Re-run the prefix for every patch instead of using the key/value cache.") var uncached = false
    @Option(help: "npnet: the initial noise, .safetensors with `noise` [B, 4, L, L] or .npy (default: drawn from --seed).")
    var initNoise: String?
    @Flag(help: "npnet: also write text_emb, svd_branch, residual_branch and swin_features.") var intermediates = false
    @Option(help: "Output: .safetensors (tensor `noise`) or .npy.") var out: String
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if !(temperature >= 0) || !temperature.isFinite { throw CLIError("--temperature must be a non-negative number") }
        if !(strength >= 0 && strength <= 1) { throw CLIError("--strength must be in [0, 1]") }
        _ = try GaussianSource.parse(rng)
        try OutputFile.checkWritable(URL(fileURLWithPath: out), extensions: ["safetensors", "npy"])
        if priorOptions.kind == .npnet && eps != nil { throw CLIError("--eps is for --prior noisear; npnet takes --init-noise") }
        if priorOptions.kind == .noiseAR && (initNoise != nil || intermediates) {
            throw CLIError("--init-noise and --intermediates are for --prior npnet")
        }
    }

    /// NPNet: initial noise in, golden noise (and optionally the intermediates) out.
    func runNPNet(_ net: NPNet, _ device: Device) throws {
        let text = try priorOptions.promptEmbeds(on: device)
        let b = text.shape.first ?? 0
        let x: Tensor
        var seedNote = "init-noise"
        if let initNoise {
            let h = try readTensor(initNoise, "noise", what: "initial noise [B, 4, L, L]")
            if h.shape != [b] + net.config.latentShape {
                throw NoiseError.shapeMismatch("\(initNoise): noise \(h.shape) does not match \([b] + net.config.latentShape) for \(b) prompts")
            }
            x = try Tensor(h.data, shape: h.shape, on: device)
        } else {
            let usedSeed = Seeds.resolve(seed.value)
            try Seeds.check(usedSeed, count: b)
            note("seed \(usedSeed)")
            seedNote = String(usedSeed)
            x = try DiffusionSampler.gaussianNoise(count: b, shape: net.config.latentShape, seed: usedSeed, on: device,
                                                   rng: try GaussianSource.parse(rng))
        }
        let t0 = Date()
        let o = try device.noGrad { try net(noise: x, promptEmbeds: text) }
        var tensors = [("noise", try o.golden.toHost())]
        if intermediates {
            tensors += [("text_emb", try o.textEmb.toHost()), ("svd_branch", try o.svdBranch.toHost())]
            // (absent when the network was trained without its residual branch)
            if let r = o.residualBranch, let f = o.swinFeatures {
                tensors += [("residual_branch", try r.toHost()), ("swin_features", try f.toHost())]
            }
        }
        try writeTensors(tensors, to: out, metadata: ["prior": "npnet", "seed": seedNote, "rng": rng, "software": "noisear-gpu"])
        print("wrote \(out): noise \(tensors[0].1.shape) in \(String(format: "%.3f", Date().timeIntervalSince(t0))) s on \(device.info.id)")
    }

    func run() throws {
        try runReportingErrors {
            let device = try options.open()
            let prior = try priorOptions.load(on: device)
            guard case .noiseAR(let net) = prior else {
                guard case .npnet(let npnet) = prior else { return }
                if eps != nil { throw CLIError("--eps is for a NoiseAR prior; an NPNet takes --init-noise") }
                return try runNPNet(npnet, device)
            }
            if initNoise != nil || intermediates { throw CLIError("--init-noise and --intermediates are for an NPNet") }
            let text = try priorOptions.promptEmbeds(on: device)
            let b = text.shape.first ?? 0
            var epsTensor: Tensor? = nil
            if let eps {
                let e = try readTensor(eps, "eps", what: "standard-normal draws")
                if e.shape != [b] + net.config.latentShape {
                    throw NoiseError.shapeMismatch("\(eps): eps \(e.shape) does not match the latent \([b] + net.config.latentShape)")
                }
                epsTensor = try Tensor(e.data, shape: e.shape, on: device)
            }
            let usedSeed = Seeds.resolve(seed.value)
            if eps == nil {
                try Seeds.check(usedSeed, count: b)
                note("seed \(usedSeed)")
            }
            let bar = ProgressBar(total: net.config.patches, label: "noise", quiet: quiet)
            let t0 = Date()
            let noise = try NoisePriors.noiseAR(net, text: text, seed: usedSeed, temperature: temperature, strength: strength,
                                                eps: epsTensor, cached: !uncached, rng: try GaussianSource.parse(rng)) { done, _ in
                bar.update(done)
                return true
            }
            let host = try noise.toHost()
            try writeTensors([("noise", host)], to: out, metadata: [
                "prior": "noisear", "seed": eps == nil ? String(usedSeed) : "eps", "rng": eps == nil ? rng : "eps", "temperature": String(temperature),
                "strength": String(strength), "software": "noisear-gpu"])
            print("wrote \(out): noise \(host.shape) in \(String(format: "%.3f", Date().timeIntervalSince(t0))) s on \(device.info.id)")
        }
    }
}

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Exact log-likelihood of given noises under a NoiseAR prior.",
        discussion: paragraphs("""
            OUT gets `mu` and `logvar` (latent-shaped, teacher-forced) and `log_prob` [B]: the sum over all
            elements of the Gaussian log-density of each noise at --temperature (default 1), in nats.
            """))

    @OptionGroup var options: DeviceOptions
    @OptionGroup var priorOptions: PriorOptions
    @Option(help: "Noises: .safetensors with `noise` [B, C, S, S], or .npy.") var noise: String
    @Option(help: "Temperature of the density.") var temperature: Float = 1
    @Option(help: "Output .safetensors (`mu`, `logvar`, `log_prob`).") var out: String

    func validate() throws {
        if let k = priorOptions.kind, k != .noiseAR { throw CLIError("score: --prior \(k.rawValue) has no likelihood; use noisear") }
        if !(temperature > 0) || !temperature.isFinite { throw CLIError("--temperature must be a positive number") }
        try OutputFile.checkWritable(URL(fileURLWithPath: out), extensions: ["safetensors"])
    }

    func run() throws {
        try runReportingErrors {
            let device = try options.open()
            guard case .noiseAR(let net) = try priorOptions.load(on: device) else {
                throw NoiseError.unsupported("an NPNet has no likelihood; score takes a NoiseAR prior")
            }
            let text = try priorOptions.promptEmbeds(on: device)
            let noiseHost = try readTensor(noise, "noise", what: "noises [B, C, S, S]")
            let x = try Tensor(noiseHost.data, shape: noiseHost.shape, on: device)
            let (mu, lv, lp) = try device.noGrad {
                let (mu, lv) = try net.predict(noise: x, text: text)
                return (mu, lv, try net.logProb(noise: x, text: text, temperature: temperature))
            }
            let lpHost = try lp.toHost()
            try writeTensors([("mu", try mu.toHost()), ("logvar", try lv.toHost()), ("log_prob", lpHost)], to: out,
                             metadata: ["prior": "noisear", "temperature": String(temperature), "software": "noisear-gpu"])
            let perDim = lpHost.data.map { String(format: "%.4f", -Double($0) / Double(x.count / max(x.shape[0], 1))) }
            print("wrote \(out): log_prob \(lpHost.data.map { String(format: "%.2f", $0) }.joined(separator: " ")) (NLL per element \(perDim.joined(separator: " ")))")
        }
    }
}
