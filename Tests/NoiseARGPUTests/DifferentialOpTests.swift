import Foundation
import NoiseARGPU
import Testing

/// Every primitive on OpenCL against the CPU backend: random inputs away from zero, odd sizes,
/// NMSE, NaN and guard checks (see Harness.swift).
@Suite struct DifferentialOpTests {
    @Test func fillAndCopy() throws {
        var rng = TestRNG(1)
        try differential("fill", inputs: [], outputs: [rng.values(101)]) { be, _, o in
            try be.fill(o[0], count: 101, value: 0.375)
        }
        // A permutation and a broadcast read, rank 3 and rank 6.
        let shape = [3, 5, 7]
        try differential("copy.permute", inputs: [rng.values(105)], outputs: [rng.values(105)], exact: true) { be, i, o in
            try be.copy(shape: [7, 3, 5], src: Strided(i[0], strides: [1, 35, 7]),
                        dst: Strided(o[0], strides: Shape.strides([7, 3, 5])))
        }
        try differential("copy.contiguous", inputs: [rng.values(105)], outputs: [rng.values(105)], exact: true) { be, i, o in
            try be.copy(shape: shape, src: Strided(i[0], strides: Shape.strides(shape)),
                        dst: Strided(o[0], strides: Shape.strides(shape)))
        }
        try differential("copy.broadcast", inputs: [rng.values(15)], outputs: [rng.values(105)], exact: true) { be, i, o in
            try be.copy(shape: shape, src: Strided(i[0], strides: [5, 1, 0]),
                        dst: Strided(o[0], strides: Shape.strides(shape)))
        }
        let s6 = [2, 1, 3, 2, 3, 5]
        try differential("copy.rank6", inputs: [rng.values(180)], outputs: [rng.values(180)], exact: true) { be, i, o in
            try be.copy(shape: s6, src: Strided(i[0], strides: Shape.strides(s6.reversed()).reversed()),
                        dst: Strided(o[0], strides: Shape.strides(s6)))
        }
    }

    @Test(arguments: BinaryOp.allCases)
    func binary(op: BinaryOp) throws {
        var rng = TestRNG(2)
        let shape = [2, 3, 5, 7], bShape = [3, 1, 7]
        try differential("binary.\(op)", inputs: [rng.values(210), rng.values(21)], outputs: [rng.values(210)]) { be, i, o in
            try be.binary(op, shape: shape, a: Strided(i[0], strides: Shape.strides(shape)),
                          b: Strided(i[1], strides: Shape.broadcastStrides(bShape, to: shape)), out: o[0])
        }
        // Shapes that collapse to one axis: same shape, and a broadcast scalar.
        try differential("binary.\(op).1d", inputs: [rng.values(210), rng.values(210)], outputs: [rng.values(210)]) { be, i, o in
            try be.binary(op, shape: shape, a: Strided(i[0], strides: Shape.strides(shape)),
                          b: Strided(i[1], strides: Shape.strides(shape)), out: o[0])
        }
        try differential("binary.\(op).scalar", inputs: [rng.values(210), rng.values(1)], outputs: [rng.values(210)]) { be, i, o in
            try be.binary(op, shape: shape, a: Strided(i[0], strides: Shape.strides(shape)),
                          b: Strided(i[1], strides: [0, 0, 0, 0]), out: o[0])
        }
    }

    @Test func collapse() {
        // [2,3,4] contiguous + [1,3,1] broadcast: the last two axes cannot merge for the bias.
        let c = Shape.collapse([2, 3, 4], [[12, 4, 1], [0, 1, 0]])
        #expect(c.shape == [2, 3, 4] && c.strides == [[12, 4, 1], [0, 1, 0]])
        let d = Shape.collapse([2, 1, 3, 4], [[12, 12, 4, 1], [12, 12, 4, 1]])
        #expect(d.shape == [24] && d.strides == [[1], [1]])
        let e = Shape.collapse([5, 6], [[1, 5], [6, 1]])  // a transpose stays 2-D
        #expect(e.shape == [5, 6])
        let f = Shape.collapse([1, 1], [[3, 7]])
        #expect(f.shape == [1])
    }

    static let unaryParams: [UnaryOp: (Float, Float)] = [.affine: (1.5, -0.25), .clamp: (-0.45, 0.55)]

