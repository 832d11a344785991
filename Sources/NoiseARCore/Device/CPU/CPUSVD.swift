import CBLAS
import Foundation

/// One-sided Jacobi (Hestenes) SVD on the CPU backend: the reference the OpenCL kernels in
/// `Kernels/svd.cl` are traced to.
///
/// The rows of each matrix (contiguous in row-major storage) are orthogonalised by plane
/// rotations from the left: J A = W with orthogonal rows, so A = J^T W. Then S holds the row
/// norms of W (sorted descending), Vh its normalised rows and U = J^T, which is recovered as
/// the normalised columns of A Vh^T (one GEMM) followed by a Gram-Schmidt pass in descending
/// order of S (so columns of tiny singular values, which A Vh^T determines badly, still come
/// out orthonormal). Rows or columns belonging to negligible singular values (below 1e-15 of
/// the Frobenius norm) are completed with unit vectors orthogonalised against the others, so
/// U and Vh are orthogonal even for rank-deficient input.
///
/// A pair of rows is rotated when |w_i . w_j| > tolerance * |w_i| |w_j|; a sweep without
/// rotations ends the iteration. Rows stay Float; the squared norms are kept in Double (exact
/// at each sweep's start, then updated by the rotation formulas, recomputed from the rows once
/// a pair is nearly orthogonal), and for n >= 32 the dot product and the rotation are
/// OpenBLAS' sdot and srot, which use the host's vector width where Swift code is compiled for
/// baseline x86-64. Pairs are visited in a block round-robin order: the rows split into 2T blocks,
/// and each round runs T disjoint block pairs in parallel (then the blocks' own pairs), so a
/// single matrix uses T threads with 2T synchronisations per sweep; a batch of at least as
/// many matrices as cores runs one matrix per thread in plain row-cyclic order.
enum JacobiSVD {
    /// Rows below this fraction of the Frobenius norm count as zero.
    static let negligible: Double = 1e-15

    /// Sweeps the rows of the n x n matrix `w` (in place) until a sweep rotates nothing or
    /// `maxSweeps` sweeps ran; returns the sweeps run.
    static func orthogonalizeRows(_ w: UnsafeMutablePointer<Float>, n: Int, tolerance: Double,
                                  maxSweeps: Int, threads: Int) -> Int {
        if n < 2 { return 0 }
        var frob2 = 0.0
        for i in 0..<n { frob2 += dots(w + i * n, w + i * n, n).0 }
        let small = frob2 * negligible * negligible
        if frob2 == 0 || !frob2.isFinite { return 0 }
        let t = max(1, min(threads, n / 16))
        let rotated = UnsafeMutablePointer<Bool>.allocate(capacity: 2 * t)
        defer { rotated.deallocate() }
        // Squared row norms, exact at the start of each sweep and updated through rotations.
        let norms = UnsafeMutablePointer<Double>.allocate(capacity: n)
        defer { norms.deallocate() }
        var sweeps = 0
        while sweeps < maxSweeps {
            sweeps += 1
            for i in 0..<n { norms[i] = dots(w + i * n, w + i * n, n).0 }
            rotated.update(repeating: false, count: 2 * t)
            if t == 1 {
                var any = false
                for i in 0..<(n - 1) {
                    for j in (i + 1)..<n where rotatePair(w, n, norms, i, j, tolerance, small) { any = true }
                }
                rotated[0] = any
            } else {
                let blocks = 2 * t
                let start = { (b: Int) in b * n / blocks }
                for r in 0..<(blocks - 1) {
                    parallelFor(t) { k in
                        let (bi, bj) = roundRobinPair(round: r, slot: k, players: blocks)
                        var any = false
                        for i in start(bi)..<start(bi + 1) {
                            for j in start(bj)..<start(bj + 1) where rotatePair(w, n, norms, i, j, tolerance, small) {
                                any = true
                            }
                        }
                        if any { rotated[k] = true }
                    }
                }
                parallelFor(blocks) { b in
                    var any = false
                    let end = start(b + 1)
                    for i in start(b)..<end {
                        for j in (i + 1)..<end where rotatePair(w, n, norms, i, j, tolerance, small) { any = true }
                    }
                    if any { rotated[b] = true }
                }
            }
            if !(0..<(2 * t)).contains(where: { rotated[$0] }) { break }
        }
        return sweeps
    }

