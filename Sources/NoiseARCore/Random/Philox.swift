/// Philox4x32-10 counter-based generator (Salmon et al., SC'11) with a Box-Muller transform
/// built only from correctly rounded operations (+, -, *, fma, sqrt), so the OpenCL twin in
/// `Kernels/random.cl` produces the same bits on any device.
///
/// Stream layout: normal number `e` (global element index = offset + i) comes from the
/// Philox block `e / 4` (counter = (lo(e/4), hi(e/4), 0, 0), key = (lo(seed), hi(seed))), lane
/// `e % 4`; lanes (0,1) and (2,3) are Box-Muller pairs (radius from the first, angle from the
/// second; the first of the pair takes the cosine).
public enum Philox {
    static let m0: UInt32 = 0xD251_1F53, m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9, w1: UInt32 = 0xBB67_AE85

    /// Ten Philox rounds on a counter under a key.
    @inline(__always)
    public static func block(_ counter: (UInt32, UInt32, UInt32, UInt32), key: (UInt32, UInt32))
        -> (UInt32, UInt32, UInt32, UInt32)
    {
        var (c0, c1, c2, c3) = counter
        var (k0, k1) = key
        for _ in 0..<10 {
            let p0 = UInt64(m0) * UInt64(c0), p1 = UInt64(m1) * UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
            k0 &+= w0
            k1 &+= w1
        }
        return (c0, c1, c2, c3)
    }

    /// A uniform in (0, 1) with 24 bits: odd multiples of 2^-24.
    @inline(__always)
    static func uniform(_ x: UInt32) -> Float {
        Float((x >> 9) &* 2 &+ 1) * 5.9604644775390625e-8
    }

    /// Natural log on (0, 1] (Cephes logf polynomial in fma form).
    @inline(__always)
    static func logUnit(_ u: Float) -> Float {
        let bits = u.bitPattern
        var e = Int32(bitPattern: (bits >> 23) & 0xff) - 126
        var x = Float(bitPattern: (bits & 0x007f_ffff) | 0x3f00_0000)  // in [0.5, 1)
        if x < 0.70710678 {
            e -= 1
            x = x + x - 1
        } else {
            x = x - 1
        }
        var p: Float = 7.0376836292e-2
        p = p.addingProduct_(x, -1.1514610310e-1)
        p = p.addingProduct_(x, 1.1676998740e-1)
        p = p.addingProduct_(x, -1.2420140846e-1)
        p = p.addingProduct_(x, 1.4249322787e-1)
        p = p.addingProduct_(x, -1.6668057665e-1)
        p = p.addingProduct_(x, 2.0000714765e-1)
        p = p.addingProduct_(x, -2.4999993993e-1)
        p = p.addingProduct_(x, 3.3333331174e-1)
        let fe = Float(e)
        let z = x * x
        var y = (x * z) * p
        y = fma(fe, -2.12194440e-4, y)
        y = fma(-0.5, z, y)
        var r = x + y
        r = fma(fe, 0.693359375, r)
        return r
    }

    /// (cos 2*pi*u, sin 2*pi*u) by quadrant reduction and Cephes sin/cos polynomials.
    @inline(__always)
    static func cosSin2Pi(_ u: Float) -> (Float, Float) {
        let v = u * 4
        let q = Int32(v)  // u in (0, 1): v >= 0, truncation is floor
        let t = (v - Float(q) - 0.5) * 1.57079632679489662  // in [-pi/4, pi/4)
        let t2 = t * t
        var sp: Float = -1.9515295891e-4
        sp = fma(sp, t2, 8.3321608736e-3)
        sp = fma(sp, t2, -1.6666654611e-1)
        let st = fma(t * t2, sp, t)
        var cp: Float = 2.443315711809948e-5
        cp = fma(cp, t2, -1.388731625493765e-3)
        cp = fma(cp, t2, 4.166664568298827e-2)
        let ct = fma(t2 * t2, cp, fma(-0.5, t2, 1))
        // angle = q*pi/2 + pi/4 + t
        let h: Float = 0.70710678118654752
        let c = (ct - st) * h, s = (ct + st) * h
        switch q & 3 {
        case 0: return (c, s)
        case 1: return (-s, c)
        case 2: return (-c, -s)
        default: return (s, -c)
        }
    }

    /// Box-Muller of two raw words.
    @inline(__always)
    static func normalPair(_ a: UInt32, _ b: UInt32) -> (Float, Float) {
        let r = (-2 * logUnit(uniform(a))).squareRoot()
        let (c, s) = cosSin2Pi(uniform(b))
        return (r * c, r * s)
    }

    /// The four normals of Philox block `n`.
    @inline(__always)
    public static func normals(block n: UInt64, seed: UInt64) -> (Float, Float, Float, Float) {
        let w = block(
            (UInt32(truncatingIfNeeded: n), UInt32(truncatingIfNeeded: n >> 32), 0, 0),
            key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
        let (z0, z1) = normalPair(w.0, w.1)
        let (z2, z3) = normalPair(w.2, w.3)
        return (z0, z1, z2, z3)
    }

    /// Writes normals `offset ..< offset + count` of stream `seed`.
    public static func fillNormal(_ dst: UnsafeMutablePointer<Float>, count: Int, seed: UInt64,
                                  offset: UInt64) {
        var i = 0
        while i < count {
            let e = offset &+ UInt64(i)
            let z = normals(block: e / 4, seed: seed)
            var lane = Int(e % 4)
            while lane < 4 && i < count {
                dst[i] = lane == 0 ? z.0 : lane == 1 ? z.1 : lane == 2 ? z.2 : z.3
                lane += 1
                i += 1
            }
        }
    }

    /// Host convenience: `count` normals of stream `seed` starting at element `offset`.
    public static func normal(count: Int, seed: UInt64, offset: UInt64 = 0) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, n in
            if let base = buf.baseAddress { fillNormal(base, count: count, seed: seed, offset: offset) }
            n = count
        }
    }
}

extension Float {
    /// self * x + c as one fused multiply-add (Horner step).
    @inline(__always)
    fileprivate func addingProduct_(_ x: Float, _ c: Float) -> Float { fma(self, x, c) }
}

@inline(__always)
private func fma(_ a: Float, _ b: Float, _ c: Float) -> Float {
    c.addingProduct(a, b)
}