    @Test(arguments: UnaryOp.allCases)
    func unary(op: UnaryOp) throws {
        var rng = TestRNG(3)
        let n = 1000
        let x = (op == .log || op == .sqrt) ? rng.positive(n) : rng.values(n, hi: 3)
        let (p0, p1) = Self.unaryParams[op] ?? (0, 0)
        try differential("unary.\(op)", inputs: [x], outputs: [rng.values(n)]) { be, i, o in
            try be.unary(op, count: n, x: i[0], y: o[0], p0: p0, p1: p1)
        }
        try differential("unaryBackward.\(op)", inputs: [x, rng.values(n)], outputs: [rng.values(n)]) { be, i, o in
            try be.unaryBackward(op, count: n, x: i[0], dy: i[1], dx: o[0], p0: p0, p1: p1)
        }
    }

    @Test(arguments: [(1, 1, 1), (17, 33, 9), (64, 64, 64), (65, 130, 67), (3, 200, 129), (1, 301, 517), (4, 97, 1030), (2, 5, 3), (5, 40, 70)])
    func gemm(m: Int, n: Int, k: Int) throws {
        var rng = TestRNG(UInt64(4 + m))
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(Float(1), Float(0)), (Float(0.5), Float(-1.25))] {
                let d = GemmDesc(m: m, n: n, k: k, transA: ta, transB: tb, alpha: alpha, beta: beta)
                try differential("gemm \(m)x\(n)x\(k) tA=\(ta) tB=\(tb) beta=\(beta)",
                                 inputs: [rng.values(m * k), rng.values(k * n)], outputs: [rng.values(m * n)]) { be, i, o in
                    try be.gemm(d, a: i[0], b: i[1], c: o[0])
                }
            }
        }
    }

    @Test func gemmBatchedStrides() throws {
        var rng = TestRNG(5)
        // Two-level batch over a [B, T, H, D] layout (as attention uses), with a padded ldc.
        let b = 2, h = 3, t = 5, d = 4
        var g = GemmDesc(m: t, n: t, k: d, transB: true, alpha: 0.7)
        g.lda = h * d; g.ldb = h * d; g.ldc = t + 2
        g.batch0 = b; g.batch1 = h
        g.strideA0 = t * h * d; g.strideA1 = d
        g.strideB0 = t * h * d; g.strideB1 = d
        g.strideC0 = h * t * (t + 2); g.strideC1 = t * (t + 2)
        try differential("gemm.batched2", inputs: [rng.values(b * t * h * d), rng.values(b * t * h * d)],
                         outputs: [rng.values(b * h * t * (t + 2))]) { be, i, o in
            try be.gemm(g, a: i[0], b: i[1], c: o[0])
        }
        // A skinny (M <= 4) batched GEMM.
        let gs = GemmDesc(m: 2, n: 9, k: 11, transB: true).batched(3, strideA: 22, strideB: 99, strideC: 18)
        try differential("gemm.skinnyBatched", inputs: [rng.values(66), rng.values(297)], outputs: [rng.values(54)]) { be, i, o in
            try be.gemm(gs, a: i[0], b: i[1], c: o[0])
        }
        // Broadcast A (stride 0) across a batch of B.
        let gb = GemmDesc(m: 7, n: 9, k: 11).batched(3, strideA: 0, strideB: 99, strideC: 63)
        try differential("gemm.broadcastA", inputs: [rng.values(77), rng.values(297)], outputs: [rng.values(189)]) { be, i, o in
            try be.gemm(gb, a: i[0], b: i[1], c: o[0])
        }
    }

    /// Linear combinations of one to four buffers at an odd size, at offsets, and in place
    /// (out is the first input, as the later passes of `Tensor.linearCombination` run).
    @Test func combine() throws {
        var rng = TestRNG(61)
        let n = 1037
        let coefficients: [Float] = [1.5, -0.75, 0.3, 2.25]
        for terms in 1...Op.Combine.maxTerms {
            let xs = (0..<terms).map { _ in rng.values(n) }
            try differential("combine \(terms) terms", inputs: xs, outputs: [rng.values(n)]) { be, i, o in
                try be.combine(count: n, coefficients: Array(coefficients.prefix(terms)), inputs: i, out: o[0])
            }
            try differential("combine \(terms) terms in place", inputs: Array(xs.dropFirst()), outputs: [xs[0]]) { be, i, o in
                try be.combine(count: n, coefficients: Array(coefficients.prefix(terms)), inputs: [o[0]] + i, out: o[0])
            }
        }
        // The CPU reference against the definition, in Double.
        let xs = (0..<4).map { _ in rng.values(n) }
        let dev = Device.cpuDevice()
        let got = try Tensor.linearCombination(zip(coefficients, xs).map { c, x in (c, try Tensor(x, shape: [n], on: dev)) })
            .toArray()
        let want = (0..<n).map { i in (0..<4).reduce(0.0) { $0 + Double(coefficients[$1]) * Double(xs[$1][i]) } }
        let err = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(err < 1e-5, "linear combination off the definition by \(err)")
    }

    /// The bias epilogue (`Op.Gemm.bias`): plain, transposed, with beta, skinny (M <= 4), past
    /// panel and tile edges, and batched with a bias per batch0 entry (GEGLU's two halves)
    /// over a two-level batch.
    @Test func gemmBiasEpilogue() throws {
        var rng = TestRNG(55)
        for (m, n, k) in [(17, 33, 9), (3, 41, 30), (65, 130, 67), (1, 7, 5)] {
            for (tb, alpha, beta) in [(true, Float(1), Float(0)), (false, Float(0.5), Float(-1.25))] {
                let d = GemmDesc(m: m, n: n, k: k, transB: tb, alpha: alpha, beta: beta)
                try differential("gemm+bias \(m)x\(n)x\(k) tB=\(tb) beta=\(beta)",
                                 inputs: [rng.values(m * k), rng.values(k * n), rng.values(n)],
                                 outputs: [rng.values(m * n)]) { be, i, o in
                    try be.gemm(d, a: i[0], b: i[1], c: o[0], bias: i[2])
                }
                // beta's C read from another buffer (a residual), with and without the bias.
                try differential("gemm+cIn \(m)x\(n)x\(k) tB=\(tb) beta=\(beta)",
                                 inputs: [rng.values(m * k), rng.values(k * n), rng.values(n), rng.values(m * n)],
                                 outputs: [rng.values(m * n)]) { be, i, o in
                    try be.gemm(d, a: i[0], b: i[1], c: o[0], bias: i[2], cIn: i[3])
                }
                try differential("gemm+cIn no bias \(m)x\(n)x\(k) tB=\(tb) beta=\(beta)",
                                 inputs: [rng.values(m * k), rng.values(k * n), rng.values(m * n)],
                                 outputs: [rng.values(m * n)]) { be, i, o in
                    try be.gemm(d, a: i[0], b: i[1], c: o[0], bias: nil, cIn: i[2])
                }
            }
        }
        for m in [2, 19] {
            let (n, k, b0, b1) = (23, 13, 2, 3)
            var d = GemmDesc(m: m, n: n, k: k, transB: true)
            d.batch0 = b0; d.batch1 = b1
            d.strideA0 = b1 * m * k; d.strideA1 = m * k
            d.strideB0 = n * k; d.strideB1 = 0
            d.strideC0 = b1 * m * n; d.strideC1 = m * n
            d.biasStride0 = n
            try differential("gemm+bias batched \(m)x\(n)x\(k) b\(b0)x\(b1)",
                             inputs: [rng.values(b0 * b1 * m * k), rng.values(b0 * n * k), rng.values(b0 * n)],
                             outputs: [rng.values(b0 * b1 * m * n)]) { be, i, o in
                try be.gemm(d, a: i[0], b: i[1], c: o[0], bias: i[2])
            }
            var dr = d
            dr.beta = 0.75
            try differential("gemm+bias+cIn batched \(m)x\(n)x\(k) b\(b0)x\(b1)",
                             inputs: [rng.values(b0 * b1 * m * k), rng.values(b0 * n * k), rng.values(b0 * n),
                                      rng.values(b0 * b1 * m * n)],
                             outputs: [rng.values(b0 * b1 * m * n)]) { be, i, o in
                try be.gemm(dr, a: i[0], b: i[1], c: o[0], bias: i[2], cIn: i[3])
            }
        }
        // The CPU reference itself against the definition: an untaped linear layer (the
        // epilogue) equals the product plus a broadcast add, on the CPU and OpenCL devices.
        let (rows, inF, outF) = (7, 13, 5)
        let x = rng.values(rows * inF), w = rng.values(outF * inF), bias = rng.values(outF)
        let residual = rng.values(rows * outF)
        func check(_ dev: Device) throws {
            let tx = try Tensor(x, shape: [rows, inF], on: dev), tw = try Tensor(w, shape: [outF, inF], on: dev)
            let tb = try Tensor(bias, shape: [outF], on: dev)
            let fused = try Tensor.linear(tx, weight: tw, bias: tb).toArray()
            let twoOps = try (Tensor.matmul(tx, tw, transposeB: true) + tb).toArray()
            #expect(nmse(fused, twoOps) < 1e-12, "\(dev.info.id): linear bias epilogue nmse \(nmse(fused, twoOps))")
            // With a residual (the skip connection added by the GEMM), with and without the bias.
            let tr = try Tensor(residual, shape: [rows, outF], on: dev)
            let withResidual = try Tensor.linear(tx, weight: tw, bias: tb, residual: tr).toArray()
            let threeOps = try (Tensor.matmul(tx, tw, transposeB: true) + tb + tr).toArray()
            #expect(nmse(withResidual, threeOps) < 1e-12, "\(dev.info.id): linear residual nmse \(nmse(withResidual, threeOps))")
            let noBias = try Tensor.linear(tx, weight: tw, residual: tr).toArray()
            let twoOpsNoBias = try (Tensor.matmul(tx, tw, transposeB: true) + tr).toArray()
            #expect(nmse(noBias, twoOpsNoBias) < 1e-12, "\(dev.info.id): linear residual without bias nmse \(nmse(noBias, twoOpsNoBias))")
        }
        try check(Device.cpuDevice())
        try withBackends { backends in
            for be in backends { try check(Device(backend: be)) }
        }
    }

    /// The activation epilogue (`GemmDesc.activation`, applied last): every parameter-free op
    /// the models use, on the skinny (M <= 4), packed and tiled kernels, past panel and tile
    /// edges, with the bias, C_in and beta, and over a two-level batch. An untaped linear layer
    /// with an activation equals the three ops (one GEMM launch on the kernel backends, no unary
    /// launch); a recorded one runs them (its gradient is theirs); an activation with parameters
    /// is refused.
    @Test func gemmActivationEpilogue() throws {
        var rng = TestRNG(56)
        let acts: [UnaryOp] = [.silu, .gelu, .relu, .tanh, .sigmoid]
        for (index, (m, n, k)) in [(17, 33, 9), (3, 41, 30), (65, 130, 67), (1, 7, 5)].enumerated() {
            let act = acts[index % acts.count]
            var d = GemmDesc(m: m, n: n, k: k, transB: index % 2 == 0)
            d.activation = act
            try differential("gemm+\(act) \(m)x\(n)x\(k)", inputs: [rng.values(m * k), rng.values(k * n)],
                             outputs: [rng.values(m * n)]) { be, i, o in
                try be.gemm(d, a: i[0], b: i[1], c: o[0])
            }
            var full = d
            full.alpha = 0.5; full.beta = -1.25; full.activation = acts[(index + 2) % acts.count]
            try differential("gemm+bias+cIn+\(acts[(index + 2) % acts.count]) \(m)x\(n)x\(k)",
                             inputs: [rng.values(m * k), rng.values(k * n), rng.values(n), rng.values(m * n)],
                             outputs: [rng.values(m * n)]) { be, i, o in
                try be.gemm(full, a: i[0], b: i[1], c: o[0], bias: i[2], cIn: i[3])
            }
        }
        let (m, n, k, b0, b1) = (19, 23, 13, 2, 3)
        var d = GemmDesc(m: m, n: n, k: k, transB: true)
        d.batch0 = b0; d.batch1 = b1
        d.strideA0 = b1 * m * k; d.strideA1 = m * k
        d.strideB0 = n * k; d.strideB1 = 0
        d.strideC0 = b1 * m * n; d.strideC1 = m * n
        d.biasStride0 = n; d.activation = .gelu
        try differential("gemm+bias+gelu batched \(m)x\(n)x\(k) b\(b0)x\(b1)",
                         inputs: [rng.values(b0 * b1 * m * k), rng.values(b0 * n * k), rng.values(b0 * n)],
                         outputs: [rng.values(b0 * b1 * m * n)]) { be, i, o in
            try be.gemm(d, a: i[0], b: i[1], c: o[0], bias: i[2])
        }
        var affine = GemmDesc(m: 2, n: 2, k: 2)
        affine.activation = .affine
        let cpuBackend = CPUBackend()
        let g = try Guarded(cpuBackend, rng.values(4))
        #expect(throws: NoiseError.self) { try cpuBackend.gemm(affine, a: g.ref, b: g.ref, c: g.ref) }

        let (rows, inF, outF) = (7, 13, 5)
        let x = rng.values(rows * inF), w = rng.values(outF * inF), bias = rng.values(outF)
        let residual = rng.values(rows * outF)
        // Inside withBackends: the shared backends' launch counters see only this test.
        func check(_ dev: Device) throws {
            let tx = try Tensor(x, shape: [rows, inF], on: dev), tw = try Tensor(w, shape: [outF, inF], on: dev)
            let tb = try Tensor(bias, shape: [outF], on: dev), tr = try Tensor(residual, shape: [rows, outF], on: dev)
            for act in [UnaryOp.gelu, .silu] {
                let kernels = dev.backend as? any KernelBackend
                let start = kernels?.launches ?? 0
                let fusedTensor = try Tensor.linear(tx, weight: tw, bias: tb, activation: act)
                let middle = kernels?.launches ?? 0
                let gemmOnly = try Tensor.linear(tx, weight: tw, bias: tb)
                if let kernels {
                    #expect(middle - start == kernels.launches - middle,
                            "\(kernels.label): linear+\(act) took \(middle - start) launches, the linear alone \(kernels.launches - middle)")
                }
                func activate(_ t: Tensor) throws -> Tensor { act == .gelu ? try t.gelu() : try t.silu() }
                let fused = try fusedTensor.toArray()
                let three = try activate(gemmOnly).toArray()
                #expect(!fused.contains { $0.isNaN } && nmse(fused, three) < 1e-12,
                        "\(dev.info.id): linear+\(act) nmse \(nmse(fused, three))")
                let withResidual = try Tensor.linear(tx, weight: tw, bias: tb, residual: tr, activation: act).toArray()
                let four = try activate(gemmOnly + tr).toArray()
                #expect(nmse(withResidual, four) < 1e-12, "\(dev.info.id): linear+residual+\(act) nmse \(nmse(withResidual, four))")
            }
        }
        try check(Device.cpuDevice())
        try withBackends { backends in
            for be in backends { try check(Device(backend: be)) }
        }
        // Recorded: the gradient of the composed ops.
        let cpuDev = Device.cpuDevice()
        let xr = try Tensor(x, shape: [rows, inF], on: cpuDev, requiresGrad: true)
        let tw = try Tensor(w, shape: [outF, inF], on: cpuDev), tb = try Tensor(bias, shape: [outF], on: cpuDev)
        try Tensor.linear(xr, weight: tw, bias: tb, activation: .gelu).sum().backward()
        let xr2 = try Tensor(x, shape: [rows, inF], on: cpuDev, requiresGrad: true)
        try (Tensor.linear(xr2, weight: tw, bias: tb)).gelu().sum().backward()
        #expect(nmse(try #require(xr.grad).toArray(), try #require(xr2.grad).toArray()) < 1e-12)
        #expect(throws: NoiseError.self) { _ = try Tensor.linear(xr, weight: tw, activation: .clamp) }
    }

    @Test(arguments: [(1, 1), (7, 13), (5, 300), (64, 65)])
    func softmax(rows: Int, cols: Int) throws {
        var rng = TestRNG(6)
        for log in [false, true] {
            let x = rng.values(rows * cols, hi: 4)
            try differential("softmax log=\(log) \(rows)x\(cols)", inputs: [x], outputs: [rng.values(rows * cols)]) { be, i, o in
                try be.softmax(rows: rows, cols: cols, log: log, x: i[0], y: o[0])
            }
            // Backward from a valid (log-)softmax output.
            let cpu = CPUBackend()
            let gx = try Guarded(cpu, x), gy = try Guarded(cpu, rng.values(rows * cols))
            try cpu.softmax(rows: rows, cols: cols, log: log, x: gx.ref, y: gy.ref)
            let y = try gy.values()
            try differential("softmaxBackward log=\(log) \(rows)x\(cols)", inputs: [y, rng.values(rows * cols)],
                             outputs: [rng.values(rows * cols)]) { be, i, o in
                try be.softmaxBackward(rows: rows, cols: cols, log: log, y: i[0], dy: i[1], dx: o[0])
            }
        }
    }

    @Test(arguments: [(9, 37), (3, 300), (1, 5)])
    func layerNorm(rows: Int, cols: Int) throws {
        var rng = TestRNG(7)
        let x = rng.values(rows * cols, hi: 3).enumerated().map { $0.element + Float($0.offset % 5) * 0.3 }
        for affine in [false, true] {
            let params = affine ? [rng.values(cols), rng.values(cols)] : []
            try differential("layerNorm affine=\(affine) \(rows)x\(cols)", inputs: [x] + params,
                             outputs: [rng.values(rows * cols), rng.values(rows), rng.values(rows)]) { be, i, o in
                try be.layerNorm(rows: rows, cols: cols, eps: 1e-5, x: i[0], gamma: affine ? i[1] : nil,
                                 beta: affine ? i[2] : nil, y: o[0], mean: o[1], rstd: o[2])
            }
            // Statistics from the CPU forward feed the backward.
            let cpu = CPUBackend()
            let gx = try Guarded(cpu, x), gy = try Guarded(cpu, rng.values(rows * cols))
            let gm = try Guarded(cpu, rng.values(rows)), gr = try Guarded(cpu, rng.values(rows))
            try cpu.layerNorm(rows: rows, cols: cols, eps: 1e-5, x: gx.ref, gamma: nil, beta: nil,
                              y: gy.ref, mean: gm.ref, rstd: gr.ref)
            let stats = [try gm.values(), try gr.values()]
            let outs = affine ? [rng.values(rows * cols), rng.values(cols), rng.values(cols)] : [rng.values(rows * cols)]
            try differential("layerNormBackward affine=\(affine) \(rows)x\(cols)",
                             inputs: [x] + stats + [rng.values(rows * cols)] + (affine ? [params[0]] : []),
                             outputs: outs, tolerance: 1e-5) { be, i, o in
                try be.layerNormBackward(rows: rows, cols: cols, x: i[0], gamma: affine ? i[4] : nil, mean: i[1],
                                         rstd: i[2], dy: i[3], dx: o[0], dgamma: affine ? o[1] : nil,
                                         dbeta: affine ? o[2] : nil)
            }
        }
    }

    @Test(arguments: [1, 2, 3, 6])
    func groupNorm(groups: Int) throws {
        var rng = TestRNG(8)
        let n = 2, c = 6, spatial = 25
        let total = n * c * spatial
        let x = rng.values(total, hi: 2).enumerated().map { $0.element + Float($0.offset % 7) * 0.2 }
        for affine in [false, true] {
            let params = affine ? [rng.values(c), rng.values(c)] : []
            try differential("groupNorm g=\(groups) affine=\(affine)", inputs: [x] + params,
                             outputs: [rng.values(total), rng.values(n * groups), rng.values(n * groups)]) { be, i, o in
                try be.groupNorm(n: n, channels: c, spatial: spatial, groups: groups, eps: 1e-5, x: i[0],
                                 gamma: affine ? i[1] : nil, beta: affine ? i[2] : nil, y: o[0], mean: o[1], rstd: o[2])
            }
            let cpu = CPUBackend()
            let gx = try Guarded(cpu, x), gy = try Guarded(cpu, rng.values(total))
            let gm = try Guarded(cpu, rng.values(n * groups)), gr = try Guarded(cpu, rng.values(n * groups))
            try cpu.groupNorm(n: n, channels: c, spatial: spatial, groups: groups, eps: 1e-5, x: gx.ref,
                              gamma: nil, beta: nil, y: gy.ref, mean: gm.ref, rstd: gr.ref)
            let stats = [try gm.values(), try gr.values()]
            let outs = affine ? [rng.values(total), rng.values(c), rng.values(c)] : [rng.values(total)]
            try differential("groupNormBackward g=\(groups) affine=\(affine)",
                             inputs: [x] + stats + [rng.values(total)] + (affine ? [params[0]] : []),
                             outputs: outs, tolerance: 1e-5) { be, i, o in
                try be.groupNormBackward(n: n, channels: c, spatial: spatial, groups: groups, x: i[0],
                                         gamma: affine ? i[4] : nil, mean: i[1], rstd: i[2], dy: i[3], dx: o[0],
                                         dgamma: affine ? o[1] : nil, dbeta: affine ? o[2] : nil)
            }
        }
    }

    struct AttnCase: Sendable, CustomStringConvertible {
        var b, h, tq, tk, d, dv: Int
        var causal = false
        var biasB = 0, biasH = 0
        var bthd = false
        var description: String {
            "B\(b) H\(h) Tq\(tq) Tk\(tk) D\(d) Dv\(dv)\(causal ? " causal" : "")\(biasB > 0 ? " bias[\(biasB),\(biasH)]" : "")\(bthd ? " bthd" : "")"
        }
    }

    @Test(arguments: [
        AttnCase(b: 2, h: 3, tq: 5, tk: 7, d: 8, dv: 8),
        AttnCase(b: 1, h: 2, tq: 33, tk: 17, d: 16, dv: 24),
        AttnCase(b: 2, h: 2, tq: 19, tk: 19, d: 12, dv: 12, causal: true),
        AttnCase(b: 1, h: 1, tq: 3, tk: 40, d: 6, dv: 6, causal: true),
        AttnCase(b: 4, h: 3, tq: 9, tk: 9, d: 8, dv: 8, biasB: 2, biasH: 3),
        AttnCase(b: 2, h: 4, tq: 10, tk: 13, d: 16, dv: 16, biasB: 1, biasH: 1, bthd: true),
        AttnCase(b: 1, h: 2, tq: 65, tk: 65, d: 64, dv: 64, causal: true),
        AttnCase(b: 1, h: 1, tq: 7, tk: 50, d: 5, dv: 3),
    ])
    func attention(_ c: AttnCase) throws {
        var rng = TestRNG(9)
        var desc = AttentionDesc(batch: c.b, heads: c.h, tq: c.tq, tk: c.tk, headDim: c.d, valueDim: c.dv, causal: c.causal)
        let layout: AttentionLayout = c.bthd ? .bthd : .bhtd
        if c.bthd {
            desc.qStrides = [c.tq * c.h * c.d, c.d, c.h * c.d]
            desc.kStrides = [c.tk * c.h * c.d, c.d, c.h * c.d]
            desc.vStrides = [c.tk * c.h * c.dv, c.dv, c.h * c.dv]
            desc.oStrides = [c.tq * c.h * c.dv, c.dv, c.h * c.dv]
        }
        _ = layout
        desc.biasBatch = c.biasB
        desc.biasHeads = c.biasH
        let biasCount = c.biasB * max(c.biasH, 1) * c.tq * c.tk
        let inputs = [rng.values(c.b * c.h * c.tq * c.d, hi: 2), rng.values(c.b * c.h * c.tk * c.d, hi: 2),
                      rng.values(c.b * c.h * c.tk * c.dv)] + (c.biasB > 0 ? [rng.values(biasCount)] : [])
        try differential("attention \(c)", inputs: inputs, outputs: [rng.values(c.b * c.h * c.tq * c.dv)]) { be, i, o in
            try be.attention(desc, q: i[0], k: i[1], v: i[2], bias: c.biasB > 0 ? i[3] : nil, o: o[0])
        }
    }

    static let convCases: [(Int, Int, Int, Int, Int, Int, Int)] = [
        // (C, H, W, k, stride, pad, batch)
        (3, 7, 9, 3, 1, 1, 2), (2, 9, 8, 4, 2, 0, 1), (5, 6, 6, 1, 1, 0, 3), (2, 11, 10, 5, 3, 2, 2),
    ]

    @Test func im2colAndCol2im() throws {
        var rng = TestRNG(10)
        for (c, h, w, k, s, p, n) in Self.convCases {
            let g = ConvGeometry(channels: c, height: h, width: w, kernelH: k, kernelW: k, stride: s, padding: p)
            let colCount = n * g.colRows * g.colCols
            try differential("im2col \(g)", inputs: [rng.values(n * c * h * w)], outputs: [rng.values(colCount)], exact: true) { be, i, o in
                try be.im2col(g, batch: n, x: i[0], col: o[0])
            }
            try differential("col2im \(g)", inputs: [rng.values(colCount)], outputs: [rng.values(n * c * h * w)]) { be, i, o in
                try be.col2im(g, batch: n, col: i[0], dx: o[0])
            }
        }
    }

    @Test(arguments: [ResizeMode.nearest, .bilinear])
    func resize(mode: ResizeMode) throws {
        var rng = TestRNG(11)
        for (ih, iw, oh, ow) in [(5, 7, 11, 3), (8, 8, 16, 16), (16, 16, 7, 5), (3, 3, 224, 224), (1, 4, 2, 9)] {
            let planes = 3
            try differential("resize.\(mode) \(ih)x\(iw)->\(oh)x\(ow)", inputs: [rng.values(planes * ih * iw)],
                             outputs: [rng.values(planes * oh * ow)]) { be, i, o in
                try be.resize(mode, planes: planes, inH: ih, inW: iw, outH: oh, outW: ow, x: i[0], y: o[0])
            }
            try differential("resizeBackward.\(mode) \(ih)x\(iw)->\(oh)x\(ow)", inputs: [rng.values(planes * oh * ow)],
                             outputs: [rng.values(planes * ih * iw)]) { be, i, o in
                try be.resizeBackward(mode, planes: planes, inH: ih, inW: iw, outH: oh, outW: ow, dy: i[0], dx: o[0])
            }
        }
    }

    @Test(arguments: [(3, 5, 7), (1, 10000, 3), (1, 5000, 1), (2, 1, 9), (1, 8192, 2), (4, 4097, 1)])
    func reduce(outer: Int, reduce: Int, inner: Int) throws {
        var rng = TestRNG(12)
        try differential("reduce \(outer)x\(reduce)x\(inner)", inputs: [rng.values(outer * reduce * inner)],
                         outputs: [rng.values(outer * inner)]) { be, i, o in
            try be.reduce(outer: outer, reduce: reduce, inner: inner, x: i[0], out: o[0])
        }
    }

    @Test func gatherRows() throws {
        var rng = TestRNG(13)
        let vocab = 11, dim = 7
        let idx: [Int] = [3, 0, 10, 3, 3, 7, 1]
        try differential("gather", inputs: [rng.values(vocab * dim), idx.map(Float.init)],
                         outputs: [rng.values(idx.count * dim)], exact: true) { be, i, o in
            try be.gather(rows: idx.count, dim: dim, table: i[0], index: i[1], out: o[0])
        }
        var start = [Float](repeating: 0, count: vocab + 1)
        for i in idx { start[i + 1] += 1 }
        for v in 0..<vocab { start[v + 1] += start[v] }
        var fill = start.map { Int($0) }
        var list = [Float](repeating: 0, count: idx.count)
        for (row, i) in idx.enumerated() { list[fill[i]] = Float(row); fill[i] += 1 }
        try differential("gatherBackward", inputs: [rng.values(idx.count * dim), start, list],
                         outputs: [rng.values(vocab * dim)]) { be, i, o in
            try be.gatherBackward(vocab: vocab, dim: dim, dy: i[0], start: i[1], list: i[2], dtable: o[0])
        }
    }

    @Test func randnIsBitwiseIdentical() throws {
        var rng = TestRNG(14)
        for (count, seed, offset) in [(1001, UInt64(42), UInt64(0)), (257, 7, 3), (64, 0xDEAD_BEEF_1234, (1 << 33) + 1)] {
            try differential("randn n=\(count) seed=\(seed) off=\(offset)", inputs: [], outputs: [rng.values(count)], exact: true) { be, _, o in
                try be.randn(count: count, seed: seed, offset: offset, dst: o[0])
            }
        }
    }

    @Test func adamw() throws {
        var rng = TestRNG(15)
        let n = 333
        let step = AdamWStep(lr: 1e-2, weightDecay: 0.05, step: 3)
        try differential("adamw", inputs: [rng.values(n)], outputs: [rng.values(n), rng.values(n), rng.positive(n)]) { be, i, o in
            try be.adamw(count: n, step: step, param: o[0], grad: i[0], m: o[1], v: o[2])
        }
    }

    /// NoiseAR's patch sampling: one patch of an odd grid, with the Philox draw and with given eps
    /// (logvar spans the clamp range's ends, so the clamp is exercised).
    @Test func samplePatch() throws {
        var rng = TestRNG(16)
        let batch = 2, channels = 3, size = 15, patch = 5
        for (gy, gx, useEps) in [(1, 2, false), (2, 0, true)] {
            var d = PatchSampleDesc(batch: batch, channels: channels, size: size, patch: patch, gridY: gy, gridX: gx,
                                    seed: 0x1234_5678_9ABC, temperature: 0.8)
            d.logvarMin = -3; d.logvarMax = 2
            let t = d.tokenSize
            let inputs = [rng.values(batch * t), rng.values(batch * t, hi: 4)] + (useEps ? [rng.values(batch * channels * size * size)] : [])
            try differential("samplePatch \(gy),\(gx) eps=\(useEps)", inputs: inputs,
                             outputs: [rng.values(batch * channels * size * size), rng.values(batch * t)], tolerance: 1e-10) { be, i, o in
                try be.samplePatch(d, mu: i[0], logvar: i[1], eps: useEps ? i[2] : nil, latent: o[0], token: o[1])
            }
        }
    }
}
