import Foundation
import NoiseARGPU
import Testing

/// The CPU backend's fast paths (vector exp/erf, row-parallel elementwise and norms, GEMM panels split
/// over the cores, the batch-reduce GEMM and the shifted-tap convolution, GEGLU, attention per
/// (batch, head) pair, the fused linear and convolution bias, the worker pool, the OpenCL
/// buffer pool) against plain references written
/// here, at odd sizes that straddle the parallel thresholds.
@Suite(.serialized) struct CPUFastPathTests {
    let cpu = Device.cpuDevice()

    @Test func vectorExpAndErfMatchLibm() throws {
        // A dense sweep plus the edges: under/overflow, infinities, NaN, denormal-range inputs.
        var xs: [Float] = stride(from: -90, through: 90, by: 0.0371).map { Float($0) }
        xs += [-.infinity, .infinity, 0, -0.0, 88.7, 88.72, -87.3, -103, 1e-30, -1e-30]
        let t = try Tensor(xs, shape: [xs.count], on: cpu)
        let e = try t.exp().toArray(), s = try t.silu().toArray(), g = try t.gelu().toArray()
        let sg = try t.sigmoid().toArray()
        for (i, x) in xs.enumerated() {
            let ref = Foundation.exp(Double(x))
            if ref > 1e-37 && ref < 3e38 {
                #expect(abs(Double(e[i]) - ref) <= 4e-7 * ref, "exp(\(x)) = \(e[i]), libm \(ref)")
            } else if ref <= 1e-37 {
                #expect(e[i] >= 0 && e[i] < 2e-37, "exp(\(x)) = \(e[i])")
            } else {
                #expect(e[i] > 3e38, "exp(\(x)) = \(e[i])")
            }
            guard x.isFinite else { continue }  // (silu and gelu of infinities are inf/inf)
            let silu = Double(x) / (1 + Foundation.exp(-Double(x)))
            #expect(abs(Double(s[i]) - silu) <= 1e-6 * max(1, abs(silu)), "silu(\(x)) = \(s[i]), \(silu)")
            let gelu = 0.5 * Double(x) * (1 + Foundation.erf(Double(x) / 2.0.squareRoot()))
            #expect(abs(Double(g[i]) - gelu) <= 2e-6 * max(1, abs(gelu)), "gelu(\(x)) = \(g[i]), \(gelu)")
            let sig = 1 / (1 + Foundation.exp(-Double(x)))
            #expect(abs(Double(sg[i]) - sig) <= 1e-6, "sigmoid(\(x)) = \(sg[i]), \(sig)")
        }
        let nan = try Tensor([.nan, 1], shape: [2], on: cpu)
        #expect(try nan.exp().toArray()[0].isNaN)
        #expect(try nan.gelu().toArray()[0].isNaN)
        #expect(try nan.silu().toArray()[0].isNaN)
    }

    @Test func softmaxRowsWithMasksAndLargeValues() throws {
        var rng = TestRNG(5)
        for (rows, cols) in [(3, 1), (7, 13), (129, 67), (300, 300)] {
            var x = rng.values(rows * cols, lo: 0.1, hi: 60)
            if cols > 1 { x[0] = -.infinity }  // a masked entry (an all-masked row is NaN)
            let t = try Tensor(x, shape: [rows, cols], on: cpu)
            let y = try t.softmax().toArray(), ly = try t.logSoftmax().toArray()
            for r in 0..<rows {
                let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
                let m = row.max() ?? 0
                let z = row.reduce(0) { $0 + Foundation.exp($1 - m) }
                for j in 0..<cols {
                    let p = Foundation.exp(row[j] - m) / z
                    #expect(abs(Double(y[r * cols + j]) - p) <= 1e-6, "softmax [\(r), \(j)] of \(rows)x\(cols)")
                    if row[j].isFinite {
                        #expect(abs(Double(ly[r * cols + j]) - (row[j] - m - Foundation.log(z))) <= 2e-5)
                    }
                }
            }
        }
    }

