import Foundation
import NoiseARGPU
import Testing

/// PyTorch's CPU Gaussian draws, against torch's own output (`torch_rng/` fixtures).
@Suite struct TorchRandomTests {
    struct Case: Decodable {
        var name: String
        var kind: String
        var seed: UInt64
        var shape: [Int]
        var batch_index: [Int]?
    }

    static func fixture() throws -> (SafeTensorsFile, [Case]) {
        let dir = try #require(fixturesDirectory(), "reference fixtures are missing")
        let file = try SafeTensorsFile.read(dir.appendingPathComponent("torch_rng/torch_randn.safetensors"))
        struct Config: Decodable { var cases: [Case] }
        let config = try JSONDecoder().decode(Config.self, from: Data(try #require(file.metadata["config"]).utf8))
        return (file, config.cases)
    }

    @Test func everyFixtureBitForBit() throws {
        let (file, cases) = try Self.fixture()
        #expect(cases.count >= 50)
        var checked = 0
        for c in cases {
            let want = try file.tensor(c.name).data
            let perImage = c.shape.dropFirst().reduce(1, *)
            let got: [Float]
            switch c.kind {
            case "randn": got = TorchRandom.normal(count: c.shape.reduce(1, *), seed: c.seed)
            case "batch_index":
                got = try TorchRandom.comfyNoise(perImage: perImage, batch: c.shape[0], seed: c.seed, batchIndex: c.batch_index)
            default:
                Issue.record("unknown case kind \(c.kind)")
                continue
            }
            let same = got.count == want.count && zip(got, want).allSatisfy { $0.bitPattern == $1.bitPattern }
            #expect(same, "\(c.name): \(zip(got, want).filter { $0.bitPattern != $1.bitPattern }.count) of \(want.count) differ")
            checked += 1
        }
        #expect(checked == cases.count)
    }

    @Test func generatorBasics() throws {
        // The first MT19937 outputs for seed 5489 (the reference engine's default seed).
        var g = TorchGenerator(seed: 5489)
        #expect(g.next32() == 3_499_211_612 && g.next32() == 581_869_302)
        // Only the low 32 bits of the seed count, as in torch.
        #expect(TorchRandom.normal(count: 40, seed: 1) == TorchRandom.normal(count: 40, seed: (1 << 32) + 1))
        // batch_index without indices is one draw of the whole batch; bad indices are refused.
        #expect(try TorchRandom.comfyNoise(perImage: 8, batch: 2, seed: 3, batchIndex: nil) == TorchRandom.normal(count: 16, seed: 3))
        #expect(throws: NoiseError.self) { try TorchRandom.comfyNoise(perImage: 8, batch: 2, seed: 3, batchIndex: [0]) }
        #expect(throws: NoiseError.self) { try TorchRandom.comfyNoise(perImage: 8, batch: 1, seed: 3, batchIndex: [-1]) }
    }

    /// `--rng torch` on every backend: the batch's normals are drawn on the host and uploaded,
    /// so each device holds the fixture's bits; a NoiseAR sample with them equals one with the
    /// same draws given as eps.
    @Test func everyBackendHoldsTheSameBits() throws {
        let (file, cases) = try Self.fixture()
        let c = try #require(cases.first { $0.name == "randn_seed42_3x4x8x8" })
        let want = try file.tensor(c.name).data
        var devices = [Device.cpuDevice()]
        try withBackends { backends in devices += backends.map { Device(backend: $0) } }
        for d in devices {
            let t = try GaussianSource.torch.standardNormal(count: c.shape[0], shape: Array(c.shape.dropFirst()), seed: c.seed, on: d)
            let got = try t.toArray()
            #expect(t.shape == c.shape && zip(got, want).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(d.info.id)")
        }
        // The prior's draws: --rng torch is exactly eps = torch.randn(latent shape).
        let dir = try #require(fixturesDirectory())
        let net = try NoiseARNet.load(dir.appendingPathComponent("noisear/noisear_tiny.safetensors"), device: Device.cpuDevice())
        let text = try Tensor(try SafeTensorsFile.read(dir.appendingPathComponent("noisear/noisear_tiny.safetensors")).tensor("input.text_emb"),
                              on: net.device)
        let b = text.shape[0]
        let eps = try Tensor(TorchRandom.normal(count: b * net.config.latentShape.reduce(1, *), seed: 9),
                             shape: [b] + net.config.latentShape, on: net.device)
        let viaRNG = try NoisePriors.noiseAR(net, text: text, seed: 9, rng: .torch).toArray()
        let viaEps = try NoisePriors.noiseAR(net, text: text, seed: 9, eps: eps).toArray()
        #expect(viaRNG == viaEps)
        #expect(viaRNG != (try NoisePriors.noiseAR(net, text: text, seed: 9).toArray()))
        #expect(throws: NoiseError.self) { try GaussianSource.parse("mt") }
    }

    /// The CLI: `noise --rng torch` is the prior's sample from eps = torch.randn of the latent;
    /// `sample --rng torch` starts from torch.randn of the batch (gaussian prior) and records it.
    @Test func commandsTakeTorchSeeds() throws {
        let dir = try scratchDirectory("torch-rng-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let eps = dir.appendingPathComponent("eps.npy"), a = dir.appendingPathComponent("a.npy"), b = dir.appendingPathComponent("b.npy")
        try NPY.write(HostTensor(shape: [1, 3, 32, 32], data: TorchRandom.normal(count: 3 * 32 * 32, seed: 3)), to: eps)
        let common = ["noise", "--prompt", "a red circle", "--device", "cpu", "--quiet"]
        guard let big = try runCLI(common + ["--rng", "torch", "--seed", "18446744073709551615", "--out", b.path]) else { return }
        #expect(big.status == 0, "\(big.stderr)")  // PyTorch's whole seed range
        guard let r1 = try runCLI(common + ["--rng", "torch", "--seed", "3", "--out", a.path]),
              let r2 = try runCLI(common + ["--eps", eps.path, "--out", b.path]) else { return }
        #expect(r1.status == 0 && r2.status == 0, "\(r1.stderr) \(r2.stderr)")
        #expect(try NPY.read(a).data == NPY.read(b).data)
        let png = dir.appendingPathComponent("s.png").path
        guard let s = try runCLI(["sample", "--prompt", "a red circle", "--rng", "torch", "--seed", "3", "--steps", "2",
                                  "--device", "cpu", "--quiet", "--out", png]) else { return }
        #expect(s.status == 0, "\(s.stderr)")
        #expect(try PNGImage.read(from: URL(fileURLWithPath: png)).text["rng"] == "torch")
        guard let bad = try runCLI(["sample", "--prompt", "a red circle", "--rng", "mt19937", "--out", png]) else { return }
        #expect(bad.status != 0 && bad.stderr.contains("expected philox or torch"), "\(bad.stderr)")
    }
}
