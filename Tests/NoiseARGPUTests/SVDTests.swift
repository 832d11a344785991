import Foundation
import NoiseARGPU
import Testing

/// Batched one-sided Jacobi SVD on the CPU backend and every OpenCL backend: descending
/// singular values, reconstruction, orthogonality of U and Vh (also for rank-deficient input),
/// and the singular values of the NPNet fixture against LAPACK's.
@Suite struct SVDTests {
    /// Host-side checks in Double; returns a description of the first failure, or nil.
    static func check(_ a: [Float], batch: Int, n: Int, u: [Float], s: [Float], vh: [Float],
                      tol: Double = 1e-5) -> String? {
        let nn = n * n
        for b in 0..<batch {
            let ab = Array(a[(b * nn)..<((b + 1) * nn)]).map(Double.init)
            let ub = Array(u[(b * nn)..<((b + 1) * nn)]).map(Double.init)
            let vb = Array(vh[(b * nn)..<((b + 1) * nn)]).map(Double.init)
            let sb = Array(s[(b * n)..<((b + 1) * n)]).map(Double.init)
            if sb.contains(where: { !$0.isFinite || $0 < 0 }) { return "matrix \(b): S has negative or non-finite values" }
            for k in 1..<max(n, 1) where sb[k] > sb[k - 1] {
                return "matrix \(b): S not descending at \(k): \(sb[k - 1]) < \(sb[k])"
            }
            var num = 0.0, den = 0.0
            for r in 0..<n {
                for c in 0..<n {
                    var x = 0.0
                    for k in 0..<n { x += ub[r * n + k] * sb[k] * vb[k * n + c] }
                    num += (x - ab[r * n + c]) * (x - ab[r * n + c])
                    den += ab[r * n + c] * ab[r * n + c]
                }
            }
            let rel = den > 0 ? (num / den).squareRoot() : num.squareRoot()
            if !(rel <= tol) { return "matrix \(b): reconstruction error \(rel) > \(tol)" }
            var eu = 0.0, ev = 0.0
            for i in 0..<n {
                for j in 0..<n {
                    var du = 0.0, dv = 0.0
                    for k in 0..<n {
                        du += ub[k * n + i] * ub[k * n + j]  // (U^T U)_ij
                        dv += vb[i * n + k] * vb[j * n + k]  // (Vh Vh^T)_ij
                    }
                    let id = i == j ? 1.0 : 0.0
                    eu = max(eu, abs(du - id))
                    ev = max(ev, abs(dv - id))
                }
            }
            if !(eu <= tol) { return "matrix \(b): max |U^T U - I| = \(eu) > \(tol)" }
            if !(ev <= tol) { return "matrix \(b): max |Vh Vh^T - I| = \(ev) > \(tol)" }
        }
        return nil
    }

    /// The CPU device and one device per OpenCL and Vulkan backend (sizes capped on CPU devices).
    static func devices(n: Int, _ body: (String, Device) throws -> Void) throws {
        /// The largest n run on a backend whose device is a CPU (PoCL, lavapipe): the GPU-style
        /// sets are there to check work-group code, and PoCL's barriers make large sizes take
        /// minutes; Mesa's llvmpipe ends any shader loop after 65,535 iterations in all, which
        /// the orthonormalisation passes near n = 96 (n = 30 with one item per matrix).
        func cpuDeviceLimit(_ be: any KernelBackend) -> Int {
            if be.info.backend == "vulkan" { return be.params.profile == .cpu ? 16 : 64 }
            return be.params.profile == .gpu ? 64 : Int.max
        }
        try body("cpu", Device.cpuDevice())
        try withBackends { backends in
            for be in backends where be.info.kind != .cpu || n <= cpuDeviceLimit(be) {
                try body(be.label, Device(backend: be))
            }
        }
    }