    /// The pair of players (`players` even) meeting in `slot` of `round` of a circle-method
    /// round robin: player 0 stays, the others rotate; every pair meets once in players - 1 rounds.
    @inline(__always)
    static func roundRobinPair(round r: Int, slot k: Int, players m: Int) -> (Int, Int) {
        let pos = { (x: Int) in x == 0 ? 0 : (x - 1 + r) % (m - 1) + 1 }
        return (pos(k), pos(m - 1 - k))
    }

    /// |x|^2, |y|^2 and x . y: Float products summed in Float over chunks of 32 elements (4
    /// per lane), the chunk sums accumulated in Double. The cosine error stays near 1e-8, well
    /// below the tolerances used, at little more than the cost of a Float dot product.
    @inline(__always)
    static func dots(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int)
        -> (Double, Double, Double)
    {
        // Plain multiply-add throughout: addProduct becomes a libm fma call per lane on
        // baseline x86-64.
        var aa = SIMD8<Double>(), bb = SIMD8<Double>(), ab = SIMD8<Double>()
        var k = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while k + 32 <= n {
            var fa = SIMD8<Float>(), fb = SIMD8<Float>(), fp = SIMD8<Float>()
            for c in 0..<4 {
                let xv = rx.loadUnaligned(fromByteOffset: 4 * (k + 8 * c), as: SIMD8<Float>.self)
                let yv = ry.loadUnaligned(fromByteOffset: 4 * (k + 8 * c), as: SIMD8<Float>.self)
                fa += xv * xv
                fb += yv * yv
                fp += xv * yv
            }
            aa += SIMD8<Double>(fa)
            bb += SIMD8<Double>(fb)
            ab += SIMD8<Double>(fp)
            k += 32
        }
        var a = aa.sum(), b = bb.sum(), p = ab.sum()
        while k < n {
            let xs = Double(x[k]), ys = Double(y[k])
            a += xs * xs; b += ys * ys; p += xs * ys
            k += 1
        }
        return (a, b, p)
    }

