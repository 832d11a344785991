import ArgumentParser
import Foundation
import NoiseARGPU

struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Prompt in, image out: sample the shapes-world model from a chosen noise prior.",
        discussion: paragraphs("""
            Image i of a batch uses seed + i (Philox noise: the same on every device). A batch is
            written as one PNG grid; --individual also writes FILE-0.png, FILE-1.png, ...
            The PNG carries the settings (prompt, seed, sampler, steps, cfg, prior, device) as text.
            Model: --model, else $NOISEAR_MODEL, else the shipped shapes-diffusion.safetensors.
            """))

    @OptionGroup var options: DeviceOptions
    @Option(help: "The prompt, e.g. \"a red circle to the left of a blue square\".") var prompt: String
    @Option(help: "Noise prior: gaussian | noisear (the shipped shapes-world NoiseAR, or --prior-weights) | npnet (--prior-weights).")
    var prior = "gaussian"
    @Option(help: "Prior weights: NoiseAR (default: the shipped shapes-noisear.safetensors) or NPNet (from train npnet).")
    var priorWeights: String?
    @Option(help: "NoiseAR sampling temperature.") var temperature: Float = 0.5
    @Option(help: "Blend the prior's noise with the Gaussian noise of the same seed: 0 Gaussian, 1 prior.")
    var strength: Float = 1
    @Option(help: "Seed, 0 ... 2^64 - 1; -1 picks one at random (printed).") var seed = SeedArgument.random
    @Option(help: "Gaussian draws: philox (image i from stream seed + i, the same on every device) or torch (the batch as torch.randn with a CPU generator seeded --seed, as diffusers and ComfyUI draw it).")
    var rng = "philox"
    @Option(help: "Sampler steps.") var steps = 30
    @Option(help: "Classifier-free guidance scale (1 = no guidance).") var cfg = 5.0
    @Option(help: "ddim | dpmpp2m | euler | euler-a | ddpm") var sampler = "dpmpp2m"
    @Flag(help: "Karras sigmas (Euler and DPM-Solver kinds).") var karras = false
    @Option(help: "Images to sample.") var batch = 1
    @Option(help: "Model file (a training checkpoint loads its EMA weights).") var model: String?
    @Flag(help: "With a training checkpoint: use the raw weights instead of the EMA.") var rawWeights = false
    @Option(help: "Sample from this initial noise instead: .safetensors with `noise` [B, 3, 32, 32], or .npy.")
    var initNoise: String?
    @Option(help: "Output PNG.") var out = "sample.png"
    @Flag(help: "Also write one PNG per image.") var individual = false
    @Option(help: "Upscale factor of the written PNG (nearest).") var scale = 1
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if steps < 1 { throw CLIError("--steps must be at least 1") }
        if batch < 1 { throw CLIError("--batch must be at least 1") }
        if !(cfg >= 0) || !cfg.isFinite { throw CLIError("--cfg must be a non-negative number") }
        if scale < 1 || scale > 32 { throw CLIError("--scale must be in 1...32") }
        _ = try NoisePriorKind.parse(prior)
        _ = try GaussianSource.parse(rng)
        if initNoise != nil && prior != "gaussian" { throw CLIError("--init-noise replaces the prior's noise: leave --prior at gaussian") }
        if !(temperature >= 0) || !temperature.isFinite { throw CLIError("--temperature must be a non-negative number") }
        if !(strength >= 0 && strength <= 1) { throw CLIError("--strength must be in [0, 1]") }
        if let s = seed.value { try Seeds.check(s, count: batch) }
        let kind = try SamplerKind.parse(sampler)
        if kind == .ddimInverse { throw CLIError("--sampler ddim-inverse inverts an image to noise; it does not sample (use ddim, dpmpp2m, euler, euler-a or ddpm)") }
        try OutputFile.checkWritable(URL(fileURLWithPath: out), extensions: ["png"])
    }

    /// FILE-i.png for image i (with --individual).
    func individualPath(_ i: Int) -> String { "\((out as NSString).deletingPathExtension)-\(i).png" }

    func run() throws {
        try runReportingErrors {
            let kind = try SamplerKind.parse(sampler)
            let priorKind = try NoisePriorKind.parse(prior)
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL (the shipped \(ShippedModels.diffusionFile) was not found)")
            }
            // Fail on an unwritable output before spending time sampling (touching nothing).
            if individual {
                for i in 0..<batch { try OutputFile.checkWritable(URL(fileURLWithPath: individualPath(i))) }
            }
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device, prefix: rawWeights ? "" : nil)
            var request = ShapesSampleRequest(prompt: prompt, seed: 0, batch: batch,
                                              settings: SamplingSettings(sampler: kind, steps: steps, cfg: cfg, karras: karras),
                                              prior: priorKind, priorPath: priorWeights, temperature: temperature, strength: strength,
                                              rng: try GaussianSource.parse(rng))
            try request.validate()
            try MemoryBudget.check(m.config.unet.estimatedSamplingBytes(batch: batch), on: device, what: "sample --batch \(batch)")
            let source: NoiseSource
            if let initNoise {
                let given = try readTensor(initNoise, "noise", what: "initial noise [B, 3, 32, 32]")
                let want = [batch, 3, Scene.size, Scene.size]
                guard given.shape == want else {
                    throw NoiseError.shapeMismatch("\(initNoise): noise \(given.shape) does not match \(want) for --batch \(batch)")
                }
                let t = try Tensor(given.data, shape: given.shape, on: device)
                source = { _, _ in t }
            } else {
                source = try ShapesSampling.noiseSource(priorKind, path: priorWeights, model: m,
                                                        temperature: temperature, strength: strength, rng: request.rng)
            }
            request.seed = Seeds.resolve(seed.value)
            try Seeds.check(request.seed, count: batch)
            note("seed \(request.seed)")
            let bar = ProgressBar(total: steps, label: "sample", quiet: quiet)
            let result = try ShapesSampling.sample(request, model: m, source: source, progress: { done, _ in
                bar.update(done)
                return true
            })
            let priorText = initNoise != nil ? "init-noise \(URL(fileURLWithPath: initNoise ?? "").lastPathComponent)"
                : priorKind == .noiseAR ? "noisear (temperature \(temperature), strength \(strength))" : priorKind.rawValue
            let text = ["prompt": result.prompt, "seed": String(request.seed), "sampler": kind.rawValue, "steps": String(steps),
                        "cfg": String(cfg), "karras": String(karras), "prior": priorText, "rng": request.rng.rawValue, "device": device.info.id,
                        "model": url.lastPathComponent, "software": "noisear-gpu"]
            let pngs = try result.images.map { try PNGImage(width: result.size, height: result.size, pixels: $0).scaled(by: scale) }
            var grid = try PNGImage.grid(pngs, columns: min(batch, 8), spacing: 2 * scale)
            grid.text = text
            try grid.write(to: URL(fileURLWithPath: out))
            if individual {
                for (i, var p) in pngs.enumerated() {
                    p.text = text.merging(["seed": String(result.seeds[i])]) { _, n in n }
                    try p.write(to: URL(fileURLWithPath: individualPath(i)))
                }
            }
            let scores = result.scores.map { String(format: "%.2f", $0) }.joined(separator: " ")
            print("wrote \(out) (\(batch) image\(batch == 1 ? "" : "s"), seed \(request.seed), prompt fidelity \(scores))")
        }
    }
}
