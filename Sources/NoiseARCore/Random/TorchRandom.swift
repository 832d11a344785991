import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// PyTorch's CPU generator, so that a seed means what it means in diffusers and ComfyUI:
/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`, bit for bit.
///
/// - The engine is MT19937 seeded with the low 32 bits of the seed (as torch's `mt19937`
///   does; seeds 1 and 2^32 + 1 give the same stream).
/// - A float uniform is the low 24 bits of one 32-bit draw times 2^-24; a double uniform the low
///   53 bits of two draws (the first is the high word) times 2^-53.
/// - `randn` of 16 elements or more (contiguous float32) draws every uniform first, then turns
///   each block of 16 into normals by Box-Muller: u1 = 1 - x[j], u2 = x[j + 8] for j < 8, radius
///   sqrt(-2 log u1), angle 2 pi u2, cosines to j and sines to j + 8; when the count is not a
///   multiple of 16, the last 16 elements are drawn again and transformed again. x86-64 builds
///   of torch run this with AVX2 and the Cephes-style `log256_ps` / `sincos256_ps` of
///   avx_mathfun, compiled with fused multiply-adds; `TorchRandom.Cephes` is that arithmetic
///   written out operation by operation (the fixtures in `torch_rng/` are matched bit for bit).
/// - Fewer than 16 elements are drawn one by one in double precision: u1, u2 double uniforms,
///   r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, r cos(theta) returned and r sin(theta) kept
///   for the next such draw of the same generator.
public struct TorchGenerator: Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624
    private var nextNormal: Double?

    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for j in 1 ..< 624 {
            let p = state[j - 1]
            state[j] = 1_812_433_253 &* (p ^ (p >> 30)) &+ UInt32(j)
        }
        index = 624
    }

    private mutating func twist() {
        for i in 0 ..< 624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var v = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { v ^= 0x9908_B0DF }
            state[i] = v
        }
        index = 0
    }

    /// The next 32-bit output (tempered).
    public mutating func next32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    mutating func uniformFloat() -> Float {
        Float(next32() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    mutating func uniformDouble() -> Double {
        let hi = UInt64(next32()), lo = UInt64(next32())
        return Double(((hi << 32) | lo) & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    mutating func normalDouble() -> Double {
        if let n = nextNormal {
            nextNormal = nil
            return n
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let r = (-2.0 * log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        nextNormal = r * sin(theta)
        return r * cos(theta)
    }

    /// `torch.randn(count)` continued from this generator's state, into `out`.
    public mutating func fillNormal(_ out: UnsafeMutableBufferPointer<Float>) {
        let n = out.count
        guard n >= 16 else {
            for i in 0 ..< n { out[i] = Float(normalDouble()) }
            return
        }
        for i in 0 ..< n { out[i] = uniformFloat() }
        var i = 0
        while i + 16 <= n {
            TorchRandom.Cephes.boxMuller16(out, at: i)
            i += 16
        }
        if n % 16 != 0 {
            for j in n - 16 ..< n { out[j] = uniformFloat() }
            TorchRandom.Cephes.boxMuller16(out, at: n - 16)
        }
    }

    public mutating func normal(count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: max(count, 0))
        out.withUnsafeMutableBufferPointer { fillNormal($0) }
        return out
    }
}

/// Gaussian noise with PyTorch's seeds (see `TorchGenerator`).
public enum TorchRandom {
    /// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` with `count` elements.
    public static func normal(count: Int, seed: UInt64) -> [Float] {
        var g = TorchGenerator(seed: seed)
        return g.normal(count: count)
    }

    /// ComfyUI's noise for a latent batch with `batch_index` (its `prepare_noise`): one generator
    /// seeded once; one draw of `perImage` elements for every index from 0 to the largest listed;
    /// the listed indices' draws in the listed order (repeats allowed). Without indices it is
    /// `normal(count: batch * perImage, seed:)`.
    public static func comfyNoise(perImage: Int, batch: Int, seed: UInt64, batchIndex: [Int]?) throws -> [Float] {
        guard let batchIndex else { return normal(count: batch * perImage, seed: seed) }
        try require(batchIndex.count == batch, "batch_index has \(batchIndex.count) entries for a batch of \(batch)")
        try require(batchIndex.allSatisfy { $0 >= 0 && $0 < 1 << 20 }, "batch_index entries must be in 0 ..< 2^20, got \(batchIndex)")
        guard let last = batchIndex.max() else { return [] }
        var g = TorchGenerator(seed: seed)
        let wanted = Set(batchIndex)
        var draws: [Int: [Float]] = [:]
        for i in 0 ... last {
            let d = g.normal(count: perImage)
            if wanted.contains(i) { draws[i] = d }
        }
        return batchIndex.flatMap { draws[$0] ?? [] }
    }

    /// The float arithmetic of torch's AVX2 Box-Muller (avx_mathfun's Cephes log and sincos as
    /// x86-64 torch builds compile them: each multiply whose only use is an add or subtract is
    /// fused with it, the first such in program order when two could be).
    enum Cephes {
        @inline(__always) static func fma(_ a: Float, _ b: Float, _ c: Float) -> Float { c.addingProduct(a, b) }

        static func log(_ input: Float) -> Float {
            guard input > 0 else { return .nan }
            var x = max(input, Float(bitPattern: 0x0080_0000))
            var e = Float(Int32(bitPattern: x.bitPattern >> 23) - 0x7F) + 1
            x = Float(bitPattern: (x.bitPattern & ~0x7F80_0000) | Float(0.5).bitPattern)
            let small = x < 0.707106781186547524
            let tmp: Float = small ? x : 0
            x = x - 1
            e = e - (small ? 1 : 0)
            x = x + tmp
            let z = x * x
            var y: Float = 7.0376836292E-2
            for c: Float in [-1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
                             -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1] {
                y = fma(y, x, c)
            }
            y = y * x
            y = fma(y, z, e * -2.12194440e-4)
            y = fma(-z, 0.5, y)
            return fma(e, 0.693359375, x + y)
        }

        static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
            var signSin = input.bitPattern & 0x8000_0000
            var x = Float(bitPattern: input.bitPattern & 0x7FFF_FFFF)
            let scaled = x * 1.27323954473516
            var j = scaled < 2_147_483_520 ? Int32(scaled) : Int32.min  // cvttps: out of range -> 0x80000000
            j = (j &+ 1) & ~1
            let y = Float(j)
            signSin ^= UInt32(bitPattern: j & 4) << 29
            let polyMask = (j & 2) == 0
            let signCos = UInt32(bitPattern: ~(j &- 2) & 4) << 29
            x = fma(y, -0.78515625, x)
            x = fma(y, -2.4187564849853515625e-4, x)
            x = fma(y, -3.77489497744594108e-8, x)
            let z = x * x
            var c: Float = fma(2.443315711809948E-005, z, -1.388731625493765E-003)
            c = fma(c, z, 4.166664568298827E-002)
            c = c * z
            c = fma(c, z, -(z * 0.5))
            c = c + 1
            var s: Float = fma(-1.9515295891E-4, z, 8.3321608736E-3)
            s = fma(s, z, -1.6666654611E-1)
            s = fma(s * z, x, x)
            let sinPart: Float = polyMask ? s : 0, cosPart: Float = polyMask ? 0 : c
            let sinValue = cosPart + sinPart
            let cosValue = (c - cosPart) + (s - sinPart)
            return (Float(bitPattern: sinValue.bitPattern ^ signSin), Float(bitPattern: cosValue.bitPattern ^ signCos))
        }

        /// Box-Muller on out[at ..< at + 16] in place.
        static func boxMuller16(_ d: UnsafeMutableBufferPointer<Float>, at i: Int) {
            let twoPi = Float(2.0 * Double.pi)
            for j in 0 ..< 8 {
                let u1 = 1 - d[i + j], u2 = d[i + j + 8]
                let radius = (-2 * log(u1)).squareRoot()
                let (s, c) = sincos(twoPi * u2)
                d[i + j] = radius * c
                d[i + j + 8] = radius * s
            }
        }
    }
}
