import Foundation
import NoiseARGPU
import Testing

@Suite struct NPNetTests {
    static func fixture() throws -> SafeTensorsFile? {
        guard let dir = fixturesDirectory() else { return nil }
        return try SafeTensorsFile.read(dir.appendingPathComponent("npnet/npnet_tiny.safetensors"),
                                        skippingUnsupported: true)
    }

    static func check(_ t: Tensor, _ file: SafeTensorsFile, _ key: String, _ tol: Double, _ tag: String) throws {
        let want = try file.tensor(key)
        #expect(t.shape == want.shape, "[\(tag)] \(key) shape \(t.shape) vs \(want.shape)")
        let e = maxRelative(try t.toArray(), want.data)
        print("NPNet [\(tag)] \(key): relative error \(e)")
        #expect(e < tol, "[\(tag)] \(key) relative error \(e) (tolerance \(tol))")
    }

    @Test func parityWithTheAuthorsNetwork() throws {
        guard let file = try Self.fixture() else { return }
        try eachDevice { dev, tag in
            let net = try NPNet.load(file, device: dev)
            let noise = try Tensor(file.tensor("input.noise"), on: dev)
            let prompt = try Tensor(file.tensor("input.prompt_embeds"), on: dev)
            let u = try Tensor(file.tensor("intermediate.svd_U"), on: dev)
            let s = try Tensor(file.tensor("intermediate.svd_S"), on: dev)
            let vh = try Tensor(file.tensor("intermediate.svd_Vh"), on: dev)
            try dev.noGrad {
                let out = try net(noise: noise, promptEmbeds: prompt, svdFactors: (u, s, vh))
                try Self.check(out.textEmb, file, "intermediate.text_emb", 1e-4, tag)
                try Self.check(#require(out.swinFeatures), file, "intermediate.swin_features", 1e-4, tag)
                try Self.check(#require(out.residualBranch), file, "intermediate.residual_branch", 1e-4, tag)
                try Self.check(out.svdBranch, file, "intermediate.svd_branch", 1e-5, tag)
                try Self.check(out.golden, file, "output.golden_noise", 1e-4, tag)
                // With our own SVD (signs of singular vector pairs may differ from LAPACK's).
                let own = try net(noise: noise, promptEmbeds: prompt)
                try Self.check(own.svdBranch, file, "intermediate.svd_branch", 1e-3, tag + " own svd")
                try Self.check(own.golden, file, "output.golden_noise", 1e-3, tag + " own svd")
            }
        }
    }

    /// The paper's ablations: without the SVD branch the noise takes its place; without the
    /// residual branch its term is gone (and the Swin never runs).
    @Test func ablationsLeaveOutTheirBranch() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        let full = try NPNet.load(file, device: dev)
        let noSVD = try NPNet.load(file, device: dev) { $0.svdBranch = false }
        let noResidual = try NPNet.load(file, device: dev) { $0.residualBranch = false }
        let noise = try Tensor(file.tensor("input.noise"), on: dev)
        let prompt = try Tensor(file.tensor("input.prompt_embeds"), on: dev)
        try dev.noGrad {
            let f = try full(noise: noise, promptEmbeds: prompt)
            let a = try noSVD(noise: noise, promptEmbeds: prompt)
            let b = try noResidual(noise: noise, promptEmbeds: prompt)
            #expect(try a.svdBranch.toArray() == noise.toArray())
            let residual = try #require(f.residualBranch)
            // full - noSVD = svd - noise; full - noResidual = beta residual.
            let d1 = try (f.golden - a.golden).toArray(), e1 = try (f.svdBranch - noise).toArray()
            #expect(maxRelative(d1, e1) < 1e-4)
            #expect(b.residualBranch == nil && b.swinFeatures == nil)
            let beta = try full.params.tensors["beta"].map { try $0.item() } ?? 0
            let d2 = try (f.golden - b.golden).toArray(), e2 = try (residual * beta).toArray()
            #expect(maxRelative(d2, e2) < 1e-3, "beta \(beta)")
        }
        // The switches are part of the config JSON (and absent keys mean the authors' network).
        var c = full.config
        c.residualBranch = false
        let back = try JSONDecoder().decode(NPNetConfig.self, from: Data(c.jsonString().utf8))
        #expect(back == c && back.svdBranch && !back.residualBranch)
        #expect(try JSONDecoder().decode(NPNetConfig.self, from: Data("{}".utf8)).residualBranch)
    }

    @Test func configFromMetadataAndFromWeightsAgree() throws {
        guard let file = try Self.fixture() else { return }
        guard let meta = try NPNetConfig.fromMetadata(file) else {
            Issue.record("fixture has no config metadata")
            return
        }
        let inferred = try NPNetConfig.inferred(from: file, prefix: "weights.")
        #expect(meta.latentSize == 32 && meta.swin.depths == [2, 2, 2, 2] && meta.swin.numHeads == [1, 2, 3, 6])
        #expect(meta.swin.embedDim == 24 && meta.adaGroupNormEps == 1e-6 && meta.svdAttentionHeads == 8)
        #expect(inferred.latentSize == meta.latentSize && inferred.latentChannels == meta.latentChannels)
        #expect(inferred.swin == meta.swin, "\(inferred.swin) vs \(meta.swin)")
        #expect(inferred.textFeatures == meta.textFeatures)
        // Loading without the metadata gives the same network.
        var bare = file
        bare.metadata = [:]
        let dev = Device.cpuDevice()
        let a = try NPNet.load(file, device: dev), b = try NPNet.load(bare, device: dev)
        let noise = try Tensor(file.tensor("input.noise"), on: dev)
        let prompt = try Tensor(file.tensor("input.prompt_embeds"), on: dev)
        let ga = try a.golden(noise: noise, promptEmbeds: prompt).toArray()
        let gb = try b.golden(noise: noise, promptEmbeds: prompt).toArray()
        #expect(ga == gb)
    }

    @Test func tilingRoundTripsAndMatchesTheFixtureSVD() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        let net = try NPNet.load(file, device: dev)
        let noise = try Tensor(file.tensor("input.noise"), on: dev)
        let m = try net.tiled(noise)
        #expect(try net.untiled(m).toArray() == noise.toArray())
        let u = try Tensor(file.tensor("intermediate.svd_U"), on: dev)
        let s = try Tensor(file.tensor("intermediate.svd_S"), on: dev)
        let vh = try Tensor(file.tensor("intermediate.svd_Vh"), on: dev)
        let rebuilt = try Tensor.matmul(u * s.reshaped([2, 1, 64]), vh)
        #expect(maxRelative(try rebuilt.toArray(), try m.toArray()) < 1e-5)
    }

