import Foundation

/// Splits 0..<count into one contiguous range per core (multiples of 64 elements) when the count
/// is large enough to pay for the threads, and runs body(lo, hi) on each.
@inline(__always)
func parallelChunks(_ count: Int, minimum: Int = 8_192, _ body: (Int, Int) -> Void) {
    let cores = WorkerPool.cores
    guard count >= minimum, cores > 1 else {
        if count > 0 { body(0, count) }
        return
    }
    let parts = min(cores, count / (minimum / 2))
    let per = ((count + parts - 1) / parts + 63) & ~63
    parallelFor(parts) { p in
        let lo = p * per, hi = min(count, lo + per)
        if lo < hi { body(lo, hi) }
    }
}

/// Visits the rows of a collapsed strided shape [outer..., n] (the last dimension is a row):
/// body(row, offsetA, offsetB) for rows lo..<hi, the offsets through two stride vectors. Rows
/// are split over the cores when there are enough elements.
@inline(__always)
func forEachRow(_ shape: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int) -> Void) {
    let rank = shape.count
    let n = shape[rank - 1]
    let rows = Shape.count(shape) / max(n, 1)
    guard n > 0, rows > 0 else { return }
    parallelChunks(rows, minimum: max(2, 8_192 / n)) { lo, hi in
        // The odometer of the outer dimensions, started at row lo.
        var idx = [Int](repeating: 0, count: max(rank - 1, 0))
        var oa = 0, ob = 0, rest = lo
        for d in stride(from: rank - 2, through: 0, by: -1) {
            idx[d] = rest % shape[d]
            rest /= shape[d]
            oa += idx[d] * sa[d]
            ob += idx[d] * sb[d]
        }
        for r in lo..<hi {
            body(r, oa, ob)
            var d = rank - 2
            while d >= 0 {
                idx[d] += 1
                oa += sa[d]; ob += sb[d]
                if idx[d] < shape[d] { break }
                oa -= sa[d] * shape[d]; ob -= sb[d] * shape[d]
                idx[d] = 0
                d -= 1
            }
        }
    }
}
