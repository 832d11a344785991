import Foundation
import NoiseARGPU
import Testing

/// Checks the tape's gradients of f against central finite differences on the CPU backend:
/// L = sum(f(x) * r) for a fixed random r, accumulated in float64, step h; then the same
/// gradients computed on every OpenCL and Vulkan backend against the same differences.
func gradCheck(_ name: String, _ inputs: [(shape: [Int], values: [Float])], h: Float = 1e-2,
               tolerance: Double = 1e-2, maxChecks: Int = 48, seed: UInt64 = 99,
               _ f: ([Tensor]) throws -> Tensor) throws {
    let dev = Device(backend: RecordingBackend(CPUBackend(), label: "cpu", coverage: OpCoverageScope.gradient))
    var rng = TestRNG(seed)
    /// The analytic gradients on a device.
    func analytic(_ dev: Device) throws -> [[Float]] {
        let xs = try inputs.map { try Tensor($0.values, shape: $0.shape, on: dev, requiresGrad: true) }
        let y = try f(xs)
        try y.backward(seed: Tensor(r, shape: y.shape, on: dev))
        return try xs.enumerated().map { i, x in try #require(x.grad, "\(name): input \(i) got no gradient").toArray() }
    }
    let cpu = Device.cpuDevice()
    let probe = try f(try inputs.map { try Tensor($0.values, shape: $0.shape, on: cpu) })
    let r = rng.values(probe.count)
    var results = [("cpu", try analytic(dev))]
    try withBackends { backends in
        for be in backends {
            let d = Device(backend: RecordingBackend(be, label: be.label, coverage: OpCoverageScope.gradient))
            d.warn = { Issue.record("\(name) [\(be.label)]: \($0)") }
            results.append((be.label, try analytic(d)))
        }
    }
    func loss(_ vals: [[Float]]) throws -> Double {
        try dev.noGrad {
            let ts = try zip(inputs, vals).map { try Tensor($1, shape: $0.shape, on: dev) }
            let out = try f(ts).toArray()
            return zip(out, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
    }
    for i in inputs.indices {
        let n = inputs[i].values.count
        let picks = n <= maxChecks ? Array(0..<n) : (0..<maxChecks).map { _ in rng.int(n) }
        var fd: [Double] = []
        for j in picks {
            var plus = inputs.map(\.values), minus = inputs.map(\.values)
            plus[i][j] += h
            minus[i][j] -= h
            fd.append((try loss(plus) - loss(minus)) / (2 * Double(h)))
        }
        for (label, grads) in results {
            #expect(!grads[i].contains { $0.isNaN }, "\(name) [\(label)]: NaN in gradient of input \(i)")
            var num = 0.0, den = 0.0
            for (j, f) in zip(picks, fd) {
                let d = Double(grads[i][j]) - f
                num += d * d
                den += f * f
            }
            let rel = (num / max(den, 1e-12)).squareRoot()
            #expect(rel < tolerance, "\(name) [\(label)]: input \(i) gradient relative error \(rel)")
        }
    }
}

@Suite struct GradientTests {
    @Test func elementwiseBroadcast() throws {
        var rng = TestRNG(1)
        let a = ([2, 3, 4], rng.values(24)), b = ([3, 1], rng.values(3, lo: 0.5, hi: 1.5))
        try gradCheck("add", [a, b]) { try $0[0] + $0[1] }
        try gradCheck("sub", [a, b]) { try $0[0] - $0[1] }
        try gradCheck("mul", [a, b]) { try $0[0] * $0[1] }
        try gradCheck("div", [a, b]) { try $0[0] / $0[1] }
    }

    /// Six terms (two passes of `Op.Combine`), one tensor used twice.
    @Test func linearCombination() throws {
        var rng = TestRNG(12)
        let a = ([3, 7], rng.values(21)), b = ([3, 7], rng.values(21)), c = ([3, 7], rng.values(21))
        try gradCheck("linearCombination", [a, b, c]) {
            try Tensor.linearCombination([(0.5, $0[0]), (-1.25, $0[1]), (2, $0[2]), (0.75, $0[0]), (1.5, $0[1]), (-0.3, $0[2])])
        }
    }

    @Test(arguments: UnaryOp.allCases)
    func unary(op: UnaryOp) throws {
        var rng = TestRNG(2)
        var x = (op == .log || op == .sqrt) ? rng.positive(30, lo: 0.5) : rng.values(30, lo: 0.1, hi: 2)
        if op == .clamp { x = x.map { abs($0 - 0.5) < 0.05 || abs($0 + 0.5) < 0.05 ? $0 * 1.3 : $0 } }
        let fns: [UnaryOp: (Tensor) throws -> Tensor] = [
            .exp: { try $0.exp() }, .log: { try $0.log() }, .sqrt: { try $0.sqrt() },
            .affine: { try $0.affine(1.5, -0.2) }, .clamp: { try $0.clamp(-0.5, 0.5) },
            .silu: { try $0.silu() }, .gelu: { try $0.gelu() }, .relu: { try $0.relu() },
            .sigmoid: { try $0.sigmoid() }, .tanh: { try $0.tanh() }, .square: { try $0.square() },
        ]
        let fn = try #require(fns[op])
        try gradCheck("\(op)", [([5, 6], x)]) { try fn($0[0]) }
    }

    @Test func matmulAndLinear() throws {
        var rng = TestRNG(3)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = (ta ? [2, 5, 3] : [2, 3, 5], rng.values(30)), b = (tb ? [2, 4, 5] : [2, 5, 4], rng.values(40))
            try gradCheck("matmul tA=\(ta) tB=\(tb)", [a, b]) { try Tensor.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) }
        }
        try gradCheck("matmul rank3@rank2", [([2, 3, 5], rng.values(30)), ([5, 4], rng.values(20))]) {
            try Tensor.matmul($0[0], $0[1])
        }
        try gradCheck("linear", [([3, 7], rng.values(21)), ([4, 7], rng.values(28)), ([4], rng.values(4))]) {
            try Tensor.linear($0[0], weight: $0[1], bias: $0[2])
        }
    }

    @Test func softmaxFamily() throws {
        var rng = TestRNG(4)
        let x = ([3, 7], rng.values(21, hi: 2)), mask = ([1, 7], rng.values(7))
        try gradCheck("softmax", [x]) { try $0[0].softmax() }
        try gradCheck("softmax+mask", [x, mask]) { try $0[0].softmax(mask: $0[1]) }
        try gradCheck("logSoftmax", [x]) { try $0[0].logSoftmax() }
    }

    @Test func norms() throws {
        var rng = TestRNG(5)
        try gradCheck("layerNorm", [([4, 9], rng.values(36, hi: 2)), ([9], rng.values(9)), ([9], rng.values(9))]) {
            try $0[0].layerNorm(gamma: $0[1], beta: $0[2])
        }
        try gradCheck("layerNorm plain", [([4, 9], rng.values(36, hi: 2))]) {
            try $0[0].layerNorm(gamma: nil, beta: nil)
        }
        try gradCheck("groupNorm", [([2, 6, 3, 2], rng.values(72, hi: 2)), ([6], rng.values(6)), ([6], rng.values(6))]) {
            try $0[0].groupNorm(groups: 3, gamma: $0[1], beta: $0[2])
        }
        try gradCheck("groupNorm plain", [([2, 4, 5], rng.values(40, hi: 2))]) {
            try $0[0].groupNorm(groups: 2, gamma: nil, beta: nil)
        }
    }

    @Test func attention() throws {
        var rng = TestRNG(6)
        let b = 2, h = 2, tq = 3, tk = 4, d = 5
        let q = ([b, h, tq, d], rng.values(b * h * tq * d)), k = ([b, h, tk, d], rng.values(b * h * tk * d))
        let v = ([b, h, tk, d], rng.values(b * h * tk * d))
        try gradCheck("attention", [q, k, v]) { try Tensor.attention(q: $0[0], k: $0[1], v: $0[2]) }
        try gradCheck("attention causal", [q, k, v]) { try Tensor.attention(q: $0[0], k: $0[1], v: $0[2], causal: true) }
        let bias = ([1, h, tq, tk], rng.values(h * tq * tk))
        try gradCheck("attention bias", [q, k, v, bias]) {
            try Tensor.attention(q: $0[0], k: $0[1], v: $0[2], bias: $0[3])
        }
        let qt = ([b, tq, h, d], q.1), kt = ([b, tk, h, d], k.1), vt = ([b, tk, h, d], v.1)
        try gradCheck("attention bthd", [qt, kt, vt]) {
            try Tensor.attention(q: $0[0], k: $0[1], v: $0[2], layout: .bthd)
        }
    }

    @Test func convAndResize() throws {
        var rng = TestRNG(7)
        try gradCheck("conv2d", [([2, 3, 5, 6], rng.values(180)), ([4, 3, 3, 3], rng.values(108)), ([4], rng.values(4))]) {
            try Tensor.conv2d($0[0], weight: $0[1], bias: $0[2], stride: 2, padding: 1)
        }
        try gradCheck("conv2d 1x1", [([1, 2, 3, 3], rng.values(18)), ([3, 2, 1, 1], rng.values(6))]) {
            try Tensor.conv2d($0[0], weight: $0[1])
        }
        // Stride-1 "same" convolutions: on the plain CPU backend they are recorded as shifted
        // kernel taps (gradCheck's wrapped CPU backend and the GPUs take the im2col path), so
        // compare that tape's gradients with gradCheck's device and with finite differences.
        for (k, pad, h, w) in [(3, 1, 5, 6), (5, 2, 7, 4)] {
            let xv = rng.values(2 * 3 * h * w), wv = rng.values(4 * 3 * k * k), bv = rng.values(4)
            try gradCheck("conv2d same k\(k)", [([2, 3, h, w], xv), ([4, 3, k, k], wv), ([4], bv)]) {
                try Tensor.conv2d($0[0], weight: $0[1], bias: $0[2], stride: 1, padding: pad)
            }
            let r = rng.values(2 * 4 * h * w)
            func grads(_ dev: Device) throws -> [[Float]] {
                let ts = try [(xv, [2, 3, h, w]), (wv, [4, 3, k, k]), (bv, [4])].map {
                    try Tensor($0.0, shape: $0.1, on: dev, requiresGrad: true)
                }
                let y = try Tensor.conv2d(ts[0], weight: ts[1], bias: ts[2], stride: 1, padding: pad)
                try y.backward(seed: Tensor(r, shape: y.shape, on: dev))
                return try ts.map { try #require($0.grad).toArray() }
            }
            let shifted = try grads(Device.cpuDevice())
            let im2col = try grads(Device(backend: RecordingBackend(CPUBackend(), label: "cpu", coverage: OpCoverageScope.gradient)))
            for (a, b) in zip(shifted, im2col) {
                #expect(!a.contains { $0.isNaN } && nmse(a, b) < 1e-10, "conv2d same k\(k) gradient: nmse \(nmse(a, b))")
            }
        }
        for mode in [ResizeMode.nearest, .bilinear] {
            try gradCheck("resize \(mode)", [([1, 2, 3, 4], rng.values(24))]) {
                try $0[0].resized(height: 7, width: 5, mode: mode)
            }
        }
    }

    @Test func shapeOps() throws {
        var rng = TestRNG(8)
        let x = ([2, 3, 4], rng.values(24))
        try gradCheck("sum axes", [x]) { try $0[0].sum(axes: [0, 2]) }
        try gradCheck("sum all", [x]) { try $0[0].sum() }
        try gradCheck("mean keepDims", [x]) { try $0[0].mean(axes: [1], keepDims: true) }
        try gradCheck("permute", [x]) { try $0[0].permuted([2, 0, 1]) }
        try gradCheck("slice", [x]) { try $0[0].slice(axis: 1, 1, 3) }
        try gradCheck("concat", [x, ([2, 2, 4], rng.values(16))]) { try Tensor.concat([$0[0], $0[1]], axis: 1) }
        try gradCheck("reshape", [x]) { try $0[0].reshaped([4, -1]).square() }
        try gradCheck("expand", [([3, 1], rng.values(3))]) { try $0[0].expanded(to: [2, 3, 4]) }
        try gradCheck("gather", [([5, 3], rng.values(15))]) { try Tensor.gather($0[0], indices: [4, 0, 4, 2]) }
    }

    @Test func accumulationAcrossUses() throws {
        let dev = Device.cpuDevice()
        let x = try Tensor([0.5, -1.5, 2], shape: [3], on: dev, requiresGrad: true)
        // y = x*x + x + x: dy/dx = 2x + 2, x used four times.
        let y = try (x * x + x + x).sum()
        try y.backward()
        #expect(try x.grad?.toArray() == [3, -1, 6])
        // A second backward accumulates into .grad.
        let z = try (x * 3).sum()
        try z.backward()
        #expect(try x.grad?.toArray() == [6, 2, 9])
        x.zeroGrad()
        #expect(x.grad == nil)
    }

    @Test func adamwStepMatchesFormula() throws {
        let dev = Device.cpuDevice()
        let p = try Tensor([1, -2], shape: [2], on: dev, requiresGrad: true)
        try (p * p).sum().backward()  // grad = 2p
        let opt = AdamW(lr: 0.1, weightDecay: 0.01)
        try opt.update([p])
        // step 1: m = 0.1 g, v = 0.001 g^2 -> mhat = g, vhat = g^2, update = g/|g| = sign
        let got = try p.toArray()
        let want: [Float] = [1 - 0.1 * (0.01 * 1 + 1), -2 - 0.1 * (0.01 * -2 - 1)]
        for (g, w) in zip(got, want) { #expect(abs(g - w) < 1e-5) }
    }
}
