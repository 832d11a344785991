import Foundation
import NoiseARGPU
import Testing

/// The host-pipeline commands (`noise`, `score`), `collect` and `train prior`, run as a user would.
@Suite(.serialized) struct PriorCommandTests {
    static func scratch(_ name: String) throws -> URL { try scratchDirectory(name) }

    @Test func noiseAndScoreOnTheFixtureWeights() throws {
        guard let fx = fixturesDirectory() else { return }
        let weights = fx.appendingPathComponent("noisear/noisear_heads4_layers2.safetensors")
        let f = try SafeTensorsFile.read(weights)
        let dir = try Self.scratch("noise")
        defer { try? FileManager.default.removeItem(at: dir) }
        let embeds = dir.appendingPathComponent("embeds.safetensors")
        let eps = dir.appendingPathComponent("eps.npy")
        try SafeTensorsFile(tensors: ["prompt_embeds": f.tensor("input.text_emb"), "noise": f.tensor("input.noise")])
            .write(to: embeds)
        try NPY.write(f.tensor("input.sample_eps"), to: eps)
        var hasOpenCL = false
        try withCL { hasOpenCL = !$0.isEmpty }  // (device queries stay under the OpenCL test lock)
        for device in ["cpu", "opencl"] {
            if device == "opencl" && !hasOpenCL { continue }
            // Replayed draws reproduce the authors' autoregressive sample.
            let out = dir.appendingPathComponent("out-\(device).npy")
            guard let r = try runCLI(["noise", "--prior", "noisear", "--weights", weights.path, "--embeds", embeds.path,
                                      "--eps", eps.path, "--out", out.path, "--device", device]) else { return }
            #expect(r.status == 0, "\(r.stderr)")
            let got = try NPY.read(out)
            #expect(got.shape == [2, 4, 32, 32])
            let e = maxRelative(got.data, try f.tensor("output.sample").data)
            #expect(e < 1e-4, "[\(device)] noise --eps vs the fixture's sample: \(e)")
            // Scores match the fixture's teacher-forced outputs.
            let scores = dir.appendingPathComponent("score-\(device).safetensors")
            guard let s = try runCLI(["score", "--prior", "noisear", "--weights", weights.path, "--embeds", embeds.path,
                                      "--noise", embeds.path, "--out", scores.path, "--device", device]) else { return }
            #expect(s.status == 0, "\(s.stderr)")
            let sf = try SafeTensorsFile.read(scores)
            #expect(maxRelative(try sf.tensor("log_prob").data, try f.tensor("output.log_prob").data) < 1e-4)
            #expect(maxRelative(try sf.tensor("mu").data, try f.tensor("output.mu").data) < 1e-4)
            #expect(maxRelative(try sf.tensor("logvar").data, try f.tensor("output.logvar").data) < 1e-4)
        }
        // Seeded: the same seed gives the same noise; strength 0 gives the plain Gaussian noise.
        let a = dir.appendingPathComponent("a.safetensors"), b = dir.appendingPathComponent("b.safetensors")
        let g = dir.appendingPathComponent("g.safetensors")
        for (url, extra) in [(a, [String]()), (b, []), (g, ["--strength", "0"])] {
            guard let r = try runCLI(["noise", "--weights", weights.path, "--embeds", embeds.path, "--seed", "9",
                                      "--out", url.path, "--device", "cpu"] + extra) else { return }
            #expect(r.status == 0, "\(r.stderr)")
        }
        let na = try SafeTensorsFile.read(a).tensor("noise"), nb = try SafeTensorsFile.read(b).tensor("noise")
        #expect(na == nb)
        let gauss = try DiffusionSampler.gaussianNoise(count: 2, shape: [4, 32, 32], seed: 9, on: Device.cpuDevice()).toArray()
        #expect(try SafeTensorsFile.read(g).tensor("noise").data == gauss)
        // One-line errors for bad input.
        for args in [["noise", "--weights", weights.path, "--embeds", dir.appendingPathComponent("missing.safetensors").path,
                      "--out", a.path],
                     ["noise", "--weights", weights.path, "--embeds", eps.path, "--out", a.path],
                     ["noise", "--weights", embeds.path, "--embeds", embeds.path, "--out", a.path],
                     ["noise", "--weights", weights.path, "--embeds", embeds.path, "--out", dir.appendingPathComponent("x.txt").path],
                     ["noise", "--weights", weights.path, "--embeds", embeds.path, "--strength", "2", "--out", a.path]] {
            guard let r = try runCLI(args + ["--device", "cpu"]) else { return }
            #expect(r.status != 0, "\(args) should fail")
            let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("seed") && !$0.hasPrefix("Usage") && !$0.contains("--help") && !$0.isEmpty }
            #expect(lines.count == 1, "\(args): \(r.stderr)")
        }
    }

    @Test func npnetNoiseOnTheFixtureWeights() throws {
        guard let fx = fixturesDirectory() else { return }
        let weights = fx.appendingPathComponent("npnet/npnet_tiny.safetensors")
        let f = try SafeTensorsFile.read(weights, skippingUnsupported: true)
        let dir = try Self.scratch("npnet")
        defer { try? FileManager.default.removeItem(at: dir) }
        let inputs = dir.appendingPathComponent("in.safetensors"), out = dir.appendingPathComponent("out.safetensors")
        try SafeTensorsFile(tensors: ["prompt_embeds": f.tensor("input.prompt_embeds"), "noise": f.tensor("input.noise")])
            .write(to: inputs)
        guard let r = try runCLI(["noise", "--prior", "npnet", "--weights", weights.path, "--embeds", inputs.path,
                                  "--init-noise", inputs.path, "--intermediates", "--out", out.path, "--device", "cpu"])
        else { return }
        #expect(r.status == 0, "\(r.stderr)")
        let o = try SafeTensorsFile.read(out)
        #expect(maxRelative(try o.tensor("noise").data, try f.tensor("output.golden_noise").data) < 1e-3)
        #expect(maxRelative(try o.tensor("swin_features").data, try f.tensor("intermediate.swin_features").data) < 1e-4)
        #expect(maxRelative(try o.tensor("text_emb").data, try f.tensor("intermediate.text_emb").data) < 1e-4)
        #expect(o["svd_branch"] != nil && o["residual_branch"] != nil)
        // Without --init-noise the start is drawn from the seed; npnet has no likelihood to score.
        guard let s = try runCLI(["noise", "--prior", "npnet", "--weights", weights.path, "--embeds", inputs.path,
                                  "--seed", "2", "--out", dir.appendingPathComponent("s.npy").path, "--device", "cpu"]),
              let bad = try runCLI(["score", "--prior", "npnet", "--weights", weights.path, "--embeds", inputs.path,
                                    "--noise", inputs.path, "--out", out.path]) else { return }
        #expect(s.status == 0, "\(s.stderr)")
        #expect(bad.status != 0)
    }

    /// Re-denoise collection: pairs (x_T, x'_T) with both scores; --keep-all keeps every pair.
    @Test func collectRedenoise() throws {
        let dir = try Self.scratch("redenoise")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        guard let r = try runCLI(["collect", "--method", "redenoise", "--out", data, "--limit", "1", "--candidates", "2",
                                  "--steps", "3", "--keep-all", "--device", "cpu"]) else { return }
        #expect(r.status == 0 && r.stdout.contains("kept 2 of 2"), "\(r.stdout) \(r.stderr)")
        let ds = try NoiseDataset.load(URL(fileURLWithPath: data))
        let target = try #require(ds.target), ts = try #require(ds.targetScores)
        #expect(target.shape == ds.noise.shape && ts.count == 2)
        // One step down and back up changes the start a little, not entirely.
        let diff = zip(target.data, ds.noise.data).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +)
        let norm = ds.noise.data.map { Double($0) * Double($0) }.reduce(0, +)
        #expect(diff > 0 && diff < 0.1 * norm, "relative change \(diff / norm)")
        guard let bad = try runCLI(["collect", "--method", "redenoise", "--out", data + "2", "--high-cfg", "1",
                                    "--low-cfg", "2"]) else { return }
        #expect(bad.status != 0)

        // train npnet on the pairs (resumable), then sample from it.
        let ckpt = dir.appendingPathComponent("npnet.ckpt.safetensors").path
        let out = dir.appendingPathComponent("npnet.safetensors").path
        let train = ["train", "npnet", "--data", data, "--embed", "12", "--batch", "2", "--checkpoint", ckpt,
                     "--checkpoint-every", "2", "--device", "cpu"]
        guard let t1 = try runCLI(train + ["--steps", "2"]),
              let t2 = try runCLI(train + ["--steps", "4", "--resume", "--export", out]),
              let t3 = try runCLI(train + ["--steps", "4", "--checkpoint", dir.appendingPathComponent("fresh.safetensors").path])
        else { return }
        #expect(t1.status == 0 && t3.status == 0, "\(t1.stderr) \(t3.stderr)")
        #expect(t2.status == 0 && t2.stderr.contains("resumed from") && t2.stdout.contains("validation MSE"), "\(t2.stderr)")
        let resumed = try SafeTensorsFile.read(URL(fileURLWithPath: ckpt))
        let fresh = try SafeTensorsFile.read(dir.appendingPathComponent("fresh.safetensors"))
        #expect(resumed["alpha"] == fresh["alpha"] && resumed["unet_svd.mlp4.0.weight"] == fresh["unet_svd.mlp4.0.weight"])
        #expect(resumed["alpha"] != nil)
        // The paper's ablations train, export with their config, and sample as trained.
        let ablated = dir.appendingPathComponent("ablated.safetensors").path
        guard let ab = try runCLI(train + ["--steps", "2", "--no-svd-branch", "--no-residual-branch", "--export", ablated,
                                           "--checkpoint", dir.appendingPathComponent("ab.ckpt.safetensors").path])
        else { return }
        #expect(ab.status == 0, "\(ab.stderr)")
        let abNet = try NPNet.load(SafeTensorsFile.read(URL(fileURLWithPath: ablated)), device: Device.cpuDevice())
        #expect(!abNet.config.svdBranch && !abNet.config.residualBranch)
        // The reward filter at training time: pairs of a --keep-all collection whose x'_T
        // scored higher (with 3 sampling steps, possibly none: then a one-line error).
        let improved = zip(ds.scores, ts).filter { $1 > $0 }.count
        guard let filtered = try runCLI(train + ["--steps", "1", "--improved-only",
                                                 "--checkpoint", dir.appendingPathComponent("f.ckpt.safetensors").path])
        else { return }
        if improved > 0 {
            #expect(filtered.status == 0 && filtered.stderr.contains("\(improved) of 2 pairs improved"), "\(filtered.stderr)")
        } else {
            #expect(filtered.status != 0 && filtered.stderr.contains("no pair"), "\(filtered.stderr)")
        }
        // An extension of the collection (other seeds) trains together with it; the same one
        // twice is refused.
        let ext = dir.appendingPathComponent("ext").path
        guard let e = try runCLI(["collect", "--method", "redenoise", "--out", ext, "--limit", "1", "--candidates", "2",
                                  "--steps", "3", "--keep-all", "--device", "cpu", "--seed", "7"]),
              let both = try runCLI(train.map { $0 == data ? "\(data),\(ext)" : $0 == ckpt ? ckpt + "2" : $0 } + ["--steps", "1"]),
              let twice = try runCLI(train.map { $0 == data ? "\(data), \(data)" : $0 == ckpt ? ckpt + "3" : $0 } + ["--steps", "1"])
        else { return }
        #expect(e.status == 0 && both.status == 0, "\(e.stderr) \(both.stderr)")
        let counts = both.stderr.split(separator: "\n").first { $0.contains("training pairs") }.map {
            $0.split(separator: " ").compactMap { Int($0) }
        } ?? []
        #expect(counts.suffix(2).reduce(0, +) == 4, "\(both.stderr)")
        #expect(twice.status != 0 && twice.stderr.contains("both hold"), "\(twice.stderr)")
        // A resume with other ablation switches is refused (the config differs).
        guard let mixed = try runCLI(train + ["--steps", "3", "--resume", "--no-svd-branch"]) else { return }
        #expect(mixed.status != 0)
        let png = dir.appendingPathComponent("np.png").path
        guard let smp = try runCLI(["sample", "--prompt", "a red circle", "--prior", "npnet", "--prior-weights", out,
                                    "--steps", "3", "--out", png, "--device", "cpu", "--seed", "1"]),
              let missing = try runCLI(["sample", "--prompt", "a red circle", "--prior", "npnet", "--out", png],
                                       environment: ["NOISEAR_NPNET": dir.appendingPathComponent("none.safetensors").path])
        else { return }
        #expect(smp.status == 0 && smp.stdout.contains("wrote"), "\(smp.stderr)")
        #expect(missing.status != 0)
        // The shapes-world start: its first three channels are the Gaussian RGB start of the seed.
        let cpu = Device.cpuDevice()
        let four = try ShapesNPNet.start(seeds: [7], on: cpu).toArray()
        #expect(Array(four[0..<3072]) == (try Tensor.randn([1, 3, 32, 32], seed: 7, on: cpu).toArray()))
    }

    @Test func npyRoundTrip() throws {
        var rng = TestRNG(5)
        let t = HostTensor(shape: [2, 3, 5], data: rng.values(30))
        let back = try NPY.parse(NPY.serialized(t), source: "mem")
        #expect(back == t)
        #expect(NPY.serialized(t).count % 64 == 30 * 4 % 64)
        #expect(throws: NoiseError.self) { try NPY.parse(Data([1, 2, 3]), source: "junk") }
    }

    /// collect (best-of-N, resumable) then train prior (resumable) end to end on a tiny budget.
    @Test func collectAndTrainPrior() throws {
        let dir = try Self.scratch("collect")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        let common = ["collect", "--out", data, "--limit", "2", "--candidates", "3", "--steps", "4", "--block", "1",
                      "--threshold", "0", "--device", "cpu", "--shard", "1/3"]
        guard let r = try runCLI(common) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("kept 6 of 6"), "\(r.stdout)")
        // A second run without --resume refuses; with it, nothing is redone.
        guard let again = try runCLI(common) else { return }
        #expect(again.status != 0)
        guard let resumed = try runCLI(common + ["--resume"]) else { return }
        #expect(resumed.status == 0 && resumed.stderr.contains("2 of 2 blocks done"), "\(resumed.stderr)")
        // A block recorded as finished whose shard file is gone is collected again on --resume.
        let block0 = URL(fileURLWithPath: data).appendingPathComponent("shard-1-of-3-block-0000.safetensors")
        let block0Before = try NoiseDataset.read(block0)
        try FileManager.default.removeItem(at: block0)
        guard let redone = try runCLI(common + ["--resume"]) else { return }
        #expect(redone.status == 0 && redone.stderr.contains("block 0 recorded as finished")
                    && redone.stdout.contains("kept 6 of 6"), "\(redone.stderr) \(redone.stdout)")
        let block0After = try NoiseDataset.read(block0)
        #expect(block0After.noise == block0Before.noise && block0After.prompts == block0Before.prompts)
        // A shard file that no longer parses is redone too.
        try Data("not a shard".utf8).write(to: block0)
        guard let redone2 = try runCLI(common + ["--resume"]) else { return }
        #expect(redone2.status == 0 && redone2.stderr.contains("collecting again"), "\(redone2.stderr)")
        #expect(try NoiseDataset.read(block0).noise == block0Before.noise)
        // The folder holds one shard of three: refused as a folder, read as the files given.
        #expect(throws: NoiseError.self) { try NoiseDataset.load(URL(fileURLWithPath: data)) }
        let block1 = URL(fileURLWithPath: data).appendingPathComponent("shard-1-of-3-block-0001.safetensors")
        let ds = try NoiseDataset.load([block0, block1])
        let shardFiles = [block0, block1].map(\.path).joined(separator: ",")
        #expect(ds.count == 6 && ds.noise.shape == [6, 3, 32, 32] && ds.promptEmbeds.shape == [6, 12, 64])
        // Shard 1/3 takes train prompts 1 and 4; candidate seeds are consecutive per prompt.
        #expect(Set(ds.prompts) == Set([PromptSplit.train[1], PromptSplit.train[4]]))
        let first = try #require(ds.seeds.first)
        let gauss = try Tensor.randn([1, 3, 32, 32], seed: first, on: Device.cpuDevice()).toArray()
        #expect(Array(ds.noise.data[0..<3072]) == gauss)

        let ckpt = dir.appendingPathComponent("prior.ckpt.safetensors").path
        let out = dir.appendingPathComponent("prior.safetensors").path
        let train = ["train", "prior", "--data", shardFiles, "--d-model", "16", "--d-ff", "32", "--heads", "2", "--layers", "1",
                     "--checkpoint", ckpt, "--checkpoint-every", "3", "--device", "cpu", "--batch", "4"]
        guard let t1 = try runCLI(train + ["--steps", "3"]) else { return }
        #expect(t1.status == 0, "\(t1.stderr)")
        // Without --resume the checkpoint is never replaced; temporary files of an interrupted
        // checkpoint write (of a process that is gone) are removed at the next start.
        let ckptBytes = try Data(contentsOf: URL(fileURLWithPath: ckpt))
        let stale = dir.appendingPathComponent(".prior.ckpt.safetensors.tmp-999999999-7")
        let staleOld = dir.appendingPathComponent(".prior.ckpt.safetensors.\(UUID().uuidString).tmp")
        try Data("partial".utf8).write(to: stale)
        try Data("partial".utf8).write(to: staleOld)
        guard let refused = try runCLI(train + ["--steps", "5"]) else { return }
        #expect(refused.status != 0 && refused.stderr.contains("--resume") && refused.stderr.contains("--overwrite"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 2, "\(refused.stderr)")  // the clean-up notice and the error
        #expect(try Data(contentsOf: URL(fileURLWithPath: ckpt)) == ckptBytes)
        #expect(!FileManager.default.fileExists(atPath: stale.path) && !FileManager.default.fileExists(atPath: staleOld.path))
        guard let both = try runCLI(train + ["--steps", "3", "--resume", "--overwrite"]) else { return }
        #expect(both.status != 0)
        guard let over = try runCLI(train + ["--steps", "3", "--overwrite"]) else { return }
        #expect(over.status == 0, "\(over.stderr)")
        guard let t2 = try runCLI(train + ["--steps", "6", "--resume", "--export", out]) else { return }
        #expect(t2.status == 0 && t2.stderr.contains("resumed from") && t2.stdout.contains("validation NLL"), "\(t2.stderr)")
        guard let t3 = try runCLI(train + ["--steps", "6", "--checkpoint", dir.appendingPathComponent("fresh.safetensors").path]) else { return }
        #expect(t3.status == 0)
        // Resuming gives the same weights as an uninterrupted run.
        let resumedW = try SafeTensorsFile.read(URL(fileURLWithPath: ckpt))
        let freshW = try SafeTensorsFile.read(dir.appendingPathComponent("fresh.safetensors"))
        #expect(resumedW["ffn_layers.0.0.weight"] == freshW["ffn_layers.0.0.weight"])
        // The exported prior drives `sample --prior noisear`.
        let png = dir.appendingPathComponent("s.png").path
        guard let s = try runCLI(["sample", "--prompt", "a red circle", "--prior", "noisear", "--prior-weights", out,
                                  "--steps", "3", "--out", png, "--device", "cpu", "--seed", "1"]) else { return }
        #expect(s.status == 0 && s.stdout.contains("wrote"), "\(s.stderr)")
    }
}

