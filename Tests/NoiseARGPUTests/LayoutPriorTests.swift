import Foundation
import NoiseARGPU
import Testing

/// Priors that place objects: the forward-marginal data, the Rao-Blackwellised likelihood, the
/// layout head and its ridge fit, the prompt-independent control and the pair-class prompts.
@Suite struct LayoutPriorTests {
    static func shippedModel(_ dev: Device = Device.cpuDevice()) throws -> TextToImageModel? {
        guard let url = ShippedModels.locate(ShippedModels.diffusionFile, environment: [:]) else {
            Issue.record("the shipped diffusion model is missing from the source tree")
            return nil
        }
        return try TextToImageModel.load(url, device: dev)
    }

    /// How far the start puts the first object's colour on the side the prompt names: the mean,
    /// over the image's two halves along the relation's axis, of the start projected on the
    /// first colour's direction minus the second's (positive: the right way round).
    static func layoutScore(_ x: [Float], prompt: String) throws -> Double {
        let f = try PromptFacts.parse(prompt)
        guard let r = f.relation else { return 0 }
        let n = Scene.size, bg = ForwardMarginal.background
        func dir(_ c: ShapeColor) -> [Double] {
            let v = [c.rgb.red, c.rgb.green, c.rgb.blue].map { Double($0) / 127.5 - 1 - bg }
            let norm = (v.reduce(0) { $0 + $1 * $1 }).squareRoot()
            return v.map { $0 / norm }
        }
        let a = dir(f.objects[0].color), b = dir(f.objects[1].color)
        var first = 0.0, second = 0.0
        for y in 0..<n {
            for xx in 0..<n {
                var proj = 0.0
                for c in 0..<3 { proj += (a[c] - b[c]) * Double(x[c * n * n + y * n + xx]) }
                let coordinate = r.isHorizontal ? xx : y
                let firstHalf = r == .leftOf || r == .above
                if (coordinate < n / 2) == firstHalf { first += proj } else { second += proj }
            }
        }
        return (first - second) / Double(n * n / 2)
    }

    /// A tiny prior with a layout head over 5 prompt tokens of width 12 (3x8x8 latent, 4x4 patches).
    static func tinyNet(_ dev: Device, seed: UInt64) throws -> NoiseARNet {
        var c = NoiseARConfig()
        c.latentChannels = 3; c.latentSize = 8; c.patchSize = 4; c.dModel = 16; c.dFF = 24; c.nHeads = 2; c.nLayers = 1
        c.headHidden = 20; c.textDim = 12; c.layoutTokens = 5
        return try NoiseARNet(config: c, device: dev, seed: seed)
    }

    @Test func ridgeRecoversALinearMap() throws {
        var rng = TestRNG(5)
        let n = 40, p = 6, q = 3
        let w: [Double] = rng.values(q * p).map(Double.init), b: [Double] = [0.5, -0.25, 1.0]
        let x: [Double] = rng.values(n * p).map(Double.init)
        var y = [Double](repeating: 0, count: n * q)
        for r in 0..<n {
            for i in 0..<q {
                var v: Double = b[i]
                for j in 0..<p { v += w[i * p + j] * x[r * p + j] }
                y[r * q + i] = v
            }
        }
        let fit = try Ridge.fit(x: x, y: y, rows: n, features: p, targets: q, lambda: 1e-9)
        let weightError = zip(fit.weight, w).map { (a: Double, b: Double) -> Double in abs(a - b) }.max() ?? 1
        let biasError = zip(fit.bias, b).map { (a: Double, b: Double) -> Double in abs(a - b) }.max() ?? 1
        #expect(weightError < 1e-6 && biasError < 1e-6, "weights off by \(weightError), bias by \(biasError)")
        // A penalty shrinks the weights; bad arguments are refused with a message.
        let shrunk = try Ridge.fit(x: x, y: y, rows: n, features: p, targets: q, lambda: 100)
        func norm(_ v: [Double]) -> Double { v.map { $0 * $0 }.reduce(0, +) }
        #expect(norm(shrunk.weight) < norm(w))
        #expect(throws: NoiseError.self) { try Ridge.fit(x: x, y: y, rows: n, features: p, targets: q, lambda: 0) }
        #expect(throws: NoiseError.self) { try Ridge.fit(x: x, y: [1], rows: n, features: p, targets: q, lambda: 1) }
    }