    @Test func broadcastElementwiseAndNormsAtOddSizes() throws {
        var rng = TestRNG(9)
        // [n, c, s] + bias [c] broadcast, large enough to be split over the cores.
        let n = 5, c = 37, s = 301
        let x = rng.values(n * c * s), bias = rng.values(c)
        let y = try (try Tensor(x, shape: [n, c, s], on: cpu) + Tensor(bias, shape: [c, 1], on: cpu)).toArray()
        for i in 0..<(n * c * s) { #expect(y[i] == x[i] + bias[(i / s) % c]) }
        // A transposing copy through permuted.
        let p = try Tensor(x, shape: [n, c, s], on: cpu).permuted([2, 0, 1]).toArray()
        for a in [0, 17, s - 1] {
            for b in 0..<n {
                for k in [0, 5, c - 1] { #expect(p[(a * n + b) * c + k] == x[(b * c + k) * s + a]) }
            }
        }
        // Group norm and layer norm against doubles.
        let groups = 4, ch = 12, sp = 999
        let gx = rng.values(3 * ch * sp, lo: 0.1, hi: 5)
        let gamma = rng.values(ch), beta = rng.values(ch)
        let gy = try Tensor(gx, shape: [3, ch, sp], on: cpu)
            .groupNorm(groups: groups, gamma: Tensor(gamma, shape: [ch], on: cpu), beta: Tensor(beta, shape: [ch], on: cpu))
            .toArray()
        let per = ch / groups * sp
        for gi in 0..<(3 * groups) {
            let seg = gx[(gi * per)..<((gi + 1) * per)].map(Double.init)
            let mu = seg.reduce(0, +) / Double(per)
            let v = seg.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(per)
            for j in stride(from: 0, to: per, by: 97) {
                let chan = (gi % groups) * (ch / groups) + j / sp
                let ref = (seg[j] - mu) / (v + 1e-5).squareRoot() * Double(gamma[chan]) + Double(beta[chan])
                #expect(abs(Double(gy[gi * per + j]) - ref) <= 1e-4, "group norm \(gi) \(j)")
            }
        }
    }

    /// Reference convolution, straight from the definition.
    static func conv(_ x: [Float], _ w: [Float], _ b: [Float], n: Int, c: Int, h: Int, wd: Int,
                     cout: Int, k: Int, pad: Int, stride: Int) -> [Float] {
        let oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1
        var y = [Float](repeating: 0, count: n * cout * oh * ow)
        for i in 0..<n {
            for o in 0..<cout {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var acc = Double(b[o])
                        for ci in 0..<c {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = oy * stride - pad + ky, ix = ox * stride - pad + kx
                                    guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                                    acc += Double(x[((i * c + ci) * h + iy) * wd + ix]) * Double(w[((o * c + ci) * k + ky) * k + kx])
                                }
                            }
                        }
                        y[((i * cout + o) * oh + oy) * ow + ox] = Float(acc)
                    }
                }
            }
        }
        return y
    }

    @Test func convolutionPathsMatchTheDefinition() throws {
        var rng = TestRNG(13)
        // Same-padding 3x3 and 5x5, a strided one and a valid one (im2col chunks and per-image
        // GEMMs over the bias).
        // Same-padding ones go through the shifted-tap batch-reduce GEMM (the last one large
        // enough for several panels); 1x1 through a GEMM on the input itself.
        for (k, pad, stride, h, wd) in [(3, 1, 1, 9, 7), (5, 2, 1, 6, 11), (3, 1, 2, 9, 7), (3, 0, 1, 5, 6), (1, 0, 1, 4, 3),
                                        (3, 1, 1, 33, 29)] {
            let n = h > 30 ? 4 : 3, c = 5, cout = 6
            let x = rng.values(n * c * h * wd), w = rng.values(cout * c * k * k), b = rng.values(cout)
            let y = try Tensor.conv2d(Tensor(x, shape: [n, c, h, wd], on: cpu), weight: Tensor(w, shape: [cout, c, k, k], on: cpu),
                                      bias: Tensor(b, shape: [cout], on: cpu), stride: stride, padding: pad).toArray()
            let ref = Self.conv(x, w, b, n: n, c: c, h: h, wd: wd, cout: cout, k: k, pad: pad, stride: stride)
            #expect(nmse(y, ref) < 1e-10, "conv k\(k) pad\(pad) stride\(stride) \(h)x\(wd): nmse \(nmse(y, ref))")
        }
    }

    @Test func gemmPanelsLinearAndAttentionMatchReferences() throws {
        var rng = TestRNG(17)
        // Big enough to be split over the cores, by columns and by rows.
        // One row (a GEMV in OpenBLAS), plain and with A stored transposed.
        for (m, n, k) in [(1, 1111, 29), (1, 7, 301)] {
            let a = rng.values(m * k), b = rng.values(k * n)
            var ref = [Float](repeating: 0, count: n)
            for j in 0..<n {
                var s = 0.0
                for l in 0..<k { s += Double(a[l]) * Double(b[l * n + j]) }
                ref[j] = Float(s)
            }
            let c = try Tensor.matmul(Tensor(a, shape: [m, k], on: cpu), Tensor(b, shape: [k, n], on: cpu)).toArray()
            let ct = try Tensor.matmul(Tensor(a, shape: [k, m], on: cpu), Tensor(b, shape: [k, n], on: cpu),
                                       transposeA: true).toArray()
            #expect(nmse(c, ref) < 1e-10 && nmse(ct, ref) < 1e-10, "one-row matmul \(n)x\(k)")
        }
        for (m, n, k) in [(37, 1111, 29), (1111, 37, 29), (3, 5, 7)] {
            let a = rng.values(m * k), b = rng.values(k * n)
            let c = try Tensor.matmul(Tensor(a, shape: [m, k], on: cpu), Tensor(b, shape: [k, n], on: cpu)).toArray()
            var ref = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                for j in 0..<n {
                    var s = 0.0
                    for l in 0..<k { s += Double(a[i * k + l]) * Double(b[l * n + j]) }
                    ref[i * n + j] = Float(s)
                }
            }
            #expect(nmse(c, ref) < 1e-10, "matmul \(m)x\(n)x\(k)")
        }
        // Linear with bias (the bias copied in, GEMM accumulating onto it), many rows and one.
        for rows in [18, 1] {
            let x = rng.values(rows * 13), w = rng.values(11 * 13), bias = rng.values(11)
            let y = try Tensor.linear(Tensor(x, shape: rows == 1 ? [1, 13] : [2, 9, 13], on: cpu),
                                      weight: Tensor(w, shape: [11, 13], on: cpu), bias: Tensor(bias, shape: [11], on: cpu))
            #expect(y.shape == (rows == 1 ? [1, 11] : [2, 9, 11]))
            let yv = try y.toArray()
            for r in 0..<rows {
                for o in 0..<11 {
                    var s = Double(bias[o])
                    for l in 0..<13 { s += Double(x[r * 13 + l]) * Double(w[o * 13 + l]) }
                    #expect(abs(Double(yv[r * 11 + o]) - s) <= 1e-5)
                }
            }
        }
        // Attention: many pairs (spread over the cores) and a single pair (products threaded),
        // with few keys (a Swin window's 49) and many; causal, or with a per-head bias broadcast
        // over the batch.
        for (bsz, heads, tq, tk, dim, causal) in [(3, 5, 17, 23, 16, true), (1, 1, 9, 40, 72, true), (2, 3, 49, 49, 24, false),
                                                  (3, 2, 7, 131, 9, true), (1, 1, 5, 300, 40, false)] {
            let q = rng.values(bsz * heads * tq * dim), kk = rng.values(bsz * heads * tk * dim)
            let v = rng.values(bsz * heads * tk * dim)
            let biasValues = causal ? nil : rng.values(heads * tq * tk)
            let o = try Tensor.attention(q: Tensor(q, shape: [bsz, heads, tq, dim], on: cpu),
                                         k: Tensor(kk, shape: [bsz, heads, tk, dim], on: cpu),
                                         v: Tensor(v, shape: [bsz, heads, tk, dim], on: cpu),
                                         bias: biasValues.map { try Tensor($0, shape: [1, heads, tq, tk], on: cpu) },
                                         causal: causal).toArray()
            var ref = [Float](repeating: 0, count: o.count)
            let scale = 1 / Double(dim).squareRoot()
            for p in 0..<(bsz * heads) {
                for i in 0..<tq {
                    let last = causal ? i + tk - tq : tk - 1
                    var s = [Double](repeating: -.infinity, count: tk)
                    for j in 0...last {
                        var d = 0.0
                        for c in 0..<dim { d += Double(q[(p * tq + i) * dim + c]) * Double(kk[(p * tk + j) * dim + c]) }
                        s[j] = d * scale + Double(biasValues?[((p % heads) * tq + i) * tk + j] ?? 0)
                    }
                    let m = s.max() ?? 0
                    let z = s.reduce(0) { $0 + Foundation.exp($1 - m) }
                    for c in 0..<dim {
                        var acc = 0.0
                        for j in 0..<tk { acc += Foundation.exp(s[j] - m) / z * Double(v[(p * tk + j) * dim + c]) }
                        ref[(p * tq + i) * dim + c] = Float(acc)
                    }
                }
            }
            #expect(nmse(o, ref) < 1e-10, "attention b\(bsz) h\(heads) \(tq)x\(tk) d\(dim): nmse \(nmse(o, ref))")
        }
    }

    /// The batch-reduce GEMM (C = alpha * sum_b A_b B_b + beta * C) against a plain sum of
    /// products, split into column panels and into row panels, with guard regions around C; on
    /// OpenCL and Vulkan devices (which leave it to the CPU backend) the same.
    @Test func batchReduceGemmSumsItsProducts() throws {
        var rng = TestRNG(29)
        for (m, n, k, b0, b1, transB) in [(9, 3001, 7, 3, 2, false), (301, 5, 6, 2, 3, false), (13, 1501, 5, 1, 4, true)] {
            let sa1 = m * k + 1, sb1 = k * n + 2, sa0 = b1 * sa1 + 3, sb0 = b1 * sb1 + 5
            let a = rng.values(b0 * sa0), b = rng.values(b0 * sb0)
            let guardCount = 17, c0 = rng.values(m * n)
            var ref = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                for j in 0..<n {
                    var s = 0.0
                    for p in 0..<b0 {
                        for q in 0..<b1 {
                            for l in 0..<k {
                                let bv = transB ? b[p * sb0 + q * sb1 + j * k + l] : b[p * sb0 + q * sb1 + l * n + j]
                                s += Double(a[p * sa0 + q * sa1 + i * k + l]) * Double(bv)
                            }
                        }
                    }
                    ref[i * n + j] = Float(0.5 * s + 0.25 * Double(c0[i * n + j]))
                }
            }
            var d = GemmDesc(m: m, n: n, k: k, transB: transB, alpha: 0.5, beta: 0.25)
            d.batch0 = b0; d.strideA0 = sa0; d.strideB0 = sb0
            d.batch1 = b1; d.strideA1 = sa1; d.strideB1 = sb1
            d.reduceBatch = true
            var devices = [cpu]
            try withCL { backends in devices += backends.map { Device(backend: $0) } }
            devices += try vulkanBackends().map { Device(backend: $0) }
            for dev in devices {
                let ta = try Tensor(a, shape: [a.count], on: dev), tb = try Tensor(b, shape: [b.count], on: dev)
                let fence = [Float](repeating: 7.5, count: guardCount)
                let tc = try Tensor(fence + c0 + fence, shape: [m * n + 2 * guardCount], on: dev)
                try dev.run(Op.Gemm(d, a: ta.ref, b: tb.ref, c: BufRef(tc.ref.buffer, tc.ref.offset + guardCount)))
                let out = try tc.toArray()
                #expect(Array(out.prefix(guardCount)) == fence && Array(out.suffix(guardCount)) == fence,
                        "\(dev.info.id): batch-reduce GEMM wrote outside C")
                let got = Array(out[guardCount..<(guardCount + m * n)])
                #expect(!got.contains { $0.isNaN } && nmse(got, ref) < 1e-10,
                        "\(dev.info.id) batch-reduce \(m)x\(n)x\(k) b\(b0)x\(b1): nmse \(nmse(got, ref))")
            }
        }
    }

    /// GroupNorm + SiLU as one op (fused on the CPU backend, one kernel on OpenCL and Vulkan)
    /// equals the two ops, and with a tape it records them (its gradient is the two ops'
    /// gradient).
    @Test func groupNormSiLUMatchesTheTwoOps() throws {
        var rng = TestRNG(37)
        let (n, c, h, w, groups) = (3, 12, 9, 7, 4)
        let x = rng.values(n * c * h * w), g = rng.values(c), b = rng.values(c)
        // Inside withBackends: the shared backends' launch counters see only this test.
        func check(_ dev: Device) throws {
            let tx = try Tensor(x, shape: [n, c, h, w], on: dev)
            let tg = try Tensor(g, shape: [c], on: dev), tb = try Tensor(b, shape: [c], on: dev)
            let kernels = dev.backend as? any KernelBackend
            let before = kernels?.launches ?? 0
            let fusedTensor = try tx.groupNormSiLU(groups: groups, gamma: tg, beta: tb)
            if let kernels { #expect(kernels.launches - before == 1, "\(kernels.label): \(kernels.launches - before) launches") }
            let fused = try fusedTensor.toArray()
            let two = try tx.groupNorm(groups: groups, gamma: tg, beta: tb).silu().toArray()
            #expect(!fused.contains { $0.isNaN } && nmse(fused, two) < 1e-12, "\(dev.info.id): nmse \(nmse(fused, two))")
        }
        try check(cpu)
        try withBackends { backends in
            for be in backends { try check(Device(backend: be)) }
        }
        let xr = try Tensor(x, shape: [n, c, h, w], on: cpu, requiresGrad: true)
        let tg = try Tensor(g, shape: [c], on: cpu), tb = try Tensor(b, shape: [c], on: cpu)
        try xr.groupNormSiLU(groups: groups, gamma: tg, beta: tb).sum().backward()
        let viaFused = try #require(xr.grad).toArray()
        let xr2 = try Tensor(x, shape: [n, c, h, w], on: cpu, requiresGrad: true)
        try xr2.groupNorm(groups: groups, gamma: tg, beta: tb).silu().sum().backward()
        #expect(nmse(viaFused, try #require(xr2.grad).toArray()) < 1e-12)
    }

    /// Packed self-attention (`Tensor.attention(packed:)`, q, k and v side by side): without a
    /// tape the heads are read in place, recorded they are split off; both equal the attention of
    /// the split q, k, v, with a per-head bias, on every device.
    @Test func packedAttentionMatchesTheSplitForm() throws {
        var rng = TestRNG(41)
        let (b, t, heads, dim) = (3, 13, 2, 5)
        let qkv = rng.values(b * t * 3 * heads * dim), bias = rng.values(heads * t * t)
        func split(_ dev: Device) throws -> [Float] {
            let x = try Tensor(qkv, shape: [b, t, 3, heads, dim], on: dev)
            func part(_ i: Int) throws -> Tensor { try x.slice(axis: 2, i, i + 1).reshaped([b, t, heads, dim]) }
            return try Tensor.attention(q: part(0), k: part(1), v: part(2), bias: Tensor(bias, shape: [1, heads, t, t], on: dev),
                                        layout: .bthd).toArray()
        }
        func packed(_ dev: Device, recorded: Bool) throws -> [Float] {
            let x = try Tensor(qkv, shape: [b, t, 3 * heads * dim], on: dev, requiresGrad: recorded)
            let y = try Tensor.attention(packed: x, heads: heads, bias: Tensor(bias, shape: [1, heads, t, t], on: dev))
            #expect(y.shape == [b, t, heads * dim])
            return try y.toArray()
        }
        let want = try split(cpu)
        func check(_ dev: Device) throws {
            for recorded in [false, true] {
                let got = try packed(dev, recorded: recorded)
                #expect(!got.contains { $0.isNaN } && nmse(got, want) < 1e-10,
                        "\(dev.info.id) recorded=\(recorded): nmse \(nmse(got, want))")
            }
        }
        try check(cpu)
        try withBackends { backends in
            for be in backends { try check(Device(backend: be)) }
        }
        #expect(throws: NoiseError.self) { _ = try Tensor.attention(packed: Tensor(qkv, shape: [b, t, 3 * heads * dim], on: cpu), heads: 4) }
    }

    /// GEGLU without a tape (one batched GEMM into both halves, the gate's GELU in place) equals
    /// the recorded form (linear, slices, GELU, product) and the definition.
    @Test func gegluMatchesItsDefinition() throws {
        var rng = TestRNG(31)
        let rows = 37, k = 13, inner = 21
        let x = rng.values(rows * k), w = rng.values(2 * inner * k), b = rng.values(2 * inner)
        let fast = try Tensor.geglu(Tensor(x, shape: [rows, k], on: cpu), weight: Tensor(w, shape: [2 * inner, k], on: cpu),
                                    bias: Tensor(b, shape: [2 * inner], on: cpu))
        let xr = try Tensor(x, shape: [rows, k], on: cpu, requiresGrad: true)
        let taped = try Tensor.geglu(xr, weight: Tensor(w, shape: [2 * inner, k], on: cpu), bias: Tensor(b, shape: [2 * inner], on: cpu))
        #expect(fast.shape == [rows, inner] && taped.shape == [rows, inner])
        var ref = [Float](repeating: 0, count: rows * inner)
        for r in 0..<rows {
            for o in 0..<inner {
                var h = Double(b[o]), g = Double(b[inner + o])
                for l in 0..<k {
                    h += Double(x[r * k + l]) * Double(w[o * k + l])
                    g += Double(x[r * k + l]) * Double(w[(inner + o) * k + l])
                }
                ref[r * inner + o] = Float(h * 0.5 * g * (1 + Foundation.erf(g / 2.0.squareRoot())))
            }
        }
        let fv = try fast.toArray(), tv = try taped.toArray()
        #expect(nmse(fv, ref) < 1e-10 && nmse(tv, ref) < 1e-10, "geglu nmse \(nmse(fv, ref)), taped \(nmse(tv, ref))")
    }

    @Test func parallelWorkFromManyThreadsAtOnce() throws {
        // Several threads run split ops at the same time (the pool serves one; the others run
        // on their own thread): every result must still be exact.
        let failures = Mutexed(0)
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            do {
                let dev = Device.cpuDevice()
                var rng = TestRNG(UInt64(100 + t))
                let x = rng.values(70_001), y = rng.values(70_001)
                for _ in 0..<5 {
                    let s = try (try Tensor(x, shape: [70_001], on: dev) * Tensor(y, shape: [70_001], on: dev)).toArray()
                    if (0..<70_001).contains(where: { s[$0] != x[$0] * y[$0] }) { failures.add(1) }
                }
            } catch {
                failures.add(1)
            }
        }
        #expect(failures.value == 0)
    }

    @Test func openCLBufferPoolReusesMemoryAndKeepsData() throws {
        try withCL { backends in
            for be in backends {
                let dev = Device(backend: be)
                let before = be.poolStatistics
                // Freed, then the same size again: served from the pool, holding the new data.
                for round in 0..<3 {
                    let data = (0..<50_000).map { Float($0 % 977) + Float(round) }
                    let t = try Tensor(data, shape: [50_000], on: dev)
                    #expect(try t.toArray() == data)
                }
                let after = be.poolStatistics
                #expect(after.hits >= before.hits + 2, "pool hits \(before.hits) -> \(after.hits)")
                #expect(after.idleBytes <= after.idleLimit)
            }
            // With the pool off nothing is kept.
            guard !backends.isEmpty else { return }
            let off = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_DEVICE_POOL_MB": "0"]))
            let dev = Device(backend: off)
            for _ in 0..<2 { _ = try Tensor.zeros([50_000], on: dev) }
            #expect(off.poolStatistics.hits == 0 && off.poolStatistics.idleBytes == 0)
        }
    }
}

/// A counter shared by concurrent test work.
final class Mutexed: @unchecked Sendable {
    private let lock = NSLock()
    private var v: Int
    init(_ v: Int) { self.v = v }
    func add(_ d: Int) { lock.lock(); v += d; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return v }
}
