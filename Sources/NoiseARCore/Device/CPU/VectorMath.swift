import Foundation

/// Eight float lanes: the width the CPU backend's elementwise loops work in (two SSE registers
/// on baseline x86-64, one AVX register where the compiler targets it, two NEON registers).
typealias F8 = SIMD8<Float>

/// Vectorised float32 math for the CPU backend's hot loops (softmax, SiLU, GELU, sigmoid):
/// Cephes-style range reduction and polynomials, within a few ulp of libm over the float range.
enum VectorMath {
    static let expHi: Float = 88.72283, expLo: Float = -87.33654

    /// e^x per lane for x already within [expLo, expHi]: x = n ln2 + r, |r| <= ln2/2, e^r by a
    /// degree-6 polynomial, 2^n through the exponent bits (2^(n-1) * 2, so that n in
    /// [-126, 128] fits the exponent field; n = -126 underflows to exactly 0).
    @inline(__always)
    static func expInRange(_ xc: F8) -> F8 {
        // n = round(x / ln2) by the 1.5 * 2^23 trick: the sum's low mantissa bits are n.
        let magic = F8(repeating: 12_582_912)
        let t = xc * 1.442_695_04 + magic
        let n = t - magic
        var r = xc - n * 0.693_359_375
        r = r - n * -2.121_944_4e-4
        var p = F8(repeating: 1.987_569_1e-4)
        p = p * r + 1.398_199_9e-3
        p = p * r + 8.333_452e-3
        p = p * r + 4.166_579_6e-2
        p = p * r + 1.666_666_5e-1
        p = p * r + 0.5
        let er = p * (r * r) + r + 1
        let n1 = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 126
        return er * unsafeBitCast(n1 &<< 23, to: F8.self) * 2
    }

    /// e^x per lane. Below -87.3 the result is 0 (e^-inf included), above 88.7 +inf, NaN stays NaN.
    @inline(__always)
    static func exp(_ x: F8) -> F8 {
        // (compare-and-select: SIMD clamped/pointwiseMin are not inlined)
        var xc = x.replacing(with: expHi, where: x .> expHi)
        xc.replace(with: expLo, where: xc .< expLo)
        var y = expInRange(xc)
        y.replace(with: 0, where: x .< expLo)
        y.replace(with: .infinity, where: x .> expHi)
        y.replace(with: x, where: x .!= x)
        return y
    }

    /// e^x per lane for x <= 0 or NaN-free shifted inputs (softmax's x - max): only the lower
    /// clamp, whose 2^n underflows to exactly 0, so -inf gives 0 without the other guards.
    @inline(__always)
    static func expNonPositive(_ x: F8) -> F8 {
        expInRange(x.replacing(with: expLo, where: x .< expLo))
    }

    /// 1 / (1 + e^-x) per lane.
    @inline(__always)
    static func sigmoid(_ x: F8) -> F8 { 1 / (1 + exp(-x)) }

    /// erf(x) per lane: Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), odd.
    @inline(__always)
    static func erf(_ x: F8) -> F8 {
        let a = unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: F8.self)
        let t = 1 / (1 + 0.327_591_1 * a)
        var p = F8(repeating: 1.061_405_429)
        p = p * t - 1.453_152_027
        p = p * t + 1.421_413_741
        p = p * t - 0.284_496_736
        p = p * t + 0.254_829_592
        p = p * t
        var y = 1 - p * exp(-a * a)
        y.replace(with: -y, where: x .< 0)
        y.replace(with: x, where: x .!= x)
        return y
    }

    /// Applies `f` to count floats from src into dst in blocks of eight (the tail through a
    /// zero-padded block), spread over the cores for large counts.
    @inline(__always)
    static func map(_ count: Int, _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>,
                    _ f: (F8) -> F8) {
        parallelChunks(count) { lo, hi in
            var i = lo
            while i < hi {
                store(f(load(src + i, hi - i)), dst + i, hi - i)
                i += 8
            }
        }
    }
}

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

/// out[k] = f(a[i], b[j]) over a collapsed broadcast shape, the output contiguous; the inner
/// loop specialised for the common stride pairs so that it vectorises.
@inline(__always)
func binaryRows(_ shape: [Int], _ sa: [Int], _ sb: [Int], _ pa: UnsafePointer<Float>,
                _ pb: UnsafePointer<Float>, _ po: UnsafeMutablePointer<Float>,
                _ f: (Float, Float) -> Float) {
    let n = shape[shape.count - 1], a1 = sa[sa.count - 1], b1 = sb[sb.count - 1]
    forEachRow(shape, sa, sb) { r, oa, ob in
        let x = pa + oa, y = pb + ob, o = po + r * n
        if a1 == 1 && b1 == 1 {
            for i in 0..<n { o[i] = f(x[i], y[i]) }
        } else if a1 == 1 && b1 == 0 {
            let v = y[0]
            for i in 0..<n { o[i] = f(x[i], v) }
        } else if a1 == 0 && b1 == 1 {
            let v = x[0]
            for i in 0..<n { o[i] = f(v, y[i]) }
        } else {
            for i in 0..<n { o[i] = f(x[i * a1], y[i * b1]) }
        }
    }
}

extension VectorMath {
    /// Loads eight floats from p (the first `n` < 8 of them when n is given, the rest `fill`).
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ n: Int = 8, fill: Float = 0) -> F8 {
        if n >= 8 { return UnsafeRawPointer(p).loadUnaligned(as: F8.self) }
        var v = F8(repeating: fill)
        for j in 0..<n { v[j] = p[j] }
        return v
    }

    /// Stores the first min(n, 8) lanes of v at p.
    @inline(__always)
    static func store(_ v: F8, _ p: UnsafeMutablePointer<Float>, _ n: Int = 8) {
        if n >= 8 {
            UnsafeMutableRawPointer(p).storeBytes(of: v, as: F8.self)
        } else {
            for j in 0..<n { p[j] = v[j] }
        }
    }

    /// Softmax (or log-softmax) of one row of n floats, from x into y (which may be x).
    /// The maximum is subtracted first; exp is the vector one; an all -inf row gives NaN,
    /// as the textbook formula does.
    @inline(__always)
    static func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, log: Bool) {
        var mv = F8(repeating: -.infinity)
        var j = 0
        while j < n {
            let v = load(x + j, n - j, fill: -.infinity)
            mv.replace(with: v, where: v .> mv)
            j += 8
        }
        let m = mv.max()
        var sv = F8(repeating: 0)
        j = 0
        if log {
            while j < n {
                sv += expNonPositive(load(x + j, n - j, fill: -.infinity) - m)
                j += 8
            }
            let shift = m + Foundation.log(sv.sum())
            j = 0
            while j < n {
                store(load(x + j, n - j) - shift, y + j, n - j)
                j += 8
            }
        } else {
            while j < n {
                let e = expNonPositive(load(x + j, n - j, fill: -.infinity) - m)
                store(e, y + j, n - j)
                sv += e
                j += 8
            }
            let inv = 1 / sv.sum()
            j = 0
            while j < n {
                store(load(y + j, n - j) * inv, y + j, n - j)
                j += 8
            }
        }
    }
}
