import Foundation

extension KernelBackend {
    /// Work-group size of the SVD kernels: 1 on CPU devices (one item walks a row pair),
    /// 64 on GPUs (less where the device's work-group limit is lower);
    /// `NOISEAR_KERNEL_DEFINES=SVD_WG=N` (a power of two, checked when the backend opens)
    /// overrides it.
    var svdWorkGroup: Int {
        let v = params["SVD_WG"]
        if v > 0 { return v }
        if params.profile == .cpu { return 1 }
        var wg = 64
        while wg > 1 && (wg > limits.maxLocal(0) || 3 * 8 * wg > limits.localMemoryBytes) { wg /= 2 }
        return wg
    }

    /// One-sided Jacobi SVD (`Kernels/svd.cl`): sweeps of block round-robin launches with a
    /// per-matrix rotation flag read back after each sweep, then norms, ranks, one batched GEMM
    /// (A Vh^T) and a Gram-Schmidt kernel for U.
    /// With `precondition` the sweeps run on R of the pivoted QR factorisation of a^T, which is
    /// computed on the host (`PivotedQR`).
    public func svd(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef,
                    tolerance: Float, maxSweeps: Int, precondition: Bool) throws -> Int {
        try runSVD(batch: batch, n: n, a: a, u: u, s: s, vt: vt, maxSweeps: maxSweeps, precondition: precondition) {
            try jacobiSVD(batch: batch, n: n, a: $0, u: $1, s: s, vt: $2, tolerance: tolerance, maxSweeps: maxSweeps)
        }
    }

    /// The plain Jacobi SVD on the device (arguments checked by `svd`).
    func jacobiSVD(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef,
                   tolerance: Float, maxSweeps: Int) throws -> Int {
        let nn = n * n
        let wg = svdWorkGroup
        try require(wg > 0 && wg & (wg - 1) == 0, "SVD_WG=\(wg) must be a power of two")
        let extra = ["SVD_WG": wg]
        let w = try scratchBuffer("svdW", batch * nn)
        let state = try scratchBuffer("svdState", 3 * batch)
        try launch("svd.cl", "svd_prepare", extra: extra, global: [wg, batch], local: [wg, 1],
                   ref(a) + [.buf(w), .i32(n), .buf(state), .i32(batch)])
        // Block pairs per round: enough work-groups to fill the compute units, blocks of at
        // least 8 rows.
        var pairs = 1
        while batch * pairs < max(parallelism, 1) && 2 * (pairs + 1) * 8 <= n { pairs += 1 }
        let blocks = 2 * pairs
        // Squared row norms (double where the device has fp64: two floats each).
        let rowNorms = try scratchBuffer("svdRowNorms", 2 * batch * n)
        var sweeps = 0
        var flags = [Float](repeating: 0, count: 2 * batch)
        while n >= 2 && sweeps < maxSweeps {
            sweeps += 1
            try launch("svd.cl", "svd_sweep_norms", extra: extra, global: [n, batch],
                       [.buf(w), .buf(rowNorms), .i32(n), .buf(state), .i32(batch)])
            for round in 0..<blocks {
                let groups = round < blocks - 1 ? pairs : blocks
                try launch("svd.cl", "svd_round", extra: extra, global: [groups * wg, batch], local: [wg, 1],
                           [.buf(w), .buf(rowNorms), .i32(n), .i32(blocks), .i32(round), .buf(state), .i32(batch),
                            .f32(tolerance)])
            }
            try flags.withUnsafeMutableBufferPointer { try download(BufRef(state), into: $0) }
            var allDone = true
            for b in 0..<batch {
                if flags[b] == 0 { flags[batch + b] = 1 } else { allDone = false }
                flags[b] = 0
            }
            if allDone { break }
            try flags.withUnsafeBufferPointer { try upload($0, to: BufRef(state)) }
        }
        let norms = try scratchBuffer("svdNorms", batch * n)
        try launch("svd.cl", "svd_norms", extra: extra, global: [n, batch],
                   [.buf(w), .i32(n), .buf(norms)])
        try launch("svd.cl", "svd_sort", extra: extra, global: [n, batch],
                   [.buf(w), .i32(n), .buf(norms), .buf(state), .i32(batch)] + ref(s) + ref(vt))
        // W becomes Ut = Vh A^T: row k is A vh_k, U's column k up to scale.
        try gemm(GemmDesc(m: n, n: n, k: n, transB: true).batched(batch, strideA: nn, strideB: nn, strideC: nn),
                 a: vt, b: a, c: BufRef(w))
        let proj = try scratchBuffer("svdProj", batch * n)
        try launch("svd.cl", "svd_orthonormalize", extra: extra, global: [wg, batch], local: [wg, 1],
                   [.buf(w)] + ref(vt) + ref(s) + [.buf(state), .i32(batch), .buf(proj), .i32(n)])
        try copy(shape: [batch, n, n], src: Strided(BufRef(w), strides: [nn, 1, n]),
                 dst: Strided(u, strides: [nn, n, 1]))
        return sweeps
    }
}
