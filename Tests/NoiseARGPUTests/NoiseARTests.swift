import Foundation
import NoiseARGPU
import Testing

/// max |a - b| / max |b| (the fixtures' "relative" tolerance).
func maxRelative(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count, !a.contains(where: { $0.isNaN }) else { return .infinity }
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        num = max(num, abs(Double(x) - Double(y)))
        den = max(den, abs(Double(y)))
    }
    return den == 0 ? num : num / den
}

/// Every device the parity tests run on: the CPU backend and each OpenCL and Vulkan parameter set.
func eachDevice(_ body: (Device, String) throws -> Void) throws {
    try body(Device.cpuDevice(), "cpu")
    try withBackends { backends in
        for be in backends { try body(Device(backend: be), be.label) }
    }
}

@Suite struct NoiseARTests {
    static let fixtureNames = ["noisear_tiny", "noisear_heads4_layers2"]

    static func fixture(_ name: String) throws -> SafeTensorsFile? {
        guard let dir = fixturesDirectory() else { return nil }
        return try SafeTensorsFile.read(dir.appendingPathComponent("noisear/\(name).safetensors"))
    }

    @Test(arguments: fixtureNames) func parityWithTheAuthorsNetwork(_ name: String) throws {
        guard let file = try Self.fixture(name) else { return }
        try eachDevice { dev, tag in
            let net = try NoiseARNet.load(file, device: dev)
            let text = try Tensor(file.tensor("input.text_emb"), on: dev)
            let noise = try Tensor(file.tensor("input.noise"), on: dev)
            let (mu, lv) = try net.predict(noise: noise, text: text)
            let eMu = maxRelative(try mu.toArray(), try file.tensor("output.mu").data)
            let eLv = maxRelative(try lv.toArray(), try file.tensor("output.logvar").data)
            #expect(eMu < 1e-4, "\(name) [\(tag)] mu relative error \(eMu)")
            #expect(eLv < 1e-4, "\(name) [\(tag)] logvar relative error \(eLv)")
            let lp = try net.logProb(noise: noise, text: text, temperature: 1).toArray()
            let eLp = maxRelative(lp, try file.tensor("output.log_prob").data)
            #expect(eLp < 1e-4, "\(name) [\(tag)] log_prob relative error \(eLp): \(lp)")
            let eps = try Tensor(file.tensor("input.sample_eps"), on: dev)
            let want = try file.tensor("output.sample").data
            for cached in [true, false] {
                let s = try net.sample(text: text, temperature: 0.5, eps: eps, cached: cached).toArray()
                let e = maxRelative(s, want)
                #expect(e < 1e-4, "\(name) [\(tag)] sample (cached \(cached)) relative error \(e)")
            }
        }
    }

    static func smallNet(_ dev: Device, heads: Int = 2, textDim: Int? = 12, seed: UInt64 = 3) throws -> NoiseARNet {
        var c = NoiseARConfig()
        c.latentChannels = 3; c.latentSize = 12; c.patchSize = 4
        c.dModel = 16; c.dFF = 24; c.nHeads = heads; c.nLayers = 2; c.headHidden = 20
        c.textDim = textDim
        return try NoiseARNet(config: c, device: dev, seed: seed)
    }

    @Test func cachedAndUncachedSamplingAgree() throws {
        try eachDevice { dev, tag in
            let net = try Self.smallNet(dev)
            let text = try Tensor.randn([2, 5, 12], seed: 9, on: dev)
            let a = try net.sample(text: text, temperature: 0.7, seed: 11, cached: true).toArray()
            let b = try net.sample(text: text, temperature: 0.7, seed: 11, cached: false).toArray()
            #expect(nmse(a, b) < 1e-10, "[\(tag)] cached vs uncached NMSE \(nmse(a, b))")
            // The sample is a draw of the teacher-forced Gaussians: re-scoring it recovers eps.
            let x = try Tensor(a, shape: [2, 3, 12, 12], on: dev)
            let (mu, lv) = try net.predict(noise: x, text: text)
            let eps = try Tensor.concat([Tensor.randn([1, 3, 12, 12], seed: 11, on: dev),
                                         Tensor.randn([1, 3, 12, 12], seed: 12, on: dev)], axis: 0)
            let rebuilt = try (mu + eps * (lv.clamp(-20, 10).scaled(0.5).exp().scaled(0.7))).toArray()
            #expect(nmse(rebuilt, a) < 1e-10, "[\(tag)] sample is not mu + eps tau sigma: NMSE \(nmse(rebuilt, a))")
        }
    }

    @Test func samplesMatchAcrossBackends() throws {
        let cpu = Device.cpuDevice()
        let ref = try Self.smallNet(cpu).sample(text: Tensor.randn([2, 5, 12], seed: 9, on: cpu), seed: 5).toArray()
        try withBackends { backends in
            for be in backends {
                let dev = Device(backend: be)
                let got = try Self.smallNet(dev).sample(text: Tensor.randn([2, 5, 12], seed: 9, on: dev), seed: 5).toArray()
                #expect(nmse(got, ref) < 1e-10, "[\(be.label)] NMSE \(nmse(got, ref))")
            }
        }
    }