/// The shipped shapes-world NoiseAR prior.
@Suite struct ShippedPriorTests {
    @Test func shippedPriorSamplesOnEveryBackend() throws {
        guard let url = ShippedModels.locate(NoisePriors.noiseARFile, environment: [:], variable: "NOISEAR_PRIOR"),
              let modelURL = ShippedModels.locate(ShippedModels.diffusionFile, environment: [:]) else {
            Issue.record("the shipped prior or model is missing from the source tree")
            return
        }
        let cpu = Device.cpuDevice()
        let net = try NoiseARNet.load(url, device: cpu)
        #expect(net.config.latentShape == [3, Scene.size, Scene.size])
        let model = try TextToImageModel.load(modelURL, device: cpu)
        let prompts = ["a red circle to the left of a blue square", "a green triangle"]
        let ref = try NoisePriors.noiseAR(net, model: model)(prompts, [5, 6]).toArray()
        #expect(!ref.contains { !$0.isFinite })
        try withBackends { backends in
            for be in backends {
                let dev = Device(backend: be)
                let got = try NoisePriors.noiseAR(NoiseARNet.load(url, device: dev),
                                                  model: TextToImageModel.load(modelURL, device: dev))(prompts, [5, 6]).toArray()
                #expect(nmse(got, ref) < 1e-8, "[\(be.label)] shipped prior NMSE \(nmse(got, ref))")
            }
        }
        // The default `sample --prior noisear` runs on it.
        let png = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-shipped-\(getpid()).png")
        defer { try? FileManager.default.removeItem(at: png) }
        guard let r = try runCLI(["sample", "--prompt", prompts[0], "--prior", "noisear", "--steps", "4", "--seed", "3",
                                  "--out", png.path, "--device", "cpu"]) else { return }
        #expect(r.status == 0 && r.stdout.contains("prompt fidelity"), "\(r.stderr)")
    }