    /// x . y: Float products summed in Float over chunks of 32, the chunks in Double.
    @inline(__always)
    static func dot1(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> Double {
        var ab = SIMD8<Double>()
        var k = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while k + 32 <= n {
            var f0 = SIMD8<Float>(), f1 = SIMD8<Float>()
            for c in stride(from: 0, to: 4, by: 2) {
                f0 += rx.loadUnaligned(fromByteOffset: 4 * (k + 8 * c), as: SIMD8<Float>.self)
                    * ry.loadUnaligned(fromByteOffset: 4 * (k + 8 * c), as: SIMD8<Float>.self)
                f1 += rx.loadUnaligned(fromByteOffset: 4 * (k + 8 * c + 8), as: SIMD8<Float>.self)
                    * ry.loadUnaligned(fromByteOffset: 4 * (k + 8 * c + 8), as: SIMD8<Float>.self)
            }
            ab += SIMD8<Double>(f0 + f1)
            k += 32
        }
        var p = ab.sum()
        while k < n {
            p += Double(x[k]) * Double(y[k])
            k += 1
        }
        return p
    }

    /// Rotates rows i and j of `w` to orthogonality when their cosine exceeds `tol`. `norms`
    /// holds the squared row norms: updated by the rotation formulas while the angles are large,
    /// recomputed from the rows once a pair is nearly orthogonal (where the angle depends on
    /// their difference).
    @inline(__always)
    static func rotatePair(_ w: UnsafeMutablePointer<Float>, _ n: Int, _ norms: UnsafeMutablePointer<Double>,
                           _ i: Int, _ j: Int, _ tol: Double, _ small: Double) -> Bool {
        let x = w + i * n, y = w + j * n
        // Float products summed in Double: OpenBLAS' sdot is accurate to about 1e-8 on some
        // hosts (AMD Zen) but not others (its AVX-512 kernel on Intel Xeon left the smallest
        // singular values of the NPNet fixture 1.07e-5 off LAPACK's, against 7e-6 otherwise);
        // this costs no measurable time (whole-process bench svd ratio 1.02, within noise).
        var p = dot1(x, y, n)
        var a = norms[i], b = norms[j]
        if a <= small || b <= small { return false }
        let scale = (a * b).squareRoot()
        if abs(p) <= tol * scale { return false }
        if abs(p) < 1e-3 * scale {
            (a, b, p) = dots(x, y, n)
            norms[i] = a
            norms[j] = b
            if a <= small || b <= small || abs(p) <= tol * (a * b).squareRoot() { return false }
        }
        // x' = c x - s y, y' = s x + c y with x' . y' = 0; t = s / c is the smaller root of
        // t^2 + 2 zeta t - 1 = 0, and then |x'|^2 = a - t p, |y'|^2 = b + t p.
        let zeta = (b - a) / (2 * p)
        let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
        let c = 1 / (1 + t * t).squareRoot()
        if n >= 32 {
            // srot: x' = c x + s y, y' = c y - s x.
            cblas_srot(Int32(n), x, 1, y, 1, Float(c), Float(-c * t))
        } else {
            rotate(x, y, n, Float(c), Float(c * t))
        }
        norms[i] = max(a - t * p, 0)
        norms[j] = b + t * p
        return true
    }

    @inline(__always)
    static func rotate(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                       _ c: Float, _ s: Float) {
        let cv = SIMD8<Float>(repeating: c), sv = SIMD8<Float>(repeating: s)
        let rx = UnsafeMutableRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var k = 0
        while k + 8 <= n {
            let xv = rx.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self)
            let yv = ry.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self)
            rx.storeBytes(of: cv * xv - sv * yv, toByteOffset: 4 * k, as: SIMD8<Float>.self)
            ry.storeBytes(of: sv * xv + cv * yv, toByteOffset: 4 * k, as: SIMD8<Float>.self)
            k += 8
        }
        while k < n {
            let xs = x[k], ys = y[k]
            x[k] = c * xs - s * ys
            y[k] = s * xs + c * ys
            k += 1
        }
    }

    /// Float dot product (for the Gram-Schmidt passes).
    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        var k = 0
        while k + 16 <= n {
            acc0 += rx.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self)
                * ry.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self)
            acc1 += rx.loadUnaligned(fromByteOffset: 4 * k + 32, as: SIMD8<Float>.self)
                * ry.loadUnaligned(fromByteOffset: 4 * k + 32, as: SIMD8<Float>.self)
            k += 16
        }
        var r = (acc0 + acc1).sum()
        while k < n { r += x[k] * y[k]; k += 1 }
        return r
    }

    /// y += a x.
    @inline(__always)
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let av = SIMD8<Float>(repeating: a)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var k = 0
        while k + 8 <= n {
            let yv = ry.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self)
            ry.storeBytes(of: yv + av * rx.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<Float>.self),
                          toByteOffset: 4 * k, as: SIMD8<Float>.self)
            k += 8
        }
        while k < n { y[k] += a * x[k]; k += 1 }
    }

    /// Makes row `k` of `q` (n x n, rows 0..<k orthonormal) orthonormal to the rows before it:
    /// classical Gram-Schmidt, repeated once when the first pass cancels much of the row. When
    /// `complete` is set, or the row vanishes, it is replaced by the next unit vector (from
    /// `nextUnit`) that is not in the span of the rows before it.
    static func orthonormalizeRow(_ q: UnsafeMutablePointer<Float>, n: Int, k: Int, complete: Bool,
                                  nextUnit: inout Int, proj: UnsafeMutablePointer<Float>) {
        let x = q + k * n
        func project() -> (Float, Float) {
            let before = dot(x, x, n).squareRoot()
            for j in 0..<k { proj[j] = dot(q + j * n, x, n) }
            for j in 0..<k { axpy(-proj[j], q + j * n, x, n) }
            return (before, dot(x, x, n).squareRoot())
        }
        var usable = false
        if !complete {
            var (before, after) = project()
            if after < 0.5 * before { (before, after) = project() }
            usable = before > 0 && after > 1e-4 * before && after.isFinite
        }
        // A unit vector e_c keeps at least 1/sqrt(n) of its length for some c not yet used.
        let keep = Float(0.5) / Float(n).squareRoot()
        while !usable && nextUnit < n {
            x.update(repeating: 0, count: n)
            x[nextUnit] = 1
            nextUnit += 1
            _ = project()
            let (_, after) = project()
            usable = after > keep
        }
        let norm = dot(x, x, n).squareRoot()
        if norm > 0 {
            let inv = 1 / norm
            for e in 0..<n { x[e] *= inv }
        }
    }

    /// S (descending) and Vh for one matrix from its orthogonalised rows `w` (rows of
    /// negligible singular values zero, completed later); returns the negligible threshold.
    static func singularValuesAndVh(w: UnsafeMutablePointer<Float>, n: Int, s: UnsafeMutablePointer<Float>,
                                    vt: UnsafeMutablePointer<Float>) -> Double {
        var norms = [Double](repeating: 0, count: n)
        var frob2 = 0.0
        for i in 0..<n {
            norms[i] = dots(w + i * n, w + i * n, n).0
            frob2 += norms[i]
        }
        let sorted = (0..<n).sorted { norms[$0] > norms[$1] || (norms[$0] == norms[$1] && $0 < $1) }
        let threshold = frob2.squareRoot() * negligible
        for (k, i) in sorted.enumerated() {
            let sk = norms[i].squareRoot()
            s[k] = Float(sk)
            let row = vt + k * n, src = w + i * n
            if sk > threshold && sk.isFinite {
                let inv = Float(1 / sk)
                for e in 0..<n { row[e] = src[e] * inv }
            } else {
                row.update(repeating: 0, count: n)
            }
        }
        return threshold
    }
}