    @Test func expectedLogProbIsTheLikelihoodAveragedOverTheNoise() throws {
        let dev = Device.cpuDevice()
        let net = try Self.tinyNet(dev, seed: 2)
        var rng = TestRNG(9)
        let x = try Tensor(rng.values(2 * 3 * 8 * 8, lo: -1, hi: 1), shape: [2, 3, 8, 8], on: dev)
        let text = try Tensor(rng.values(2 * 5 * 12, lo: -1, hi: 1), shape: [2, 5, 12], on: dev)
        // At variance 0 with the mean at the inputs it is the exact log-density.
        let exact = try net.logProb(noise: x, text: text).toArray()
        let expected = try net.expectedLogProb(inputs: x, mean: x, variance: 0, text: text).toArray()
        #expect(maxRelative(expected, exact) < 1e-5)
        // A variance v lowers it by v/2 sum exp(-logvar).
        let (_, lv) = try net.predict(noise: x, text: text)
        let lvs = try lv.toArray(), per = lvs.count / 2
        let withVariance = try net.expectedLogProb(inputs: x, mean: x, variance: 0.3, text: text).toArray()
        for i in 0..<2 {
            var drop = 0.0
            for v in lvs[(i * per)..<((i + 1) * per)] {
                let clamped = Double(max(-20, min(10, v)))
                drop += 0.15 * Foundation.exp(-clamped)
            }
            let got = Double(exact[i]) - Double(withVariance[i])
            #expect(abs(got - drop) < 1e-3 * drop, "drop \(got), expected \(drop)")
        }
        #expect(throws: NoiseError.self) { try net.expectedLogProb(inputs: x, mean: x, variance: -1, text: text) }
    }

    @Test func layoutHeadRoundTripsAndChecksItsTokens() throws {
        let dev = Device.cpuDevice()
        let net = try Self.tinyNet(dev, seed: 4)
        var rng = TestRNG(11)
        // A head that moves the mean: give it weights, then write, reload and compare.
        guard let head = net.layoutHead else { Issue.record("no layout head"); return }
        try head.weight.assign(Tensor(rng.values(head.weight.count, lo: -0.2, hi: 0.2), shape: head.weight.shape, on: dev))
        let x = try Tensor(rng.values(3 * 3 * 8 * 8, lo: -1, hi: 1), shape: [3, 3, 8, 8], on: dev)
        let text = try Tensor(rng.values(3 * 5 * 12, lo: -1, hi: 1), shape: [3, 5, 12], on: dev)
        let (mu, _) = try net.predict(noise: x, text: text)
        let dir = try scratchDirectory("layout-head")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("p.safetensors")
        try net.writePrior(to: file, weights: net.params.hostTensors(), step: 1, storage: .f32)
        let back = try NoiseARNet.load(file, device: dev)
        #expect(back.config.layoutTokens == 5)
        #expect(maxRelative(try back.predict(noise: x, text: text).mu.toArray(), try mu.toArray()) < 1e-6)
        // Without the config metadata the head is found from its weight's shape.
        var bare = try SafeTensorsFile.read(file)
        bare.metadata = [:]
        try bare.write(to: dir.appendingPathComponent("bare.safetensors"), as: .f32)
        let inferred = try NoiseARNet.load(dir.appendingPathComponent("bare.safetensors"), device: dev) { $0.nHeads = 2 }
        #expect(inferred.config.layoutTokens == 5)
        // Sampling adds the head's offset too: the mean of a temperature-0 draw moves with it.
        let s = try net.sample(text: text, temperature: 0, seed: 1).toArray()
        #expect(!s.contains { !$0.isFinite })
        // Prompt embeddings with another token count are refused with a message.
        let wrong = try Tensor(rng.values(3 * 7 * 12, lo: -1, hi: 1), shape: [3, 7, 12], on: dev)
        #expect(throws: NoiseError.self) { try net.predict(noise: x, text: wrong) }
        #expect(throws: NoiseError.self) { try net.sample(text: wrong, temperature: 0.5) }
    }