    @Test func patchifyIsRasterOrderAndInvertible() throws {
        let dev = Device.cpuDevice()
        let net = try Self.smallNet(dev)
        let n = 2 * 3 * 12 * 12
        let x = try Tensor((0..<n).map { Float($0) }, shape: [2, 3, 12, 12], on: dev)
        let t = try net.patchify(x)
        #expect(t.shape == [2, 9, 48])
        let v = try t.toArray()
        // Token 5 of image 1 is patch (1, 2); its element (c 2, y 3, x 1).
        let (b, tok, c, py, px) = (1, 5, 2, 3, 1)
        let y = 1 * 4 + py, xx = 2 * 4 + px
        #expect(v[(b * 9 + tok) * 48 + (c * 4 + py) * 4 + px] == Float(((b * 3 + c) * 12 + y) * 12 + xx))
        #expect(try net.unpatchify(t).toArray() == x.toArray())
        #expect(throws: NoiseError.self) { try net.patchify(Tensor.zeros([2, 3, 12, 11], on: dev)) }
    }

    /// d log pi / d noise and d log pi / d parameter against central differences (float64 sums).
    @Test func logProbGradients() throws {
        let dev = Device.cpuDevice()
        let net = try Self.smallNet(dev, textDim: nil)
        let text = try Tensor.randn([2, 4, 16], seed: 2, on: dev)
        var noiseValues = try Tensor.randn([2, 3, 12, 12], seed: 4, on: dev).toArray()
        func total(_ values: [Float]) throws -> Double {
            let lp = try net.logProb(noise: Tensor(values, shape: [2, 3, 12, 12], on: dev), text: text, temperature: 0.8)
            return try lp.toArray().reduce(0.0) { $0 + Double($1) }
        }
        let noise = try Tensor(noiseValues, shape: [2, 3, 12, 12], on: dev, requiresGrad: true)
        let lp = try net.logProb(noise: noise, text: text, temperature: 0.8)
        #expect(lp.shape == [2])
        try lp.sum().backward()
        let g = try #require(noise.grad).toArray()
        for i in [0, 17, 200, 431, 800] {
            let h: Float = 1e-2
            let x0 = noiseValues[i]
            noiseValues[i] = x0 + h
            let up = try total(noiseValues)
            noiseValues[i] = x0 - h
            let down = try total(noiseValues)
            noiseValues[i] = x0
            let fd = (up - down) / (2 * Double(h))
            #expect(abs(fd - Double(g[i])) <= 2e-2 * max(1, abs(fd)), "d/dnoise[\(i)]: fd \(fd) vs \(g[i])")
        }
        // A parameter deep in the network receives a gradient too.
        let w = try #require(net.params.tensors["self_attn_layers.0.in_proj_weight"])
        #expect(try #require(w.grad).toArray().contains { $0 != 0 })
    }

    @Test func loaderNamesBadKeys() throws {
        guard let file = try Self.fixture("noisear_tiny") else { return }
        let dev = Device.cpuDevice()
        var broken = file
        broken.tensors["weights.ffn_norm.0.bias"] = nil
        broken.tensors["weights.prediction_head_mu.2.bias"] = HostTensor(shape: [3], data: [1, 2, 3])
        do {
            _ = try NoiseARNet.load(broken, device: dev)
            Issue.record("a broken checkpoint loaded")
        } catch {
            let msg = "\(error)"
            #expect(msg.contains("ffn_norm.0.bias") && msg.contains("prediction_head_mu.2.bias"), "\(msg)")
        }
        // Without metadata the config is inferred from the shapes (heads default to 1).
        var bare = file
        bare.metadata = [:]
        let net = try NoiseARNet.load(bare, device: dev)
        #expect(net.config.latentSize == 32 && net.config.patchSize == 8 && net.config.dModel == 64
                    && net.config.dFF == 128 && net.config.nLayers == 1 && net.config.nHeads == 1)
        let heads = try NoiseARNet.load(bare, device: dev) { $0.nHeads = 4 }
        #expect(heads.config.nHeads == 4)
    }

    @Test func patchSampleKernel() throws {
        var rng = TestRNG(31)
        for (b, c, s, p, gy, gx) in [(2, 3, 12, 4, 1, 2), (1, 4, 32, 8, 3, 0), (3, 1, 10, 5, 0, 1)] {
            let n = c * p * p, lat = b * c * s * s
            for useEps in [false, true] {
                var d = PatchSampleDesc(batch: b, channels: c, size: s, patch: p, gridY: gy, gridX: gx,
                                        seed: 77, temperature: 0.6)
                d.logvarMin = -3
                d.logvarMax = 2
                let lv = rng.values(b * n).map { $0 * 8 - 4 }  // crosses both clamp bounds
                try differential("samplePatch \(b)x\(c)x\(s) P\(p) eps \(useEps)",
                                 inputs: [rng.values(b * n), lv, rng.values(lat)],
                                 outputs: [rng.values(lat), rng.values(b * n)]) { be, i, o in
                    try be.samplePatch(d, mu: i[0], logvar: i[1], eps: useEps ? i[2] : nil, latent: o[0], token: o[1])
                }
            }
        }
        // With mu 0, logvar 0 and temperature 1 the patches reassemble Gaussian noise of seed + b.
        let dev = Device.cpuDevice()
        var c = NoiseARConfig()
        c.latentChannels = 2; c.latentSize = 8; c.patchSize = 4; c.dModel = 8; c.dFF = 8; c.nLayers = 1
        let net = try NoiseARNet(config: c, device: dev)
        for name in ["prediction_head_mu.2", "prediction_head_logvar.2"] {
            for suffix in [".weight", ".bias"] {
                let t = try #require(net.params.tensors[name + suffix])
                try t.assign(Tensor.zeros(t.shape, on: dev))
            }
        }
        let x = try net.sample(text: Tensor.randn([2, 3, 8], seed: 1, on: dev), temperature: 1, seed: 40).toArray()
        let want = try DiffusionSampler.gaussianNoise(count: 2, shape: [2, 8, 8], seed: 40, on: dev).toArray()
        #expect(x == want)
    }
}