    /// Runs the SVD of `a` [batch, n, n] on every device and checks the results; returns the
    /// singular values from each device.
    @discardableResult
    static func run(_ name: String, _ a: [Float], batch: Int, n: Int) throws -> [(tag: String, s: [Float])] {
        var all: [(tag: String, s: [Float])] = []
        try devices(n: n) { tag, device in
            let t = try Tensor(a, shape: [batch, n, n], on: device)
            let r = try Tensor.svdReportingSweeps(t)
            #expect(r.u.shape == [batch, n, n] && r.s.shape == [batch, n] && r.vh.shape == [batch, n, n])
            #expect(r.sweeps <= 30, "\(name) [\(tag)]: \(r.sweeps) sweeps")
            let s = try r.s.toArray()
            let failure = check(a, batch: batch, n: n, u: try r.u.toArray(), s: s, vh: try r.vh.toArray())
            #expect(failure == nil, "\(name) [\(tag)], \(r.sweeps) sweeps: \(failure ?? "")")
            all.append((tag, s))
        }
        return all
    }

    /// A random orthogonal n x n matrix (Gram-Schmidt of random rows, in Double).
    static func orthogonal(_ n: Int, _ rng: inout TestRNG) -> [Double] {
        var q = [Double](repeating: 0, count: n * n)
        var k = 0
        while k < n {
            var x = (0..<n).map { _ in Double(rng.unit()) - 0.5 }
            for _ in 0..<2 {
                for j in 0..<k {
                    var d = 0.0
                    for e in 0..<n { d += q[j * n + e] * x[e] }
                    for e in 0..<n { x[e] -= d * q[j * n + e] }
                }
            }
            let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm < 1e-3 { continue }
            for e in 0..<n { q[k * n + e] = x[e] / norm }
            k += 1
        }
        return q
    }

    /// Q1 diag(sigma) Q2 for random orthogonal Q1, Q2, rounded to Float.
    static func withSingularValues(_ sigma: [Double], _ rng: inout TestRNG) -> [Float] {
        let n = sigma.count
        let q1 = orthogonal(n, &rng), q2 = orthogonal(n, &rng)
        var a = [Float](repeating: 0, count: n * n)
        for r in 0..<n {
            for c in 0..<n {
                var x = 0.0
                for k in 0..<n { x += q1[r * n + k] * sigma[k] * q2[k * n + c] }
                a[r * n + c] = Float(x)
            }
        }
        return a
    }

    @Test(arguments: [(1, 1), (1, 2), (2, 2), (3, 7), (2, 33), (1, 64), (3, 64), (1, 256), (2, 256)])
    func randomMatrices(batch: Int, n: Int) throws {
        var rng = TestRNG(UInt64(100 + 7 * n + batch))
        let a = (0..<(batch * n * n)).map { _ in 2 * rng.unit() - 1 }
        let s = try Self.run("random \(batch)x\(n)x\(n)", a, batch: batch, n: n)
        // Every backend agrees on the singular values.
        for (tag, other) in s.dropFirst() {
            let scale = Double(s[0].s.max() ?? 1)
            let diff = zip(other, s[0].s).map { abs(Double($0) - Double($1)) }.max() ?? 0
            #expect(diff <= 1e-5 * max(scale, 1e-30), "random \(batch)x\(n) [\(tag)]: backends differ by \(diff)")
        }
    }

    @Test(arguments: [7, 32, 64])
    func illConditioned(n: Int) throws {
        var rng = TestRNG(UInt64(900 + n))
        let half = n / 2
        let cases: [(String, [Double])] = [
            ("repeated", (0..<n).map { $0 < half ? 2.0 : 0.5 }),
            ("tiny", (0..<n).map { $0 % 3 == 0 ? 1e-6 : 1.0 + Double($0) / Double(n) }),
            ("graded", (0..<n).map { Foundation.pow(10.0, -6.0 * Double($0) / Double(max(n - 1, 1))) }),
            ("rank n/2", (0..<n).map { $0 < half ? 1.0 + Double($0) : 0 }),
            ("rank 1", (0..<n).map { $0 == 0 ? 3.0 : 0 }),
        ]
        for (name, sigma) in cases {
            let a = Self.withSingularValues(sigma, &rng)
            let got = try Self.run("\(name) n=\(n)", a, batch: 1, n: n)
            let expected = sigma.sorted(by: >)
            for (tag, s) in got {
                let diff = zip(s, expected).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(diff <= 1e-5 * expected[0], "\(name) n=\(n) [\(tag)]: singular values off by \(diff)")
            }
        }
        // An exactly zero matrix and a batch mixing zero and identity-like matrices.
        let zero = [Float](repeating: 0, count: 2 * n * n)
        var mixed = zero
        for i in 0..<n { mixed[n * n + i * n + (n - 1 - i)] = 2 }
        try Self.run("zero n=\(n)", zero, batch: 2, n: n)
        try Self.run("zero+permutation n=\(n)", mixed, batch: 2, n: n)
    }

