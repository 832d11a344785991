import Foundation

extension Tensor {
    /// Singular value decomposition of a square matrix [n, n] or a batch of them [B, n, n]:
    /// a = u diag(s) vh with u and vh orthogonal and s descending (one-sided Jacobi, see
    /// `Backend.svd`; by default preconditioned by a pivoted QR factorisation, see
    /// `PivotedQR`). For zero singular values the columns of u and rows of vh are completed to
    /// orthonormal bases.
    ///
    /// Not differentiable: the results are detached from the tape (an input that requires
    /// gradients is read as a constant).
    /// - Parameters:
    ///   - tolerance: a sweep ends the iteration when every pair of rows has
    ///     |cos| <= tolerance; by default sqrt(n) times the Float unit roundoff, LAPACK
    ///     sgesvj's criterion (9.5e-7 at n = 256).
    ///   - maxSweeps: the most sweeps run when that is never reached.
    ///   - precondition: sweep R of the pivoted QR factorisation of a^T rather than a (far
    ///     fewer sweeps; false runs the plain Jacobi, for comparison).
    public static func svd(_ a: Tensor, tolerance: Float? = nil, maxSweeps: Int = 30, precondition: Bool = true) throws
        -> (u: Tensor, s: Tensor, vh: Tensor)
    {
        let r = try svdReportingSweeps(a, tolerance: tolerance, maxSweeps: maxSweeps, precondition: precondition)
        return (r.u, r.s, r.vh)
    }

    /// `svd` that also returns the sweeps used (the most over the batch).
    public static func svdReportingSweeps(_ a: Tensor, tolerance: Float? = nil, maxSweeps: Int = 30,
                                          precondition: Bool = true) throws
        -> (u: Tensor, s: Tensor, vh: Tensor, sweeps: Int)
    {
        try requireShape((a.rank == 2 || a.rank == 3) && a.shape[a.rank - 1] == a.shape[a.rank - 2],
                         "svd expects [n, n] or [B, n, n], got \(a.shape)")
        let n = a.shape[a.rank - 1], batch = a.rank == 3 ? a.shape[0] : 1
        let tolerance = tolerance ?? Float(max(n, 1)).squareRoot() * Float.ulpOfOne / 2
        try require(tolerance >= 0 && tolerance.isFinite, "svd tolerance \(tolerance) must be finite and >= 0")
        try require(maxSweeps >= 1, "svd maxSweeps \(maxSweeps) must be at least 1")
        let lead = a.rank == 3 ? [batch] : []
        let device = a.device
        let u = try Tensor.empty(lead + [n, n], on: device)
        let s = try Tensor.empty(lead + [n], on: device)
        let vh = try Tensor.empty(lead + [n, n], on: device)
        let sweeps = try device.run(Op.SVD(batch: batch, n: n, a: a.ref, u: u.ref, s: s.ref, vt: vh.ref,
                                       tolerance: tolerance, maxSweeps: maxSweeps, precondition: precondition))
        return (u, s, vh, sweeps)
    }
}
