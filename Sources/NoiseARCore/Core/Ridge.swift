import CBLAS
import Foundation

/// Ridge regression in closed form: W, b minimising |X W^T + b - Y|^2 + lambda |W|^2 over rows,
/// solved through LAPACK's Cholesky (OpenBLAS' dposv) in double precision, X and Y centred so
/// the bias is not penalised.
public enum Ridge {
    /// `x` holds n rows of p features, `y` n rows of q targets (row-major). Returns the weight
    /// [q, p] (row-major, as a Linear layer's) and the bias [q].
    public static func fit(x: [Double], y: [Double], rows n: Int, features p: Int, targets q: Int,
                           lambda: Double) throws -> (weight: [Double], bias: [Double]) {
        try require(n >= 1 && p >= 1 && q >= 1, "ridge regression needs rows, features and targets (got \(n), \(p), \(q))")
        let (np, o1) = n.multipliedReportingOverflow(by: p), (nq, o2) = n.multipliedReportingOverflow(by: q)
        try require(!o1 && !o2 && x.count == np && y.count == nq,
                    "ridge regression: \(x.count) features and \(y.count) targets for \(n) rows of \(p) and \(q)")
        try require(lambda > 0 && lambda.isFinite, "the ridge penalty must be positive, got \(lambda)")
        var mx = [Double](repeating: 0, count: p), my = [Double](repeating: 0, count: q)
        for r in 0..<n {
            for j in 0..<p { mx[j] += x[r * p + j] / Double(n) }
            for j in 0..<q { my[j] += y[r * q + j] / Double(n) }
        }
        var a = x, b = y
        for r in 0..<n {
            for j in 0..<p { a[r * p + j] -= mx[j] }
            for j in 0..<q { b[r * q + j] -= my[j] }
        }
        // G = A^T A + lambda I (p x p), R = A^T B (p x q); symmetric, so row- and column-major agree.
        var g = [Double](repeating: 0, count: p * p), rhs = [Double](repeating: 0, count: p * q)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(p), Int32(p), Int32(n), 1, a, Int32(p), a, Int32(p), 0, &g, Int32(p))
        for j in 0..<p { g[j * p + j] += lambda }
        // Column-major right-hand sides (p x q): R^T in row-major is [q, p].
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(q), Int32(p), Int32(n), 1, b, Int32(q), a, Int32(p), 0, &rhs, Int32(p))
        var uplo = CChar(UInt8(ascii: "U")), dim = Int32(p), nrhs = Int32(q), lda = Int32(p), info: Int32 = 0
        dposv_(&uplo, &dim, &nrhs, &g, &lda, &rhs, &lda, &info)
        try require(info == 0, "ridge regression: the normal equations are not positive definite (LAPACK dposv info \(info))")
        // rhs is now W^T column-major, i.e. W [q, p] row-major.
        var bias = my
        for i in 0..<q {
            for j in 0..<p { bias[i] -= rhs[i * p + j] * mx[j] }
        }
        return (rhs, bias)
    }
}