    @Test func shippedNPNetSamplesOnEveryBackend() throws {
        guard let url = ShippedModels.locate(NoisePriors.npnetFile, environment: [:], variable: "NOISEAR_NPNET"),
              let modelURL = ShippedModels.locate(ShippedModels.diffusionFile, environment: [:]) else {
            Issue.record("the shipped NPNet or model is missing from the source tree")
            return
        }
        let cpu = Device.cpuDevice()
        let prompts = ["a blue square above a red triangle", "a yellow circle"]
        let ref = try NoisePriors.npnet(NPNet.load(url, device: cpu), model: TextToImageModel.load(modelURL, device: cpu))(prompts, [3, 9])
        #expect(ref.shape == [2, 3, Scene.size, Scene.size])
        let r = try ref.toArray()
        #expect(!r.contains { !$0.isFinite })
        try withBackends { backends in
            for be in backends {
                let dev = Device(backend: be)
                let got = try NoisePriors.npnet(NPNet.load(url, device: dev),
                                                model: TextToImageModel.load(modelURL, device: dev))(prompts, [3, 9]).toArray()
                #expect(nmse(got, r) < 1e-8, "[\(be.label)] shipped NPNet NMSE \(nmse(got, r))")
            }
        }
        let png = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-npnet-\(getpid()).png")
        defer { try? FileManager.default.removeItem(at: png) }
        guard let s = try runCLI(["sample", "--prompt", prompts[0], "--prior", "npnet", "--steps", "4", "--seed", "3",
                                  "--out", png.path, "--device", "cpu"]) else { return }
        #expect(s.status == 0 && s.stdout.contains("prompt fidelity"), "\(s.stderr)")
    }
}
