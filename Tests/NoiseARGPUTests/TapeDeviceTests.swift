import Foundation
import NoiseARGPU
import Testing

/// The tape on OpenCL against the CPU backend, fallback, device selection, kernel cache.
@Suite struct TapeDeviceTests {
    /// A small transformer-ish block: linear, GELU, layer norm, attention, conv, group norm,
    /// resize and reductions, with every parameter's gradient compared across backends.
    static func model(_ dev: Device) throws -> (Float, [[Float]]) {
        var rng = TestRNG(21)
        let x = try Tensor(rng.values(2 * 6 * 8), shape: [2, 6, 8], on: dev, requiresGrad: true)
        let w = try Tensor(rng.values(24 * 8), shape: [24, 8], on: dev, requiresGrad: true)
        let b = try Tensor(rng.values(24), shape: [24], on: dev, requiresGrad: true)
        let g = try Tensor(rng.values(8), shape: [8], on: dev, requiresGrad: true)
        let cw = try Tensor(rng.values(3 * 2 * 3 * 3), shape: [3, 2, 3, 3], on: dev, requiresGrad: true)
        let qkv = try Tensor.linear(x, weight: w, bias: b).gelu()
        let q = try qkv.slice(axis: 2, 0, 8).reshaped([2, 6, 2, 4])
        let k = try qkv.slice(axis: 2, 8, 16).reshaped([2, 6, 2, 4])
        let v = try qkv.slice(axis: 2, 16, 24).reshaped([2, 6, 2, 4])
        let a = try Tensor.attention(q: q, k: k, v: v, causal: true, layout: .bthd).reshaped([2, 6, 8])
        let h = try (a + x).layerNorm(gamma: g, beta: nil)
        let img = try h.reshaped([2, 2, 4, 6]).resized(height: 5, width: 7, mode: .bilinear)
        let c = try Tensor.conv2d(img, weight: cw, padding: 1).groupNorm(groups: 3, gamma: nil, beta: nil)
        let loss = try (c.silu().mean() + h.softmax().square().sum())
        try loss.backward()
        return (try loss.item(), try [x, w, b, g, cw].map { try #require($0.grad).toArray() })
    }

    @Test func gradientsMatchAcrossBackends() throws {
        let (refLoss, refGrads) = try Self.model(Device.cpuDevice())
        try withBackends { backends in
            for be in backends {
                let (loss, grads) = try Self.model(Device(backend: be))
                #expect(abs(loss - refLoss) <= 1e-4 * abs(refLoss), "[\(be.label)] loss \(loss) vs \(refLoss)")
                for (i, (g, r)) in zip(grads, refGrads).enumerated() {
                    #expect(nmse(g, r) < 1e-6, "[\(be.label)] gradient \(i) NMSE \(nmse(g, r))")
                }
            }
        }
    }

    @Test func fallbackRunsUnsupportedOpsOnCPU() throws {
        guard Device.list().devices.contains(where: { $0.backend == "opencl" }) else {
            print("skipping: no OpenCL device")
            return
        }
        let (refLoss, refGrads) = try Self.model(Device.cpuDevice())
        try withCL { _ in
            let be = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_DISABLE_OPS": "gemm,attention,layerNorm"]))
            #expect(!be.enables(.gemm) && be.enables(.softmax))
            let dev = Device(backend: be)
            var warnings: [String] = []
            dev.warn = { warnings.append($0) }
            let (loss, grads) = try Self.model(dev)
            #expect(abs(loss - refLoss) <= 1e-4 * abs(refLoss))
            for (g, r) in zip(grads, refGrads) { #expect(nmse(g, r) < 1e-6) }
            // One warning per family, naming it; attention runs as GEMM + softmax + GEMM on the
            // device (its GEMMs fall back) rather than moving to the CPU as a whole.
            #expect(warnings.count == 2, "warnings: \(warnings)")
            #expect(warnings.contains { $0.contains("'gemm'") } && warnings.contains { $0.contains("'layerNorm'") })
        }
    }

    @Test func deviceSelection() throws {
        #expect(try Device.open("cpu").isCPU)
        #expect(throws: NoiseError.self) { try Device.open("metal") }
        #expect(throws: NoiseError.self) { try Device.open("vulkan:99") }
        do {
            _ = try Device.open("opencl:99")
            Issue.record("opencl:99 should not open")
        } catch let e as NoiseError {
            #expect(e.description.contains("opencl") || e.description.contains("OpenCL"))
        }
        // auto never picks an OpenCL CPU device: here (PoCL only) it is the CPU backend.
        let auto = try Device.open("auto", environment: testEnvironment())
        let hasGPU = Device.list().devices.contains { $0.kind == .gpu || $0.kind == .accelerator }
        #expect(auto.isCPU == !hasGPU)
    }

    @Test func rngMomentsAndStreams() throws {
        let n = 1 << 20
        let z = Philox.normal(count: n, seed: 1234)
        var m1 = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0
        for v in z {
            let d = Double(v)
            m1 += d; m2 += d * d; m3 += d * d * d; m4 += d * d * d * d
        }
        m1 /= Double(n); m2 /= Double(n); m3 /= Double(n); m4 /= Double(n)
        #expect(abs(m1) < 5e-3, "mean \(m1)")
        #expect(abs(m2 - 1) < 1e-2, "variance \(m2)")
        #expect(abs(m3) < 2e-2, "third moment \(m3)")
        #expect(abs(m4 - 3) < 5e-2, "fourth moment \(m4)")
        // Offsets address the same stream: elements 1000..<1100 equal a slice of the whole.
        let part = Philox.normal(count: 100, seed: 1234, offset: 1000)
        #expect(part == Array(z[1000..<1100]))
        // A different seed gives a different stream.
        #expect(Philox.normal(count: 8, seed: 1235) != Array(z[0..<8]))
        // Tail probability: |z| > 3 about 0.27%.
        let tail = Double(z.filter { abs($0) > 3 }.count) / Double(n)
        #expect(abs(tail - 0.0027) < 5e-4, "tail \(tail)")
    }

    @Test func kernelCacheRebuildsCorruptEntries() throws {
        guard Device.list().devices.contains(where: { $0.backend == "opencl" }) else {
            print("skipping: no OpenCL device")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-cache-test-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = testEnvironment(["NOISEAR_KERNEL_CACHE": dir.path])
        func fillOnce() throws -> OpenCLBackend {
            let be = try OpenCLBackend(index: 0, environment: env)
            let buf = try be.allocate(4)
            try be.fill(BufRef(buf), count: 4, value: 2)
            var out = [Float](repeating: 0, count: 4)
            try out.withUnsafeMutableBufferPointer { try be.download(BufRef(buf), into: $0) }
            #expect(out == [2, 2, 2, 2])
            return be
        }
        try withCL { _ in
            #expect(try fillOnce().sourceBuilds == 1)
            let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            #expect(files.count == 1)
            #expect(try fillOnce().sourceBuilds == 0, "second open should load the cached binary")
            // Corrupt the entry: it is rebuilt silently and rewritten.
            for f in files {
                var data = try Data(contentsOf: f)
                data[data.count / 2] ^= 0xFF
                try data.write(to: f)
            }
            #expect(try fillOnce().sourceBuilds == 1)
            #expect(try fillOnce().sourceBuilds == 0)
            // Truncated entry.
            for f in files { try Data("junk".utf8).write(to: f) }
            #expect(try fillOnce().sourceBuilds == 1)
        }
    }

    @Test func kernelBuildFailureCarriesLog() throws {
        guard Device.list().devices.contains(where: { $0.backend == "opencl" }) else {
            print("skipping: no OpenCL device")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-badkernels-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "/* empty */\n".write(to: dir.appendingPathComponent("common.h"), atomically: true, encoding: .utf8)
        try "kernel void fill_f32(global float* d, int o, int n, float v) { this is not C; }\n"
            .write(to: dir.appendingPathComponent("elementwise.cl"), atomically: true, encoding: .utf8)
        try withCL { _ in
            let be = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_KERNEL_DIR": dir.path,
                                                                               "NOISEAR_KERNEL_CACHE": "off"]))
            let buf = try be.allocate(4)
            do {
                try be.fill(BufRef(buf), count: 4, value: 1)
                Issue.record("a broken kernel should not build")
            } catch NoiseError.kernelBuild(let program, _, let log) {
                #expect(program == "elementwise.cl")
                #expect(!log.isEmpty)
            }
        }
    }

    @Test func tensorBasics() throws {
        let dev = Device.cpuDevice()
        #expect(throws: NoiseError.self) { try Tensor([1, 2, 3], shape: [2, 2], on: dev) }
        #expect(throws: NoiseError.self) { try Tensor.matmul(Tensor.zeros([2, 3], on: dev), Tensor.zeros([2, 3], on: dev)) }
        #expect(throws: NoiseError.self) { try Tensor.zeros([2, 3], on: dev).reshaped([4, 2]) }
        #expect(throws: NoiseError.self) { try Tensor.gather(Tensor.zeros([2, 3], on: dev), indices: [2]) }
        let t = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3], on: dev)
        #expect(try t.transposed(0, 1).toArray() == [1, 4, 2, 5, 3, 6])
        #expect(try t.sum(axes: [1]).toArray() == [6, 15])
        #expect(try Tensor.concat([t, t], axis: 0).shape == [4, 3])
        // Safetensors bridge: device tensor -> file -> device tensor.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-bridge-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsFile(tensors: ["w": t.toHost()], metadata: ["k": "v"]).write(to: url)
        let back = try Tensor(SafeTensorsFile.read(url).tensor("w"), on: dev)
        #expect(back.shape == [2, 3])
        #expect(try back.toArray() == t.toArray())
        // Half-precision storage: small integers survive exactly; dtype recorded as F16.
        try SafeTensorsFile(tensors: ["w": t.toHost()]).write(to: url, as: .f16)
        let half = try SafeTensorsFile.read(url)
        #expect(half.dtypes["w"] == "F16" && half["w"]?.data == [1, 2, 3, 4, 5, 6])
    }
}