    @Test func pairClassesAndTheConstantControl() throws {
        let held = PromptSplit.pairClasses(PromptSplit.heldOut)
        #expect(held.count == PromptSplit.heldOutPairClasses)
        #expect(PromptSplit.pairClasses(PromptSplit.train).count == 264 - PromptSplit.heldOutPairClasses)
        #expect(held.allSatisfy { $0.contains("to the left of") || $0.contains(" above ") })
        let spread = PromptSplit.spread(PromptSplit.pairClasses(PromptSplit.train), count: 10)
        #expect(spread.count == 10 && Set(spread).count == 10)
        // The control: N(mean, (temperature std)^2) on the Gaussian draws of the same seeds.
        let dev = Device.cpuDevice()
        let g = try Evaluation.gaussian(on: dev)(["a red circle"], [7]).toArray()
        let k = try NoisePriors.constant(mean: -0.05, std: 0.9, temperature: 0.5, on: dev)(["a red circle"], [7]).toArray()
        for (a, b) in zip(g, k) { #expect(abs(b - (-0.05 + 0.45 * a)) < 1e-6) }
    }

    /// The recipe on a tiny world: a prior trained for a few seconds on the forward marginal of two
    /// mirrored prompts places the objects, and the images sampled from it get the relation right
    /// more often than from the prompt-independent control. A trainer that learns nothing fails.
    @Test func twoPromptOverfitPlacesObjects() throws {
        guard let model = try Self.shippedModel() else { return }
        let dev = model.device
        let prompts = ["a red circle to the left of a blue square", "a blue square to the left of a red circle"]
        let data = try ForwardMarginal(model: model, prompts: prompts, gain: 3, seed: 1)
        var c = NoiseARConfig()
        c.latentChannels = 3; c.latentSize = Scene.size; c.patchSize = 8; c.dModel = 32; c.dFF = 64; c.nHeads = 2
        c.nLayers = 1; c.headHidden = 64; c.textDim = model.config.text.hiddenSize; c.layoutTokens = PromptTokenizer.length
        let net = try NoiseARNet(config: c, device: dev, seed: 1)   // the head starts at zero: only training moves it
        var settings = PriorTrainingSettings()
        settings.steps = 150; settings.batch = 16; settings.lr = 3e-3; settings.warmup = 10
        let trainer = try PriorTrainer(net: net, forward: data, validation: nil, settings: settings)
        let first = try trainer.trainStep()
        var last = first
        for _ in 1..<settings.steps { last = try trainer.trainStep() }
        #expect(last < first, "training NLL \(first) -> \(last)")
        // The means of temperature-0 draws put each colour on its side, for both wordings.
        let text = try dev.noGrad { try model.encode(prompts) }
        let mean = try net.sample(text: text, temperature: 0, seed: 3).toArray(), per = mean.count / 2
        for (i, p) in prompts.enumerated() {
            let s = try Self.layoutScore(Array(mean[(i * per)..<((i + 1) * per)]), prompt: p)
            #expect(s > 0.05, "\(p): layout score \(s)")
        }
        // Images: the relation holds more often than from the control with the data's constants.
        let (m, sd) = try data.statistics(count: 256)
        let settingsS = SamplingSettings(sampler: .dpmpp2m, steps: 10, cfg: 5)
        let seeds = (0..<6).map { UInt64(100 + $0) }
        func relationRate(_ source: @escaping NoiseSource) throws -> Double {
            let results: [RewardResult] = try Evaluation.run(model: model, prompts: prompts, seeds: seeds, settings: settingsS,
                                                             batch: 12, noise: source)
            var held = 0, total = 0
            for r in results {
                for f in r.facts where f.kind == RewardFact.Kind.relation {
                    total += 1
                    if f.holds { held += 1 }
                }
            }
            return Double(held) / Double(max(total, 1))
        }
        let prior = try relationRate(NoisePriors.noiseAR(net, model: model, temperature: 0.5))
        let control = try relationRate(NoisePriors.constant(mean: Float(m), std: Float(sd), temperature: 0.5, on: dev))
        #expect(prior >= control + 0.25, "relation rate: prior \(prior), control \(control)")
    }

    /// The layout head's ridge fit reads the layout of prompts it never saw from their token states.
    @Test func layoutHeadFitGeneralises() throws {
        guard let model = try Self.shippedModel() else { return }
        let dev = model.device
        let pairs = PromptSplit.pairClasses(PromptSplit.train)
        let train = PromptSplit.spread(pairs, count: 120)
        let held = Array(PromptSplit.pairClasses(PromptSplit.heldOut).prefix(12))
        var c = NoiseARConfig()
        c.latentChannels = 3; c.latentSize = Scene.size; c.patchSize = 8; c.dModel = 16; c.dFF = 32; c.nHeads = 2
        c.nLayers = 1; c.headHidden = 32; c.textDim = model.config.text.hiddenSize; c.layoutTokens = PromptTokenizer.length
        let net = try NoiseARNet(config: c, device: dev, seed: 2)
        let trainer = try PriorTrainer(net: net, forward: ForwardMarginal(model: model, prompts: train, gain: 3, seed: 1),
                                       validation: ForwardMarginal(model: model, prompts: held, gain: 3, seed: 2),
                                       settings: PriorTrainingSettings())
        let fit = try trainer.fitLayoutHead(renders: 16)
        #expect((fit.validationR2 ?? 0) > 0.5, "validation R^2 \(String(describing: fit.validationR2))")
        // The head alone (the untrained network adds no layout) puts held-out colours on their sides.
        let text = try dev.noGrad { try model.encode(held) }
        let mu = try net.predict(noise: Tensor.zeros([held.count, 3, Scene.size, Scene.size], on: dev), text: text).mu.toArray()
        let per = mu.count / held.count
        var right = 0, counted = 0
        for (i, p) in held.enumerated() {
            let f = try PromptFacts.parse(p)
            guard f.objects[0].color != f.objects[1].color else { continue }
            counted += 1
            if try Self.layoutScore(Array(mu[(i * per)..<((i + 1) * per)]), prompt: p) > 0 { right += 1 }
        }
        #expect(counted > 0 && right == counted, "held-out layouts right: \(right) of \(counted)")
    }

    @Test func trainPriorForwardCommand() throws {
        let dir = try scratchDirectory("train-forward")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("p.safetensors").path
        let base = ["train", "prior", "--forward", "--layout-head", "--layout-gain", "2", "--steps", "4", "--batch", "4",
                    "--d-model", "16", "--d-ff", "32", "--heads", "2", "--layers", "1", "--checkpoint-every", "2",
                    "--checkpoint", dir.appendingPathComponent("c.safetensors").path, "--device", "cpu", "--quiet"]
        guard let r = try runCLI(base + ["--export", out]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("layout head fitted by ridge regression"), "\(r.stderr)")
        let f = try SafeTensorsFile.read(URL(fileURLWithPath: out))
        #expect(f["layout_head.weight"] != nil)
        #expect(f.metadata[NoisePriors.dataMeanKey].flatMap(Double.init) != nil && f.metadata[NoisePriors.dataStdKey].flatMap(Double.init) != nil)
        #expect(f.metadata["training"]?.contains("--forward --layout-gain 2.0") == true)
        // The control takes its constants from the file; a file without them is refused in one line.
        let (m, s) = try NoisePriors.dataStatistics(URL(fileURLWithPath: out))
        #expect(m.isFinite && s > 0.9 && s < 1.1)
        // Misuse is refused with one line and a non-zero status.
        for bad in [["train", "prior", "--steps", "1"], ["train", "prior", "--forward", "--data", dir.path, "--steps", "1"],
                    ["train", "prior", "--data", dir.path, "--layout-gain", "2"], ["train", "prior", "--forward", "--layout-gain", "-1"]] {
            guard let b = try runCLI(bad) else { return }
            #expect(b.status != 0 && b.stderr.split(separator: "\n").count == 1, "\(bad): \(b.stderr)")
        }
    }

    @Test func collectPriorSamplesForNPNet() throws {
        let dir = try scratchDirectory("collect-prior")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("pairs")
        guard let r = try runCLI(["collect", "--method", "prior", "--out", out.path, "--candidates", "2", "--limit", "2",
                                  "--batch", "3", "--device", "cpu", "--quiet"]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        let ds = try NoiseDataset.load(out)
        #expect(ds.count == 4 && ds.target != nil && ds.scores.allSatisfy(\.isNaN))
        // The target is the shipped prior's draw from the start's own standard normals.
        guard let model = try Self.shippedModel(), let url = ShippedModels.locate(NoisePriors.noiseARFile, environment: [:]),
              let target = ds.target else { return }
        let dev = model.device
        let net = try NoiseARNet.load(url, device: dev)
        let x = try Tensor(ds.subset([1]).noise, on: dev)
        let text = try dev.noGrad { try model.encode([ds.prompts[1]]) }
        let want = try NoisePriors.noiseAR(net, text: text, seed: ds.seeds[1], temperature: 0.5, eps: x).toArray()
        let per = want.count
        #expect(maxRelative(Array(target.data[per..<(2 * per)]), want) < 1e-5)
        // Unscored pairs cannot be filtered by improvement: one line, non-zero status.
        guard let t = try runCLI(["train", "npnet", "--data", out.path, "--improved-only", "--steps", "1", "--device", "cpu"]) else { return }
        #expect(t.status != 0 && t.stderr.contains("scored"), "\(t.stderr)")
        // A resumed run with another prior is refused.
        guard let again = try runCLI(["collect", "--method", "prior", "--out", out.path, "--candidates", "2", "--limit", "2",
                                      "--temperature", "0.7", "--resume", "--device", "cpu", "--quiet"]) else { return }
        #expect(again.status != 0 && again.stderr.contains("different settings"), "\(again.stderr)")
    }
}
