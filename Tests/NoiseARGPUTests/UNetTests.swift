import Foundation
import NoiseARGPU
import Testing

@Suite struct UNetTests {
    static func tinyConfig() -> (UNetConfig, TextEncoderConfig) {
        var u = UNetConfig()
        u.sampleSize = 8
        u.blockOutChannels = [8, 16]
        u.attentionLevels = [false, true]
        u.heads = 2
        u.normGroups = 4
        u.crossAttentionDim = 16
        var t = TextEncoderConfig()
        t.vocabSize = 10
        t.maxLength = 5
        t.hiddenSize = 16
        t.layers = 1
        t.heads = 2
        return (u, t)
    }

    static func run(_ dev: Device) throws -> ([Float], [String: [Float]], [String]) {
        let (uc, tc) = tinyConfig()
        let p = Parameters(device: dev, seed: 5)
        let text = try TextEncoder(p, config: tc)
        let unet = try UNet2DConditionModel(p, config: uc)
        var rng = TestRNG(3)
        let x = try Tensor(rng.values(2 * 3 * 8 * 8), shape: [2, 3, 8, 8], on: dev)
        let ctx = try text([[1, 2, 3, 0, 0], [4, 5, 6, 7, 0]], on: dev)
        let eps = try unet(x, timesteps: [10, 500], context: ctx)
        try (eps.square().mean()).backward()
        var grads: [String: [Float]] = [:]
        for name in p.names { grads[name] = try p.tensors[name]?.grad?.toArray() ?? [] }
        return (try eps.toArray(), grads, p.names)
    }

    @Test func forwardShapesNamesAndGradients() throws {
        let (eps, grads, names) = try Self.run(Device.cpuDevice())
        #expect(eps.count == 2 * 3 * 8 * 8)
        #expect(names.contains("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"))
        #expect(names.contains("up_blocks.0.resnets.1.conv_shortcut.weight"))
        #expect(names.contains("text_model.encoder.layers.0.self_attn.q_proj.weight"))
        #expect(names.contains("mid_block.attentions.0.proj_in.weight"))
        // Every parameter receives a gradient.
        for n in names { #expect(grads[n]?.isEmpty == false, "no gradient for \(n)") }
    }

    @Test func openCLMatchesCPU() throws {
        let (refEps, refGrads, names) = try Self.run(Device.cpuDevice())
        try withCL { backends in
            for be in backends {
                let (eps, grads, _) = try Self.run(Device(backend: be))
                #expect(nmse(eps, refEps) < 1e-6, "[\(be.params.profile)] eps NMSE \(nmse(eps, refEps))")
                var worst = 0.0
                for n in names {
                    let g = grads[n] ?? [], r = refGrads[n] ?? []
                    // Gradients that are zero in exact arithmetic (e.g. a key bias under
                    // softmax) are rounding noise on both sides: compare them absolutely.
                    let rms = (r.reduce(0) { $0 + Double($1) * Double($1) } / Double(max(r.count, 1))).squareRoot()
                    let e = rms < 1e-6
                        ? (zip(g, r).map { abs(Double($0) - Double($1)) }.max() ?? 0) < 1e-5 ? 0 : 1
                        : nmse(g, r)
                    if e > 1e-5 { print("grad mismatch \(n): \(e)") }
                    worst = max(worst, e)
                }
                #expect(worst < 1e-5, "[\(be.params.profile)] worst gradient NMSE \(worst)")
            }
        }
    }

    @Test func saveLoadRoundTripAndKeyErrors() throws {
        let dev = Device.cpuDevice()
        let (uc, _) = Self.tinyConfig()
        let a = Parameters(device: dev, seed: 1)
        _ = try UNet2DConditionModel(a, config: uc)
        let file = SafeTensorsFile(tensors: try a.hostTensors(), metadata: [:])
        let b = Parameters(device: dev, seed: 2)
        _ = try UNet2DConditionModel(b, config: uc)
        try b.load(file)
        for n in a.names { #expect(try a.tensors[n]?.toArray() == b.tensors[n]?.toArray()) }
        var broken = file
        broken.tensors["conv_in.weight"] = nil
        broken.tensors["extra.weight"] = HostTensor(shape: [1], data: [0])
        broken.tensors["conv_out.bias"] = HostTensor(shape: [2], data: [0, 0])
        do {
            try b.load(broken)
            Issue.record("load should fail")
        } catch let e as NoiseError {
            let m = e.description
            #expect(m.contains("missing conv_in.weight") && m.contains("extra.weight") && m.contains("conv_out.bias [2]"), "\(m)")
        }
    }
}