    /// The QR preconditioning (`PivotedQR`) cuts the sweeps of random matrices (measured at
    /// n = 96, `bench svd`: 10 sweeps plain, 8 preconditioned) and gives the same singular
    /// values, on every device; the default tolerance (sqrt(n) unit roundoffs) passes the
    /// same checks.
    @Test func preconditioningCutsSweeps() throws {
        var rng = TestRNG(4242)
        let batch = 2, n = 96
        let a = (0..<(batch * n * n)).map { _ in 2 * rng.unit() - 1 }
        try Self.devices(n: n) { tag, device in
            let t = try Tensor(a, shape: [batch, n, n], on: device)
            let plain = try Tensor.svdReportingSweeps(t, precondition: false)
            let pre = try Tensor.svdReportingSweeps(t)
            #expect(pre.sweeps < plain.sweeps, "[\(tag)] preconditioned \(pre.sweeps) sweeps, plain \(plain.sweeps)")
            for (name, r) in [("plain", plain), ("preconditioned", pre)] {
                let failure = Self.check(a, batch: batch, n: n, u: try r.u.toArray(), s: try r.s.toArray(),
                                         vh: try r.vh.toArray())
                #expect(failure == nil, "[\(tag)] \(name): \(failure ?? "")")
            }
            let s0 = try plain.s.toArray(), s1 = try pre.s.toArray()
            let diff = zip(s0, s1).map { abs(Double($0) - Double($1)) }.max() ?? 0
            #expect(diff <= 1e-5 * Double(s0.max() ?? 1), "[\(tag)] singular values differ by \(diff)")
        }
    }

    /// NPNet's noise as [B, 2L, 2L] (channel 0 top-left, 1 top-right, 2 bottom-left,
    /// 3 bottom-right), whose float64 LAPACK SVD the fixture holds.
    @Test func npnetFixtureSingularValues() throws {
        guard let dir = fixturesDirectory() else { return }
        let url = dir.appendingPathComponent("npnet/npnet_tiny.safetensors")
        guard FileManager.default.fileExists(atPath: url.path) else {
            print("skipping: \(url.path) not found")
            return
        }
        let file = try SafeTensorsFile.read(url, skippingUnsupported: true)
        let noise = try file.tensor("input.noise"), ref = try file.tensor("intermediate.svd_S")
        #expect(noise.shape.count == 4 && noise.shape[1] == 4)
        let batch = noise.shape[0], l = noise.shape[2], n = 2 * l
        var a = [Float](repeating: 0, count: batch * n * n)
        for b in 0..<batch {
            for c in 0..<4 {
                let r0 = (c / 2) * l, c0 = (c % 2) * l
                for y in 0..<l {
                    for x in 0..<l {
                        a[(b * n + r0 + y) * n + c0 + x] = noise.data[((b * 4 + c) * l + y) * l + x]
                    }
                }
            }
        }
        let got = try Self.run("npnet fixture", a, batch: batch, n: n)
        for (tag, s) in got {
            for b in 0..<batch {
                let want = ref.data[(b * n)..<((b + 1) * n)], have = s[(b * n)..<((b + 1) * n)]
                let diff = zip(have, want).map { abs(Double($0) - Double($1)) }.max() ?? 0
                let scale = Double(want.first ?? 1)
                #expect(diff <= 1e-5 * scale, "[\(tag)] npnet matrix \(b): S differs from LAPACK by \(diff)")
                // Each value to 1e-5 of itself (the smallest is about 1/600 of the largest;
                // measured up to 7e-6 here, mostly from rounding the float64 input to float32).
                let rel = zip(have, want).map { abs(Double($0) - Double($1)) / Double($1) }.max() ?? 0
                #expect(rel <= 1e-5, "[\(tag)] npnet matrix \(b): S differs from LAPACK by \(rel) relative")
            }
        }
    }

