import Foundation
import NoiseARGPU
import Testing

/// Prior data and fine-tuning: inversion collection, noise statistics, DPO.
@Suite(.serialized) struct PriorDataTests {
    static func normals(_ shape: [Int], seed: UInt64) throws -> HostTensor {
        try Tensor.randn(shape, seed: seed, on: Device.cpuDevice()).toHost()
    }

    @Test func noiseStatisticsOfGaussianAndSmoothNoise() throws {
        let g = try Self.normals([16, 3, 32, 32], seed: 11)
        let s = try NoiseStatistics.of(g)
        #expect(abs(s.mean) < 0.02 && abs(s.std - 1) < 0.02 && abs(s.neighbourCorrelation) < 0.02 && abs(s.kurtosis - 3) < 0.1, "\(s)")
        // A 2x2 box filter correlates neighbours (exactly 0.5 in expectation for a plain Gaussian).
        var smooth = g
        for p in 0..<(16 * 3) {
            for y in 0..<32 {
                for x in 0..<32 {
                    var acc: Float = 0
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] { acc += g.data[p * 1024 + min(y + dy, 31) * 32 + min(x + dx, 31)] }
                    smooth.data[p * 1024 + y * 32 + x] = acc / 2
                }
            }
        }
        let ss = try NoiseStatistics.of(smooth)
        #expect(ss.neighbourCorrelation > 0.4 && ss.neighbourCorrelation < 0.6, "\(ss)")
        // Combining the statistics of two halves gives the whole's mean and std.
        let a = try NoiseStatistics.of(HostTensor(shape: [8, 3, 32, 32], data: Array(smooth.data[..<(8 * 3072)])))
        let b = try NoiseStatistics.of(HostTensor(shape: [8, 3, 32, 32], data: Array(smooth.data[(8 * 3072)...])))
        let c = try #require(NoiseStatistics.combined([a, b]))
        #expect(c.count == 16 && abs(c.mean - ss.mean) < 1e-9 && abs(c.std - ss.std) < 1e-9)
        #expect(NoiseStatistics.combined([]) == nil)
        #expect(throws: NoiseError.self) { _ = try NoiseStatistics.of(HostTensor(shape: [3, 4], data: [Float](repeating: 1, count: 12))) }
        // Rescaling: per-sample std 1 about the sample's own mean (the mean stays).
        var shifted = smooth
        for i in 0..<3072 { shifted.data[i] = shifted.data[i] * 0.2 - 0.3 }
        let r = Inversion.rescaled(shifted)
        let first = try NoiseStatistics.of(HostTensor(shape: [1, 3, 32, 32], data: Array(r.data[..<3072])))
        let before = try NoiseStatistics.of(HostTensor(shape: [1, 3, 32, 32], data: Array(shifted.data[..<3072])))
        #expect(abs(first.std - 1) < 1e-4 && abs(first.mean - before.mean) < 1e-5, "\(first)")
    }

    /// DDIM inversion of a rendered scene all the way, then DDIM sampling back with the same
    /// steps, gives the scene again; a partly noised inversion gives a near-Gaussian noise.
    @Test func inversionRoundTripAndStatistics() throws {
        let dev = Device.cpuDevice()
        let m = try TextToImageModel.load(try #require(ShippedModels.locate(ShippedModels.diffusionFile)), device: dev)
        let prompts = ["a red circle to the left of a blue square", "a yellow triangle"]
        var pixels: [Float] = []
        for (i, p) in prompts.enumerated() { pixels += try Scene.sample(prompt: p, seed: UInt64(40 + i)).renderTensor().data }
        let images = try Tensor(pixels, shape: [2, 3, 32, 32], on: dev)
        let x = try Inversion.invert(model: m, images: images, prompts: prompts, steps: 20, cfg: 1)
        let back = try DiffusionSampler.sample(model: m, prompts: prompts, noise: x, seed: 0,
                                               settings: SamplingSettings(sampler: .ddim, steps: 20, cfg: 1))
        let gaussian = try DiffusionSampler.sample(model: m, prompts: prompts, noise: try Tensor.randn([2, 3, 32, 32], seed: 5, on: dev),
                                                   seed: 0, settings: SamplingSettings(sampler: .ddim, steps: 20, cfg: 1))
        func mse(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(a.count) }
        let roundTrip = mse(try back.toArray(), pixels), other = mse(try gaussian.toArray(), pixels)
        #expect(roundTrip < 0.05 && roundTrip < 0.2 * other, "round trip MSE \(roundTrip), a Gaussian start's \(other)")
        for (i, rgb) in try DiffusionSampler.rgb(back).enumerated() {
            #expect(try Reward.evaluate(image: rgb, prompt: prompts[i]).score == 1)
        }
        // Partly noised (seeded), then inverted: close to N(0, I), and the seeds decide it.
        let half = try Inversion.invert(model: m, images: images, prompts: prompts, steps: 20, cfg: 1, start: 0.5, seeds: [1, 2])
        let again = try Inversion.invert(model: m, images: images, prompts: prompts, steps: 20, cfg: 1, start: 0.5, seeds: [1, 2])
        #expect(try half.toArray() == again.toArray())
        let st = try NoiseStatistics.of(half.toHost())
        #expect(abs(st.std - 1) < 0.15 && abs(st.kurtosis - 3) < 0.5 && abs(st.neighbourCorrelation) < 0.1, "\(st)")
        #expect(throws: NoiseError.self) { _ = try Inversion.invert(model: m, images: images, prompts: prompts, steps: 20, cfg: 1, start: 0.5) }
        #expect(throws: NoiseError.self) { _ = try Inversion.invert(model: m, images: images, prompts: prompts, steps: 20, cfg: 1, start: 1) }
    }

    @Test func collectInversion() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-inversion-\(getpid())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        let args = ["collect", "--method", "inversion", "--out", data, "--limit", "1", "--candidates", "2", "--steps", "3",
                    "--inversion-steps", "6", "--device", "cpu"]
        guard let r = try runCLI(args + ["--keep-all"]) else { return }
        #expect(r.status == 0 && r.stdout.contains("kept 2 of 2") && r.stdout.contains("inverted noise before rescaling: mean"),
                "\(r.stdout) \(r.stderr)")
        let ds = try NoiseDataset.load(URL(fileURLWithPath: data))
        #expect(ds.noise.shape == [2, 3, 32, 32] && ds.scores == [1, 1] && ds.prompts == [PromptSplit.train[0], PromptSplit.train[0]])
        #expect(ds.seeds == [100_000, 100_001])
        let stats = try #require(try NoiseStatistics.recorded(in: URL(fileURLWithPath: data)))
        #expect(stats.count == 2 && abs(stats.std - 1) < 0.3)
        // The same layouts inverted again give the same noises (seeded forward noise).
        let again = dir.appendingPathComponent("again").path
        guard let r2 = try runCLI(["collect", "--method", "inversion", "--out", again, "--limit", "1", "--candidates", "2",
                                   "--steps", "3", "--inversion-steps", "6", "--device", "cpu", "--keep-all"]) else { return }
        #expect(r2.status == 0)
        #expect(try NoiseDataset.load(URL(fileURLWithPath: again)).noise == ds.noise)
        // With the resampling filter at threshold 0 every noise is kept with its image's score.
        let filtered = dir.appendingPathComponent("filtered").path
        guard let f = try runCLI(["collect", "--method", "inversion", "--out", filtered, "--limit", "1", "--candidates", "2",
                                  "--steps", "3", "--inversion-steps", "6", "--threshold", "0", "--normalize", "--device", "cpu"]),
              let rerun = try runCLI(["collect", "--method", "inversion", "--out", filtered, "--limit", "1", "--candidates", "2",
                                      "--steps", "3", "--inversion-steps", "6", "--threshold", "0", "--device", "cpu", "--resume"]),
              let bad = try runCLI(["collect", "--method", "inversion", "--out", data + "3", "--inversion-start", "1"])
        else { return }
        #expect(f.status == 0 && f.stdout.contains("kept 2 of 2"), "\(f.stderr)")
        let fd = try NoiseDataset.load(URL(fileURLWithPath: filtered))
        #expect(fd.scores.allSatisfy { $0 >= 0 && $0 <= 1 })
        let perSample = try NoiseStatistics.of(HostTensor(shape: [1, 3, 32, 32], data: Array(fd.noise.data[..<3072])))
        #expect(abs(perSample.std - 1) < 1e-4)
        // --resume with other settings (no --normalize) is refused.
        #expect(rerun.status != 0 && rerun.stderr.contains("different settings"), "\(rerun.stderr)")
        #expect(bad.status != 0)
    }

    // MARK: DPO

    static func tinyPrior(seed: UInt64, on dev: Device) throws -> NoiseARNet {
        var c = NoiseARConfig()
        c.latentChannels = 3; c.latentSize = 8; c.patchSize = 4
        c.dModel = 16; c.dFF = 24; c.nHeads = 2; c.nLayers = 1; c.headHidden = 16
        c.textDim = 8
        return try NoiseARNet(config: c, device: dev, seed: seed)
    }

    /// Fixed embeddings [B, 3, 8] per prompt (from a hash of the text).
    static func toyEncoder(on dev: Device) -> DPOTrainer.Encoder {
        { prompts in
            var data: [Float] = []
            for p in prompts {
                var h: UInt64 = 1469598103934665603
                for b in p.utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
                data += try Tensor.randn([3, 8], seed: h % 100_000, on: dev).toArray()
            }
            return try Tensor(data, shape: [prompts.count, 3, 8], on: dev)
        }
    }

    /// Toy reward: the mean of channel 0 (higher is better; continuous, so no ties).
    static func toyReward(_ prompts: [String], _ noise: Tensor, _: [UInt64]) throws -> [Double] {
        let v = try noise.toArray(), per = v.count / prompts.count, plane = per / 3
        return (0..<prompts.count).map { i in Double(v[i * per..<(i * per + plane)].reduce(0, +)) / Double(plane) }
    }

    static func toySettings() -> DPOSettings {
        var s = DPOSettings()
        s.rounds = 4; s.promptsPerRound = 6; s.samplesPerPrompt = 4; s.temperature = 1; s.beta = 0.5
        s.lr = 3e-3; s.batch = 12; s.epochs = 3; s.seed = 9
        return s
    }

    static func toyTrainer(_ dev: Device, settings: DPOSettings = toySettings()) throws -> DPOTrainer {
        try DPOTrainer(policy: tinyPrior(seed: 1, on: dev), reference: tinyPrior(seed: 1, on: dev),
                       prompts: (0..<10).map { "prompt \($0)" }, settings: settings, encode: toyEncoder(on: dev), reward: toyReward)
    }

    @Test func preferencePairsSkipTies() {
        let (pairs, ties) = DPOTrainer.preferencePairs(rewards: [1, 0.5, 1, 0, 0.25, 0.25], perPrompt: 3)
        #expect(pairs.map { [$0.winner, $0.loser] } == [[0, 1], [2, 1], [4, 3], [5, 3]])
        #expect(ties == 2)
    }

    @Test func dpoRaisesAToyReward() throws {
        let dev = Device.cpuDevice()
        let t = try Self.toyTrainer(dev)
        let validation = (20..<26).map { "prompt \($0)" }
        let before = try t.meanReward(prompts: validation, seed: 77)
        // At the start the policy is the reference: every margin is 0 and the loss log 2.
        let (z, text, _) = try t.draw(t.policy, prompts: ["a", "b"]) { j, k in UInt64(j * 10 + k) }
        let ref = try t.reference.logProb(noise: z, text: text, temperature: 1)
        let (l0, m0) = try t.loss(winners: z.slice(axis: 0, 0, 4), losers: z.slice(axis: 0, 4, 8), text: text.slice(axis: 0, 0, 4),
                                  loserText: text.slice(axis: 0, 4, 8), refWinners: ref.slice(axis: 0, 0, 4), refLosers: ref.slice(axis: 0, 4, 8))
        let loss0 = try l0.item(), margins0 = try m0.toArray()
        #expect(abs(loss0 - Float(Foundation.log(2.0))) < 1e-5 && margins0.allSatisfy { abs($0) < 1e-3 }, "\(loss0) \(margins0)")
        let first = try t.trainRound()
        #expect(first.pairs == 36 && first.ties == 0 && first.loss < Foundation.log(2) && first.accuracy > 0.5, "\(first)")
        for _ in 1..<4 { try t.trainRound() }
        let after = try t.meanReward(prompts: validation, seed: 77)
        // One draw's reward has a standard deviation of about 0.125 (64 unit normals averaged).
        #expect(after > before + 0.15, "mean reward \(before) -> \(after)")
        #expect(t.round == 4)
        // Bad settings are refused.
        var s = Self.toySettings()
        s.samplesPerPrompt = 1
        #expect(throws: NoiseError.self) { _ = try Self.toyTrainer(dev, settings: s) }
    }

    @Test func dpoResumesBitIdentically() throws {
        let dev = Device.cpuDevice()
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-dpo-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let straight = try Self.toyTrainer(dev)
        try straight.trainRound()
        try straight.trainRound()
        let first = try Self.toyTrainer(dev)
        try first.trainRound()
        try first.saveCheckpoint(url)
        let resumed = try Self.toyTrainer(dev)
        try resumed.resume(from: url)
        #expect(resumed.round == 1)
        try resumed.trainRound()
        let a = try straight.policy.params.hostTensors(), b = try resumed.policy.params.hostTensors()
        #expect(a.keys.sorted() == b.keys.sorted())
        for k in a.keys { #expect(a[k] == b[k], "\(k) differs after resuming") }
        #expect(a != (try Self.tinyPrior(seed: 1, on: dev).params.hostTensors()))
    }

    @Test func trainDPOCommand() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-dpo-cli-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = dir.appendingPathComponent("dpo.ckpt.safetensors").path
        let out = dir.appendingPathComponent("dpo.safetensors").path
        let args = ["train", "dpo", "--prompts", "2", "--samples", "2", "--steps", "2", "--validation-prompts", "1",
                    "--checkpoint", ckpt, "--device", "cpu"]
        guard let r1 = try runCLI(args + ["--rounds", "1"]),
              let again = try runCLI(args + ["--rounds", "1"]),
              let r2 = try runCLI(args + ["--rounds", "2", "--resume", "--export", out]),
              let bad = try runCLI(args + ["--rounds", "1", "--samples", "1", "--overwrite"])
        else { return }
        #expect(r1.status == 0 && r1.stdout.contains("round 1/1: train reward") && r1.stdout.contains("validation reward"), "\(r1.stderr)")
        #expect(again.status != 0 && again.stderr.contains("--resume"), "\(again.stderr)")
        #expect(r2.status == 0 && r2.stderr.contains("resumed from") && r2.stdout.contains("round 2/2") && !r2.stdout.contains("round 1/2"), "\(r2.stderr)")
        #expect(bad.status != 0)
        let prior = try NoisePrior.load(URL(fileURLWithPath: out), device: Device.cpuDevice(), expected: .noiseAR)
        #expect(prior.kind == .noiseAR)
    }
}