extension CPUBackend {
    /// One-sided Jacobi SVD of `batch` row-major n x n matrices (see `JacobiSVD`), with
    /// `precondition` on R of the pivoted QR factorisation of a^T (see `PivotedQR`).
    public func svd(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef,
                    tolerance: Float, maxSweeps: Int, precondition: Bool) throws -> Int {
        try runSVD(batch: batch, n: n, a: a, u: u, s: s, vt: vt, maxSweeps: maxSweeps, precondition: precondition) {
            try jacobiSVD(batch: batch, n: n, a: $0, u: $1, s: s, vt: $2, tolerance: tolerance, maxSweeps: maxSweeps)
        }
    }

    /// The plain one-sided Jacobi SVD of `a` (arguments checked by `svd`).
    func jacobiSVD(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef,
                   tolerance: Float, maxSweeps: Int) throws -> Int {
        let nn = n * n
        let pa = ptr(a), pu = ptr(u), ps = ptr(s), pv = ptr(vt)
        let w = UnsafeMutablePointer<Float>.allocate(capacity: batch * nn)
        defer { w.deallocate() }
        w.update(from: pa, count: batch * nn)
        let sweeps = UnsafeMutablePointer<Int>.allocate(capacity: batch)
        defer { sweeps.deallocate() }
        let cores = WorkerPool.cores
        let tol = Double(tolerance)
        if batch >= cores || n < 64 {
            parallelFor(batch) { b in
                sweeps[b] = JacobiSVD.orthogonalizeRows(w + b * nn, n: n, tolerance: tol, maxSweeps: maxSweeps, threads: 1)
            }
        } else {
            for b in 0..<batch {
                sweeps[b] = JacobiSVD.orthogonalizeRows(w + b * nn, n: n, tolerance: tol, maxSweeps: maxSweeps, threads: cores)
            }
        }
        // S and Vh, then Ut = Vh A^T (rows are U's columns up to scale), then Gram-Schmidt.
        let thresholds = UnsafeMutablePointer<Double>.allocate(capacity: batch)
        defer { thresholds.deallocate() }
        parallelFor(batch) { b in
            thresholds[b] = JacobiSVD.singularValuesAndVh(w: w + b * nn, n: n, s: ps + b * n, vt: pv + b * nn)
        }
        // W is no longer needed: it becomes the Ut scratch.
        for b in 0..<batch {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(n), 1,
                        pv + b * nn, Int32(n), pa + b * nn, Int32(n), 0, w + b * nn, Int32(n))
        }
        parallelFor(batch) { b in
            let ut = w + b * nn, vh = pv + b * nn, sv = ps + b * n
            let proj = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { proj.deallocate() }
            var nextV = 0, nextU = 0
            for k in 0..<n {
                let negligible = !(Double(sv[k]) > thresholds[b])
                if negligible {
                    JacobiSVD.orthonormalizeRow(vh, n: n, k: k, complete: true, nextUnit: &nextV, proj: proj)
                }
                JacobiSVD.orthonormalizeRow(ut, n: n, k: k, complete: negligible, nextUnit: &nextU, proj: proj)
            }
            let ub = pu + b * nn
            for r in 0..<n {
                for k in 0..<n { ub[r * n + k] = ut[k * n + r] }
            }
        }
        var used = 0
        for b in 0..<batch { used = max(used, sweeps[b]) }
        return used
    }
}