    /// The primitive itself with every buffer at an offset inside a guarded buffer: nothing
    /// outside the outputs is written, the input is unchanged, the results check out.
    @Test func backendGuardsAndOffsets() throws {
        var rng = TestRNG(77)
        let batch = 2, n = 9
        let a = (0..<(batch * n * n)).map { _ in 2 * rng.unit() - 1 }
        func run(_ tag: String, _ inner: any Backend) throws {
            let be = RecordingBackend(inner, label: tag, coverage: OpCoverageScope.differential)
            let ga = try Guarded(be, a)
            let gu = try Guarded(be, rng.values(batch * n * n)), gs = try Guarded(be, rng.values(batch * n))
            let gv = try Guarded(be, rng.values(batch * n * n))
            for precondition in [false, true] {
                let sweeps = try be.svd(batch: batch, n: n, a: ga.ref, u: gu.ref, s: gs.ref, vt: gv.ref,
                                        tolerance: 1e-7, maxSweeps: 30, precondition: precondition)
                try be.synchronize()
                let name = "\(tag)\(precondition ? " preconditioned" : "")"
                #expect(sweeps >= 1 && sweeps <= 30, "\(name): \(sweeps) sweeps")
                let intact = try [ga, gu, gs, gv].allSatisfy { try $0.guardsIntact() }
                #expect(intact, "\(name): wrote outside its outputs")
                #expect(try ga.values() == a, "\(name): input changed")
                let failure = Self.check(a, batch: batch, n: n, u: try gu.values(), s: try gs.values(), vh: try gv.values())
                #expect(failure == nil, "\(name): \(failure ?? "")")
            }
        }
        try run("cpu", CPUBackend())  // (labels as in the differential harness)
        // OpenCL backends only inside withCL (one test at a time uses them).
        try withBackends { backends in
            for be in backends { try run(be.label, be) }
        }
    }

    /// An OpenCL device with the svd family disabled runs it on the CPU backend (inside
    /// `withCL`: OpenCL runtimes are used by one test at a time).
    @Test func cpuFallback() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let be = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_DISABLE_OPS": "svd"]))
            #expect(!be.enables(.svd))
            let device = Device(backend: be)
            var warnings: [String] = []
            device.warn = { warnings.append($0) }
            var rng = TestRNG(78)
            let n = 12
            let a = (0..<(2 * n * n)).map { _ in 2 * rng.unit() - 1 }
            let r = try Tensor.svd(try Tensor(a, shape: [2, n, n], on: device))
            #expect(r.u.device === device && r.s.device === device)
            let failure = Self.check(a, batch: 2, n: n, u: try r.u.toArray(), s: try r.s.toArray(), vh: try r.vh.toArray())
            #expect(failure == nil, "fallback: \(failure ?? "")")
            #expect(warnings.count == 1)
        }
    }

    @Test func shapesAndErrors() throws {
        let device = Device.cpuDevice()
        let single = try Tensor([3, 0, 0, -2], shape: [2, 2], on: device)
        let (u, s, vh) = try Tensor.svd(single)
        #expect(u.shape == [2, 2] && s.shape == [2] && vh.shape == [2, 2])
        #expect(try s.toArray() == [3, 2])
        for bad in [[4], [2, 3], [2, 3, 4], [1, 2, 2, 2]] {
            let t = try Tensor.zeros(bad, on: device)
            #expect(throws: NoiseError.self) { _ = try Tensor.svd(t) }
            do {
                _ = try Tensor.svd(t)
            } catch let e as NoiseError {
                if case .shapeMismatch = e {} else { Issue.record("shape \(bad): expected shapeMismatch, got \(e)") }
            }
        }
        #expect(throws: NoiseError.self) { _ = try Tensor.svd(single, maxSweeps: 0) }
    }
}