    static func loadError(_ file: SafeTensorsFile, _ dev: Device) -> String {
        do {
            _ = try NPNet.load(file, device: dev)
            return "loaded without an error"
        } catch {
            return "\(error)"
        }
    }

    @Test func missingAndMisShapedKeysAreNamed() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        var missing = file
        missing.tensors["weights.unet_embedding.swin.layers.2.blocks.1.mlp.fc2.bias"] = nil
        let missingError = Self.loadError(missing, dev)
        #expect(missingError.contains("missing weights.unet_embedding.swin.layers.2.blocks.1.mlp.fc2.bias"), "\(missingError)")
        var misShaped = file
        misShaped.tensors["weights.unet_svd.mlp3.0.bias"] = HostTensor(shape: [63], data: [Float](repeating: 0, count: 63))
        let misShapedError = Self.loadError(misShaped, dev)
        #expect(misShapedError.contains("mis-shaped weights.unet_svd.mlp3.0.bias [63] (expected [64])"), "\(misShapedError)")
        var unexpected = file
        unexpected.tensors["weights.unet_svd.extra"] = HostTensor(shape: [1], data: [0])
        let unexpectedError = Self.loadError(unexpected, dev)
        #expect(unexpectedError.contains("unexpected weights.unet_svd.extra"), "\(unexpectedError)")
    }

    @Test func olderTimmBuffersAndTheHeadAreAccepted() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        var extra = file
        let sw = "weights.unet_embedding.swin."
        extra.tensors[sw + "layers.0.blocks.0.attn.relative_position_index"] =
            HostTensor(shape: [49, 49], data: [Float](repeating: 0, count: 49 * 49))
        extra.tensors[sw + "layers.0.blocks.1.attn_mask"] =
            HostTensor(shape: [64, 49, 49], data: [Float](repeating: 0, count: 64 * 49 * 49))
        extra.tensors["weights.unet_svd.bn.num_batches_tracked"] = HostTensor(shape: [], data: [0])
        extra.tensors[sw + "head.weight"] = HostTensor(shape: [10, 192], data: [Float](repeating: 0, count: 1920))
        // timm < 0.9 layout: each stage's patch merging at its end (layers.i.downsample, i < 3).
        var old = extra
        for i in 1...3 {
            for name in ["norm.weight", "norm.bias", "reduction.weight"] {
                old.tensors[sw + "layers.\(i - 1).downsample." + name] = old.tensors[sw + "layers.\(i).downsample." + name]
                old.tensors[sw + "layers.\(i).downsample." + name] = nil
            }
        }
        let noise = try Tensor(file.tensor("input.noise"), on: dev)
        let prompt = try Tensor(file.tensor("input.prompt_embeds"), on: dev)
        let u = try Tensor(file.tensor("intermediate.svd_U"), on: dev)
        let s = try Tensor(file.tensor("intermediate.svd_S"), on: dev)
        let vh = try Tensor(file.tensor("intermediate.svd_Vh"), on: dev)
        for (tag, variant) in [("extra keys", extra), ("old timm layout", old)] {
            for metadata in [true, false] {
                var f = variant
                if !metadata { f.metadata = [:] }
                let net = try NPNet.load(f, device: dev)
                let out = try net(noise: noise, promptEmbeds: prompt, svdFactors: (u, s, vh))
                try Self.check(out.golden, file, "output.golden_noise", 1e-4, "cpu, \(tag), metadata \(metadata)")
            }
        }
    }

    @Test func badInputsAreRejected() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        let net = try NPNet.load(file, device: dev)
        let noise = try Tensor.zeros([2, 4, 16, 16], on: dev)
        let prompt = try Tensor.zeros([2, 6, 16], on: dev)
        #expect(throws: NoiseError.self) { _ = try net(noise: noise, promptEmbeds: prompt) }
        let good = try Tensor(file.tensor("input.noise"), on: dev)
        #expect(throws: NoiseError.self) { _ = try net(noise: good, promptEmbeds: Tensor.zeros([2, 5, 16], on: dev)) }
    }

    @Test func gradientsReachTheParameters() throws {
        guard let file = try Self.fixture() else { return }
        let dev = Device.cpuDevice()
        let net = try NPNet.load(file, device: dev)
        let noise = try Tensor(file.tensor("input.noise"), on: dev)
        let prompt = try Tensor(file.tensor("input.prompt_embeds"), on: dev)
        let out = try net(noise: noise, promptEmbeds: prompt)
        try out.golden.square().mean().backward()
        for name in ["alpha", "beta", "embeeding.linear.weight", "unet_svd.mlp4.2.bias",
                     "unet_embedding.swin.layers.0.blocks.1.attn.relative_position_bias_table",
                     "unet_embedding.swin.patch_embed.proj.weight", "unet_embedding.upconv.weight"] {
            let g = try net.params.tensors[name]?.grad?.toArray() ?? []
            #expect(!g.isEmpty && g.allSatisfy { $0.isFinite } && g.contains { $0 != 0 }, "no gradient for \(name)")
        }
    }
}
