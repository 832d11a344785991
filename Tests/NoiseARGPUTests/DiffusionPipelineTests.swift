import Foundation
import NoiseARGPU
import Testing

/// Sampler loop, training checkpoints and the `sample` command.
@Suite(.serialized) struct DiffusionPipelineTests {
    /// A small model of the shipped layout (32x32 RGB), random weights.
    static func smallConfig() -> DiffusionModelConfig {
        var c = DiffusionModelConfig()
        c.unet.blockOutChannels = [8, 16]
        c.unet.attentionLevels = [false, true]
        c.unet.heads = 2
        c.unet.normGroups = 4
        c.text.hiddenSize = 16
        c.text.heads = 2
        c.text.layers = 1
        c.unet.crossAttentionDim = 16
        return c
    }

    static func modelFile() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-small-model-\(getpid()).safetensors")
        if FileManager.default.fileExists(atPath: url.path) { return url }
        let trainer = try DiffusionTrainer(model: TextToImageModel(config: smallConfig(), device: Device.cpuDevice(), seed: 3),
                                           settings: DiffusionTrainingSettings())
        try trainer.exportEMA(url)
        return url
    }

    /// A host with its own embeddings samples any Denoiser without its text encoder: the same
    /// images as from the prompts; guidance without negative embeddings is refused.
    @Test func samplingFromEmbeddings() throws {
        let dev = Device.cpuDevice()
        let m = try TextToImageModel.load(try Self.modelFile(), device: dev)
        let prompts = ["a red circle", "a blue square above a green triangle"]
        let noise = try DiffusionSampler.gaussianNoise(count: 2, shape: [3, 32, 32], seed: 5, on: dev)
        let settings = SamplingSettings(sampler: .dpmpp2m, steps: 3, cfg: 4)
        let fromPrompts = try DiffusionSampler.sample(model: m, prompts: prompts, noise: noise, seed: 5, settings: settings).toArray()
        let cond = try dev.noGrad { try m.encode(prompts) }, uncond = try dev.noGrad { try m.encode(["", ""]) }
        let denoiser: any Denoiser = m
        let context = try DiffusionSampler.guidanceContext(cond: cond, uncond: uncond, cfg: settings.cfg)
        let fromEmbeddings = try DiffusionSampler.sample(model: denoiser, context: context, noise: noise, seed: 5,
                                                         settings: settings).toArray()
        #expect(fromEmbeddings == fromPrompts)
        #expect(throws: NoiseError.self) { try DiffusionSampler.guidanceContext(cond: cond, uncond: nil, cfg: 4) }
        #expect(throws: NoiseError.self) {
            try DiffusionSampler.sample(model: denoiser, context: cond, noise: noise, seed: 5, settings: settings)
        }
    }

    @Test func sameImageOnCPUAndOpenCL() throws {
        let url = try Self.modelFile()
        func run(_ dev: Device, _ kind: SamplerKind) throws -> [[UInt8]] {
            let m = try TextToImageModel.load(url, device: dev)
            let noise = try DiffusionSampler.gaussianNoise(count: 2, shape: [3, 32, 32], seed: 7, on: dev)
            let x = try DiffusionSampler.sample(model: m, prompts: ["a red circle", "a blue square above a green triangle"],
                                                noise: noise, seed: 7, settings: SamplingSettings(sampler: kind, steps: 4, cfg: 3))
            return try DiffusionSampler.rgb(x)
        }
        for kind in [SamplerKind.dpmpp2m, .eulerA] {
            let ref = try run(Device.cpuDevice(), kind)
            try withBackends { backends in
                for be in backends {
                    let got = try run(Device(backend: be), kind)
                    var differing = 0, worst = 0
                    for (a, b) in zip(got.joined(), ref.joined()) where a != b {
                        differing += 1
                        worst = max(worst, abs(Int(a) - Int(b)))
                    }
                    #expect(worst <= 1 && differing <= 12, "[\(be.label)] \(kind): \(differing) values differ, worst by \(worst)")
                }
            }
        }
    }

    @Test func cancellingStopsSampling() throws {
        let dev = Device.cpuDevice()
        let m = try TextToImageModel.load(try Self.modelFile(), device: dev)
        let noise = try DiffusionSampler.gaussianNoise(count: 1, shape: [3, 32, 32], seed: 1, on: dev)
        var calls = 0
        #expect(throws: NoiseError.self) {
            _ = try DiffusionSampler.sample(model: m, prompts: ["a red circle"], noise: noise, seed: 1,
                                            settings: SamplingSettings(steps: 5)) { done, _ in
                calls += 1
                return done < 2
            }
        }
        #expect(calls == 2)
    }

    @Test func resumeEqualsContinuousTraining() throws {
        var settings = DiffusionTrainingSettings()
        settings.batch = 2
        settings.warmup = 2
        let dev = Device.cpuDevice()
        let a = try DiffusionTrainer(model: TextToImageModel(config: Self.smallConfig(), device: dev, seed: 9), settings: settings)
        for _ in 0..<3 { try a.trainStep() }
        let b = try DiffusionTrainer(model: TextToImageModel(config: Self.smallConfig(), device: dev, seed: 9), settings: settings)
        for _ in 0..<2 { try b.trainStep() }
        let ckpt = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-ckpt-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: ckpt) }
        try b.saveCheckpoint(ckpt)
        let c = try DiffusionTrainer(model: TextToImageModel(config: Self.smallConfig(), device: dev, seed: 123), settings: settings)
        try c.resume(from: ckpt)
        #expect(c.step == 2)
        try c.trainStep()
        for name in a.model.params.names {
            #expect(try a.model.params.tensors[name]?.toArray() == c.model.params.tensors[name]?.toArray(), "\(name) differs after resume")
            #expect(try a.ema[name]?.toArray() == c.ema[name]?.toArray(), "EMA \(name) differs after resume")
        }
    }

    @Test func trainingReducesLoss() throws {
        var settings = DiffusionTrainingSettings()
        settings.batch = 8
        settings.warmup = 5
        settings.lr = 3e-3
        let t = try DiffusionTrainer(model: TextToImageModel(config: Self.smallConfig(), device: Device.cpuDevice(), seed: 1), settings: settings)
        var losses: [Float] = []
        for _ in 0..<40 { losses.append(try t.trainStep()) }
        let first = losses.prefix(5).reduce(0, +) / 5, last = losses.suffix(10).reduce(0, +) / 10
        #expect(last < 0.6 * first, "loss \(first) -> \(last)")
    }

    @Test func shippedModelDrawsThePrompt() throws {
        let url = try #require(ShippedModels.locate(ShippedModels.diffusionFile, environment: [:]),
                               "the shipped model is missing")
        let dev = Device.cpuDevice()
        let m = try TextToImageModel.load(url, device: dev)
        let prompt = "a green circle"
        let noise = try DiffusionSampler.gaussianNoise(count: 8, shape: [3, 32, 32], seed: 100, on: dev)
        let x = try DiffusionSampler.sample(model: m, prompts: [String](repeating: prompt, count: 8), noise: noise,
                                            seed: 100, settings: SamplingSettings(steps: 20, cfg: 5))
        let results = try DiffusionSampler.rgb(x).map { try Reward.evaluate(image: $0, prompt: prompt) }
        let mean = results.map(\.score).reduce(0, +) / 8
        let colorRight = results.filter { r in r.facts.contains { $0.kind == .color && $0.holds } }.count
        #expect(mean >= 0.7 && colorRight >= 6, "mean fidelity \(mean), color right in \(colorRight)/8")
    }

    @Test func sampleCommand() throws {
        let model = try Self.modelFile().path
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-sample-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("grid.png").path
        guard let ok = try runCLI(["sample", "--prompt", "a red circle to the left of a blue square", "--model", model,
                                   "--steps", "3", "--batch", "2", "--seed", "5", "--device", "cpu", "--out", out,
                                   "--individual", "--quiet"]) else { return }
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stderr.contains("seed 5"))
        let png = try PNGImage.read(from: URL(fileURLWithPath: out))
        #expect(png.text["prompt"] == "a red circle to the left of a blue square")
        #expect(png.text["seed"] == "5" && png.text["sampler"] == "dpmpp2m" && png.text["prior"] == "gaussian")
        let second = try PNGImage.read(from: dir.appendingPathComponent("grid-1.png"))
        #expect(second.text["seed"] == "6" && second.width == 32)
        let bad: [[String]] = [
            ["--prompt", ""], ["--prompt", "a purple circle"], ["--prompt", "a red circle", "--steps", "0"],
            ["--prompt", "a red circle", "--sampler", "heun"], ["--prompt", "a red circle", "--out", "/nonexistent/dir/x.png"],
            ["--prompt", "a red circle", "--model", "/nonexistent/model.safetensors"],
        ]
        for args in bad {
            guard let r = try runCLI(["sample", "--model", model, "--device", "cpu", "--quiet", "--out", out] + args) else { return }
            #expect(r.status != 0, "\(args) should fail")
            #expect(r.stderr.split(separator: "\n").count <= 2 && r.stderr.lowercased().contains("error"), "\(args): \(r.stderr)")
        }
    }
}
