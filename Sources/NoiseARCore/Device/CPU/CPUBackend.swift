import CBLAS
import CVectorMath
import Foundation

/// Host memory buffer of the CPU backend.
public final class CPUBuffer: DeviceBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    private let owned: Bool
    /// The pool bucket the memory came from (nil: plain malloc, freed at once).
    private let bucket: Int?
    /// Host memory of the whole process: freed buffers wait here for the next of their size.
    ///
    /// Off unless `NOISEAR_HOST_POOL_MB` gives the idle bytes allowed: glibc's malloc already
    /// reuses freed host memory without new page faults once OpenBLAS's spinning threads are
    /// gone (`sample --batch 8`: 0.3 s of system time either way), and the pool's size classes
    /// cannot merge, so it raised the peak resident memory (77 to 104 MB) for no speed measured.
    static let pool = BufferPool<UnsafeMutableRawPointer>(
        idleLimit: ProcessInfo.processInfo.environment["NOISEAR_HOST_POOL_MB"].flatMap { Int($0) }.map { max($0, 0) << 20 } ?? 0,
        release: { Foundation.free($0) })

    /// Host memory for `count` floats (uninitialised; from the pool when one of its bucket is
    /// idle); throws (instead of trapping) when the size overflows or malloc fails.
    init(count: Int) throws {
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        guard count >= 0, !overflow else {
            throw NoiseError.outOfMemory("cannot allocate \(count) floats of host memory (the size overflows)")
        }
        let (raw, bucket) = try Self.pool.obtain(bytes) { size in
            guard let p = malloc(size) else {
                throw NoiseError.outOfMemory("cannot allocate \(count) floats (\(MemoryBudget.describe(Double(count) * 4))) of host memory")
            }
            return p
        }
        self.count = count
        self.bucket = bucket
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        owned = true
    }
    /// A non-owning view of host memory (scratch work inside the backend).
    init(viewing pointer: UnsafeMutablePointer<Float>, count: Int) {
        self.pointer = pointer
        self.count = count
        owned = false
        bucket = nil
    }
    deinit {
        guard owned else { return }
        if let bucket { Self.pool.give(UnsafeMutableRawPointer(pointer), bucket: bucket) } else { free(pointer) }
    }
}

/// The reference backend: plain Swift loops plus OpenBLAS for GEMM. Every other backend is
/// tested against it, and it runs whatever another backend does not support.
public final class CPUBackend: Backend {
    public let info: DeviceInfo

    public init() {
        _ = BLASCore.correction  // (once per process, before the first BLAS call)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        info = DeviceInfo(
            id: "cpu", backend: "cpu",
            name: "CPU (Swift + OpenBLAS, \(cores) threads, \(String(cString: nar_vm_level())) vector loops)",
            vendor: "host", kind: .cpu, platform: "host",
            memoryBytes: ProcessInfo.processInfo.physicalMemory, computeUnits: cores,
            openCLCVersion: "-", driverVersion: "-", fp16: false, fp64: true)
    }

    public func supports(_ op: any PrimitiveOp) -> Bool { true }

    public func allocate(_ count: Int) throws -> any DeviceBuffer {
        try require(count >= 0, "negative allocation \(count)")
        return try CPUBuffer(count: count)
    }

    @inline(__always)
    func ptr(_ r: BufRef) -> UnsafeMutablePointer<Float> {
        // Buffers handed to this backend are always its own (Device routes foreign ones).
        (r.buffer as! CPUBuffer).pointer + r.offset
    }

    public func upload(_ src: UnsafeBufferPointer<Float>, to dst: BufRef) throws {
        guard let base = src.baseAddress else { return }
        try checkRange(dst, src.count)
        ptr(dst).update(from: base, count: src.count)
    }

    public func download(_ src: BufRef, into dst: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = dst.baseAddress else { return }
        try checkRange(src, dst.count)
        base.update(from: ptr(src), count: dst.count)
    }


    public func synchronize() throws {}

    public func fill(_ dst: BufRef, count: Int, value: Float) throws {
        let p = ptr(dst)
        parallelChunks(count, minimum: 65_536) { lo, hi in (p + lo).update(repeating: value, count: hi - lo) }
    }

    public func copy(shape: [Int], src: Strided, dst: Strided) throws {
        let s = ptr(src.ref), d = ptr(dst.ref)
        let (cs, st) = Shape.collapse(shape, [src.strides, dst.strides])
        let n = cs[cs.count - 1], s1 = st[0][st[0].count - 1], d1 = st[1][st[1].count - 1]
        // One long row (a contiguous copy) is shared out to the cores in pieces when source and
        // destination do not overlap (forEachRow shares out whole rows only).
        if cs.count == 1 && d1 == 1 && s1 >= 0 && (d >= s + (n - 1) * s1 + 1 || s >= d + n) {
            parallelChunks(n, minimum: 32_768) { lo, hi in nar_vm_copy(s + lo * s1, s1, d + lo, hi - lo) }
            return
        }
        forEachRow(cs, st[0], st[1]) { _, i, j in
            if d1 == 1 && s1 >= 0 && (s1 != 1 || n < 4096)
                && (d + j >= s + i + (n - 1) * s1 + 1 || s + i >= d + j + n) {
                // Short rows, broadcasts and gathers of disjoint rows in one vector loop
                // (memmove's call costs more than a short row).
                nar_vm_copy(s + i, s1, d + j, n)
            } else if s1 == 1 && d1 == 1 {
                (d + j).update(from: s + i, count: n)
            } else {
                for k in 0..<n { d[j + k * d1] = s[i + k * s1] }
            }
        }
    }

    public func binary(_ op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef) throws {
        let pa = ptr(a.ref), pb = ptr(b.ref), po = ptr(out)
        let (cs, st) = Shape.collapse(shape, [a.strides, b.strides])
        let n = cs[cs.count - 1], sa = st[0][cs.count - 1], sb = st[1][cs.count - 1]
        // One long row (contiguous operands, a residual add) in pieces on all cores; an output
        // element depends only on the same element of the inputs, so the pieces are independent.
        if cs.count == 1 {
            parallelChunks(n, minimum: 32_768) { lo, hi in
                nar_vm_binary(op.rawValue, pa + lo * sa, sa, pb + lo * sb, sb, po + lo, hi - lo)
            }
            return
        }
        forEachRow(cs, st[0], st[1]) { r, oa, ob in
            nar_vm_binary(op.rawValue, pa + oa, sa, pb + ob, sb, po + r * n, n)
        }
    }

    public func unary(_ op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float, p1: Float) throws {
        let px = ptr(x), py = ptr(y)
        parallelChunks(count) { lo, hi in Self.unaryRun(op, px + lo, py + lo, hi - lo, p0, p1) }
    }

    /// y[i] = f(x[i]) for i < count on the calling thread (y may be x). The ops with a vector
    /// form go through CVectorMath (exp within 2 ulp of libm, erf within 1.5e-7); log, clamp and
    /// tanh element by element.
    @inline(__always)
    static func unaryRun(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                         _ count: Int, _ p0: Float, _ p1: Float) {
        switch op {
        case .exp, .silu, .sigmoid, .gelu, .affine, .square, .sqrt, .relu:
            _ = nar_vm_unary(op.rawValue, x, y, count, p0, p1)
        case .log, .clamp, .tanh:
            for i in 0..<count { y[i] = unaryForward(op, x[i], p0, p1) }
        }
    }

    public func combine(count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef) throws {
        try checkCombineArguments(coefficients: coefficients, inputs: inputs)
        let xs = inputs.map { UnsafePointer(ptr($0)) }, po = ptr(out), c = coefficients
        parallelChunks(count) { lo, hi in
            // Term by term over the chunk: the first writes, the others accumulate (the same
            // order of operations as the kernels: ((c0 x0 + c1 x1) + c2 x2) + c3 x3).
            for i in lo..<hi {
                var v = c[0] * xs[0][i]
                for t in 1..<xs.count { v += c[t] * xs[t][i] }
                po[i] = v
            }
        }
    }

    public func unaryBackward(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef,
                              p0: Float, p1: Float) throws {
        let px = ptr(x), pdy = ptr(dy), pdx = ptr(dx)
        // exp, SiLU, GELU and sigmoid through CVectorMath; the rest element by element.
        parallelChunks(count) { lo, hi in
            guard nar_vm_unary_backward(op.rawValue, px + lo, pdy + lo, pdx + lo, hi - lo) != 0 else { return }
            for i in lo..<hi { pdx[i] = pdy[i] * Self.unaryDerivative(op, px[i], p0, p1) }
        }
    }

    /// f(x) for a unary op: the scalar definition every OpenCL and Vulkan unary kernel is traced
    /// to (`unary` computes exp, SiLU, GELU and sigmoid with the vector forms of VectorMath).
    @inline(__always)
    static func unaryForward(_ op: UnaryOp, _ x: Float, _ p0: Float, _ p1: Float) -> Float {
        switch op {
        case .exp: return Foundation.exp(x)
        case .log: return Foundation.log(x)
        case .sqrt: return x.squareRoot()
        case .affine: return p0 * x + p1
        case .clamp: return Swift.min(Swift.max(x, p0), p1)
        case .silu: return x / (1 + Foundation.exp(-x))
        case .gelu: return 0.5 * x * (1 + Foundation.erf(x * 0.70710678118654752))
        case .relu: return Swift.max(x, 0)
        case .sigmoid: return 1 / (1 + Foundation.exp(-x))
        case .tanh: return Foundation.tanh(x)
        case .square: return x * x
        }
    }

    /// f'(x) for a unary op.
    @inline(__always)
    static func unaryDerivative(_ op: UnaryOp, _ x: Float, _ p0: Float, _ p1: Float) -> Float {
        switch op {
        case .exp: return Foundation.exp(x)
        case .log: return 1 / x
        case .sqrt: return 0.5 / x.squareRoot()
        case .affine: return p0
        case .clamp: return (x >= p0 && x <= p1) ? 1 : 0
        case .silu:
            let s = 1 / (1 + Foundation.exp(-x))
            return s * (1 + x * (1 - s))
        case .gelu:
            let cdf = 0.5 * (1 + Foundation.erf(x * 0.70710678118654752))
            let pdf = Foundation.exp(-0.5 * x * x) * 0.39894228040143268
            return cdf + x * pdf
        case .relu: return x > 0 ? 1 : 0
        case .sigmoid:
            let s = 1 / (1 + Foundation.exp(-x))
            return s * (1 - s)
        case .tanh:
            let t = Foundation.tanh(x)
            return 1 - t * t
        case .square: return 2 * x
        }
    }

    public func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef?, cIn: BufRef?) throws {
        try checkEpilogueActivation(d.activation)
        let readsOther = cIn != nil && d.beta != 0
        guard bias != nil || readsOther else {
            Self.sgemm(d, ptr(a), ptr(b), ptr(c), threads: WorkerPool.cores)
            return
        }
        // C's rows first, beta C_in + bias (rows of all batch entries shared out to the cores),
        // then the product accumulates onto them (beta 1).
        let pc = ptr(c), pin = cIn.map(ptr) ?? pc, pbias = bias.map(ptr)
        let entries = d.reduceBatch ? 1 : d.batch0 * d.batch1
        parallelChunks(entries * d.m, minimum: max(16, 8_192 / max(d.n, 1))) { lo, hi in
            for r in lo..<hi {
                let e = r / d.m, i0 = e / d.batch1, i1 = e % d.batch1
                let offset = i0 * d.strideC0 + i1 * d.strideC1 + (r % d.m) * d.ldc
                let cr = pc + offset, src = pin + offset
                if let pbias {
                    let row = pbias + i0 * d.biasStride0
                    if d.beta == 0 {
                        cr.update(from: row, count: d.n)
                    } else {
                        for j in 0..<d.n { cr[j] = d.beta * src[j] + row[j] }
                    }
                } else {
                    for j in 0..<d.n { cr[j] = d.beta * src[j] }
                }
            }
        }
        var accumulate = d
        accumulate.beta = 1
        Self.sgemm(accumulate, ptr(a), ptr(b), pc, threads: WorkerPool.cores)
    }

    /// The batched GEMM on `threads` cores. OpenBLAS runs single-threaded here (BLASCore); the
    /// cores share the work by batch entry, or by column (row) panels of one product when the
    /// batch is shorter than the cores. `d.activation` is applied to each panel as soon as its
    /// product is done (while it is in cache).
    static func sgemm(_ d: GemmDesc, _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>,
                      _ pc: UnsafeMutablePointer<Float>, threads: Int) {
        let batches = d.batch0 * d.batch1
        if d.reduceBatch && batches > 1 {
            reduceBatchGemm(d, pa, pb, pc, threads: threads)
            if let act = d.activation {
                parallelChunks(d.m, minimum: max(16, 8_192 / max(d.n, 1))) { lo, hi in
                    for r in lo..<hi { unaryRun(act, pc + r * d.ldc, pc + r * d.ldc, d.n, 0, 0) }
                }
            }
            return
        }
        let flops = 2.0 * Double(d.m) * Double(d.n) * Double(d.k)
        let split = batches >= threads || flops < 1e6 ? 1 : threads
        let splitN = d.n >= d.m
        let span = splitN ? d.n : d.m
        let per = ((span + split - 1) / split + 15) / 16 * 16
        let parts = max(1, (span + per - 1) / per)
        let run = { (task: Int) in
            let bi = task / parts, part = task % parts
            let i0 = bi / d.batch1, i1 = bi % d.batch1
            let lo = part * per
            gemmPanel(d, pa + i0 * d.strideA0 + i1 * d.strideA1, pb + i0 * d.strideB0 + i1 * d.strideB1,
                      pc + i0 * d.strideC0 + i1 * d.strideC1, splitN: splitN, lo: lo,
                      len: min(span, lo + per) - lo, beta: d.beta)
        }
        if threads > 1 {
            parallelFor(batches * parts, run)
        } else {
            for t in 0..<(batches * parts) { run(t) }
        }
    }

    /// One cblas_sgemm of d's shape on the panel lo..<lo+len of C's columns (splitN) or rows.
    @inline(__always)
    static func gemmPanel(_ d: GemmDesc, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                          _ c: UnsafeMutablePointer<Float>, splitN: Bool, lo: Int, len: Int, beta: Float) {
        var a0 = a, b0 = b, c0 = c, m = d.m, n = d.n
        if splitN {
            n = len
            b0 += d.transB ? lo * d.ldb : lo
            c0 += lo
        } else {
            m = len
            a0 += d.transA ? lo : lo * d.lda
            c0 += lo * d.ldc
        }
        if m == 1 {
            // A single row is a matrix-vector product, memory-bound on B: OpenBLAS's GEMV
            // streams B's rows (its GEMM would pack B first). y = B^T a, or B a when B is
            // stored transposed ([n, k]).
            cblas_sgemv(CblasRowMajor, d.transB ? CblasNoTrans : CblasTrans,
                        Int32(d.transB ? n : d.k), Int32(d.transB ? d.k : n), d.alpha, b0, Int32(d.ldb),
                        a0, Int32(d.transA ? d.lda : 1), beta, c0, 1)
            if let act = d.activation { unaryRun(act, c0, c0, n, 0, 0) }
            return
        }
        cblas_sgemm(
            CblasRowMajor, d.transA ? CblasTrans : CblasNoTrans, d.transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(d.k), d.alpha, a0, Int32(d.lda), b0, Int32(d.ldb), beta,
            c0, Int32(d.ldc))
        if let act = d.activation {
            for r in 0..<m { unaryRun(act, c0 + r * d.ldc, c0 + r * d.ldc, n, 0, 0) }
        }
    }

    /// The batch-reduce GEMM: C is cut into panels (of columns when n >= m, else of rows) of at
    /// most 64K floats, which stay in cache while every batch entry's product accumulates into
    /// them in batch order; the panels are spread over the cores. (With one product per panel
    /// after another, each entry would stream the whole C through memory again: the products of
    /// a convolution's taps have only K = channels and are memory-bound that way.)
    static func reduceBatchGemm(_ d: GemmDesc, _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>,
                                _ pc: UnsafeMutablePointer<Float>, threads: Int) {
        let splitN = d.n >= d.m
        let span = splitN ? d.n : d.m, other = splitN ? d.m : d.n
        let fit = max(16, (65_536 / max(other, 1)) / 16 * 16)
        let share = ((span + max(threads, 1) - 1) / max(threads, 1) + 15) / 16 * 16
        let per = max(16, min(fit, share))
        let parts = (span + per - 1) / per
        let run = { (part: Int) in
            let lo = part * per, len = min(span, lo + per) - lo
            for i0 in 0..<d.batch0 {
                for i1 in 0..<d.batch1 {
                    gemmPanel(d, pa + i0 * d.strideA0 + i1 * d.strideA1, pb + i0 * d.strideB0 + i1 * d.strideB1,
                              pc, splitN: splitN, lo: lo, len: len, beta: i0 == 0 && i1 == 0 ? d.beta : 1)
                }
            }
        }
        if threads > 1 {
            parallelFor(parts, run)
        } else {
            for p in 0..<parts { run(p) }
        }
    }

    public func softmax(rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef) throws {
        let px = ptr(x), py = ptr(y)
        forEachRow([rows, cols], [cols, 1], [cols, 1]) { r, _, _ in
            nar_vm_softmax_row(px + r * cols, py + r * cols, cols, log ? 1 : 0)
        }
    }

    public func softmaxBackward(rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef,
                                dx: BufRef) throws {
        let py = ptr(y), pdy = ptr(dy), pdx = ptr(dx)
        for r in 0..<rows {
            let yr = py + r * cols, gr = pdy + r * cols, dr = pdx + r * cols
            if log {
                var s: Float = 0
                for j in 0..<cols { s += gr[j] }
                for j in 0..<cols { dr[j] = gr[j] - Foundation.exp(yr[j]) * s }
            } else {
                var s: Float = 0
                for j in 0..<cols { s += gr[j] * yr[j] }
                for j in 0..<cols { dr[j] = yr[j] * (gr[j] - s) }
            }
        }
    }

    public func layerNorm(rows: Int, cols: Int, eps: Float, x: BufRef, gamma: BufRef?,
                          beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef) throws {
        let px = ptr(x), py = ptr(y), pm = ptr(mean), pr = ptr(rstd)
        let g = gamma.map(ptr), b = beta.map(ptr)
        guard rows > 0 && cols > 0 else { return }
        parallelChunks(rows, minimum: max(2, 8_192 / cols)) { lo, hi in
            nar_vm_layernorm_rows(px, py, lo, hi, cols, g, b, eps, pm, pr)
        }
    }

    public func layerNormBackward(rows: Int, cols: Int, x: BufRef, gamma: BufRef?, mean: BufRef,
                                  rstd: BufRef, dy: BufRef, dx: BufRef, dgamma: BufRef?,
                                  dbeta: BufRef?) throws {
        let px = ptr(x), pm = ptr(mean), pr = ptr(rstd), pdy = ptr(dy), pdx = ptr(dx)
        let g = gamma.map(ptr)
        for r in 0..<rows {
            let xr = px + r * cols, gr = pdy + r * cols, dr = pdx + r * cols
            let mu = pm[r], rs = pr[r]
            var sumG: Float = 0, sumGX: Float = 0
            for j in 0..<cols {
                let gh = gr[j] * (g?[j] ?? 1)
                sumG += gh
                sumGX += gh * (xr[j] - mu) * rs
            }
            let n = Float(cols)
            for j in 0..<cols {
                let xh = (xr[j] - mu) * rs
                dr[j] = rs * (gr[j] * (g?[j] ?? 1) - sumG / n - xh * sumGX / n)
            }
        }
        if let dgamma { ptr(dgamma).update(repeating: 0, count: cols) }
        if let dbeta { ptr(dbeta).update(repeating: 0, count: cols) }
        for r in 0..<rows {
            let xr = px + r * cols, gr = pdy + r * cols
            if let dgamma {
                let dg = ptr(dgamma)
                for j in 0..<cols { dg[j] += gr[j] * (xr[j] - pm[r]) * pr[r] }
            }
            if let dbeta {
                let db = ptr(dbeta)
                for j in 0..<cols { db[j] += gr[j] }
            }
        }
    }

    public func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
                          x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef,
                          rstd: BufRef) throws {
        try groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                      gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd, activation: nil)
    }

    public func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
                          x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef,
                          rstd: BufRef, activation: UnaryOp) throws {
        try groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                      gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd, activation: Optional(activation))
    }

    /// Group norm with the activation (if any) applied to each group's rows while they are in
    /// cache.
    func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
                   x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef,
                   rstd: BufRef, activation: UnaryOp?) throws {
        let px = ptr(x), py = ptr(y), pm = ptr(mean), pr = ptr(rstd)
        let g = gamma.map(ptr), b = beta.map(ptr)
        let cpg = channels / groups, len = cpg * spatial
        // One (sample, group) per task: the mean, then the variance about it (two passes; eight
        // float lanes, each block of 1024 summed into a double), then y with gamma and beta.
        forEachRow([n * groups, len], [len, 1], [len, 1]) { i, _, _ in
            let xs = px + i * len
            nar_vm_mean_rstd(xs, len, eps, pm + i, pr + i)
            let m = pm[i], rs = pr[i]
            let c0 = (i % groups) * cpg
            for c in 0..<cpg {
                let scale = (g?[c0 + c] ?? 1) * rs
                let shift = (b?[c0 + c] ?? 0) - m * scale
                let xr = xs + c * spatial, yr = py + i * len + c * spatial
                for s in 0..<spatial { yr[s] = xr[s] * scale + shift }
            }
            if let activation {
                let yg = py + i * len
                if nar_vm_unary(activation.rawValue, yg, yg, len, 0, 0) != 0 {
                    for s in 0..<len { yg[s] = Self.unaryForward(activation, yg[s], 0, 0) }
                }
            }
        }
    }

    public func groupNormBackward(n: Int, channels: Int, spatial: Int, groups: Int, x: BufRef,
                                  gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef,
                                  dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) throws {
        let px = ptr(x), pm = ptr(mean), pr = ptr(rstd), pdy = ptr(dy), pdx = ptr(dx)
        let g = gamma.map(ptr)
        let cpg = channels / groups, len = cpg * spatial
        for i in 0..<(n * groups) {
            let base = i * len, c0 = (i % groups) * cpg
            let mu = pm[i], rs = pr[i]
            var sumG: Float = 0, sumGX: Float = 0
            for c in 0..<cpg {
                let gc = g?[c0 + c] ?? 1
                for s in 0..<spatial {
                    let j = base + c * spatial + s
                    let gh = pdy[j] * gc
                    sumG += gh
                    sumGX += gh * (px[j] - mu) * rs
                }
            }
            let cnt = Float(len)
            for c in 0..<cpg {
                let gc = g?[c0 + c] ?? 1
                for s in 0..<spatial {
                    let j = base + c * spatial + s
                    let xh = (px[j] - mu) * rs
                    pdx[j] = rs * (pdy[j] * gc - sumG / cnt - xh * sumGX / cnt)
                }
            }
        }
        if let dgamma { ptr(dgamma).update(repeating: 0, count: channels) }
        if let dbeta { ptr(dbeta).update(repeating: 0, count: channels) }
        for b in 0..<n {
            for c in 0..<channels {
                let i = b * groups + c / cpg
                var sg: Float = 0, sb: Float = 0
                for s in 0..<spatial {
                    let j = (b * channels + c) * spatial + s
                    sg += pdy[j] * (px[j] - pm[i]) * pr[i]
                    sb += pdy[j]
                }
                if let dgamma { ptr(dgamma)[c] += sg }
                if let dbeta { ptr(dbeta)[c] += sb }
            }
        }
    }

    public func attention(_ d: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?,
                          o: BufRef) throws {
        let pq = ptr(q), pk = ptr(k), pv = ptr(v), po = ptr(o)
        let pb = bias.map(ptr)
        // Per (batch, head) pair: scores = scale Q K^T by GEMM, bias and mask, row softmax,
        // O = P V by GEMM. With at least as many pairs as cores the pairs spread over the
        // cores (each product single-threaded); otherwise each product uses all cores.
        let cores = WorkerPool.cores
        let pairs = d.batch * d.heads
        let inner = pairs >= cores ? 1 : cores
        // Score rows for each core (the pairs are dealt out to the cores in turn, each core
        // reusing its rows), allocated once per call: a fresh allocation per pair would fault in
        // new pages every time.
        let lanes = inner == 1 ? min(cores, pairs) : 1
        let plane = d.tq * d.tk
        let (scratchCount, overflow) = plane.multipliedReportingOverflow(by: lanes)
        guard !overflow else { throw NoiseError.device("attention scores of \(d.tq) x \(d.tk) overflow") }
        let scratch = try CPUBuffer(count: scratchCount)
        let body = { (pair: Int, lane: Int) in
            let b = pair / d.heads, h = pair % d.heads
            let scores = scratch.pointer + lane * plane
            var qk = GemmDesc(m: d.tq, n: d.tk, k: d.headDim, transB: true, alpha: d.scale)
            qk.lda = d.qStrides[2]; qk.ldb = d.kStrides[2]
            Self.sgemm(qk, pq + b * d.qStrides[0] + h * d.qStrides[1],
                       pk + b * d.kStrides[0] + h * d.kStrides[1], scores, threads: inner)
            for i in 0..<d.tq {
                let row = scores + i * d.tk
                Self.maskScores(d, row: row, i: i, b: b, h: h, pb: pb)
                nar_vm_softmax_row(row, row, d.tk, 0)
            }
            var pvd = GemmDesc(m: d.tq, n: d.valueDim, k: d.tk)
            pvd.ldb = d.vStrides[2]; pvd.ldc = d.oStrides[2]
            Self.sgemm(pvd, scores, pv + b * d.vStrides[0] + h * d.vStrides[1],
                       po + b * d.oStrides[0] + h * d.oStrides[1], threads: inner)
        }
        parallelFor(lanes) { lane in
            for pair in stride(from: lane, to: pairs, by: lanes) { body(pair, lane) }
        }
    }

    /// Adds the bias row and the causal mask to query row i's scores.
    @inline(__always)
    static func maskScores(_ d: AttentionDesc, row: UnsafeMutablePointer<Float>, i: Int, b: Int, h: Int,
                           pb: UnsafeMutablePointer<Float>?) {
        if let pb {
            let bb = pb + ((b % d.biasBatch) * d.biasHeads + h % d.biasHeads) * d.tq * d.tk + i * d.tk
            for j in 0..<d.tk { row[j] += bb[j] }
        }
        if d.causal {
            let last = i + d.tk - d.tq
            if last + 1 < d.tk { (row + max(last + 1, 0)).update(repeating: -.infinity, count: d.tk - max(last + 1, 0)) }
        }
    }

    public func im2col(_ g: ConvGeometry, batch: Int, x: BufRef, col: BufRef) throws {
        let px = ptr(x), pc = ptr(col)
        let oh = g.outH, ow = g.outW, hw = oh * ow, cols = batch * hw
        // Row by row of the output: the zero borders, then the inside read in one run (a copy
        // when the stride is 1).
        parallelFor(g.channels) { c in
            for ky in 0..<g.kernelH {
                for kx in 0..<g.kernelW {
                    let row = (c * g.kernelH + ky) * g.kernelW + kx
                    let (lo, hi) = g.insideColumns(kx)
                    for n in 0..<batch {
                        let xPlane = px + (n * g.channels + c) * g.height * g.width
                        let cBase = pc + row * cols + n * hw
                        for oy in 0..<oh {
                            let dst = cBase + oy * ow
                            let iy = oy * g.strideH - g.padH + ky
                            guard iy >= 0 && iy < g.height && lo < hi else {
                                dst.update(repeating: 0, count: ow)
                                continue
                            }
                            if lo > 0 { dst.update(repeating: 0, count: lo) }
                            if hi < ow { (dst + hi).update(repeating: 0, count: ow - hi) }
                            let src = xPlane + iy * g.width + lo * g.strideW - g.padW + kx
                            if g.strideW == 1 {
                                (dst + lo).update(from: src, count: hi - lo)
                            } else {
                                for ox in lo..<hi { dst[ox] = src[(ox - lo) * g.strideW] }
                            }
                        }
                    }
                }
            }
        }
    }

    public func col2im(_ g: ConvGeometry, batch: Int, col: BufRef, dx: BufRef) throws {
        let pd = ptr(dx), pc = ptr(col)
        // Each channel's pixels are written only by that channel's rows: channels in parallel.
        // The transpose of im2col, row by row of the output: each (tap, image, output row)
        // adds its run of in-range columns to one input row (a vector add when the stride is 1).
        let oh = g.outH, ow = g.outW, hw = oh * ow, cols = batch * hw, plane = g.height * g.width
        parallelFor(g.channels) { c in
            for n in 0..<batch { (pd + (n * g.channels + c) * plane).update(repeating: 0, count: plane) }
            for ky in 0..<g.kernelH {
                for kx in 0..<g.kernelW {
                    let row = (c * g.kernelH + ky) * g.kernelW + kx
                    let (lo, hi) = g.insideColumns(kx)
                    guard lo < hi else { continue }
                    for n in 0..<batch {
                        let dPlane = pd + (n * g.channels + c) * plane
                        let cBase = pc + row * cols + n * hw
                        for oy in 0..<oh {
                            let iy = oy * g.strideH - g.padH + ky
                            guard iy >= 0 && iy < g.height else { continue }
                            let src = cBase + oy * ow + lo
                            let dst = dPlane + iy * g.width + lo * g.strideW - g.padW + kx
                            if g.strideW == 1 {
                                nar_vm_binary(BinaryOp.add.rawValue, dst, 1, src, 1, dst, hi - lo)
                            } else {
                                for j in 0..<(hi - lo) { dst[j * g.strideW] += src[j] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The reference of `Op.Conv2d` (and the kernel backends' fallback): out = bias, then per
    /// chunk of images (an im2col matrix near 8 MiB) each image's out [Cout, HW] += W [Cout, CKK]
    /// col [CKK, image's HW], one GEMM batched over the chunk (a 1x1 stride-1 convolution
    /// multiplies the input itself), the activation on each panel of the product.
    public func conv2d(_ g: ConvGeometry, batch: Int, outChannels: Int, x: BufRef, weight: BufRef,
                       bias: BufRef?, activation: UnaryOp?, out: BufRef) throws {
        let cout = outChannels, hw = g.colCols, rows = g.colRows
        try require(batch >= 0 && cout >= 0 && g.outH > 0 && g.outW > 0,
                    "conv2d of \(batch) images to \(cout) channels, geometry \(g)")
        try checkEpilogueActivation(activation)
        guard batch > 0 && cout > 0 else { return }
        let po = ptr(out)
        if let bias {
            let pb = ptr(bias)
            for i in 0..<(batch * cout) { (po + i * hw).update(repeating: pb[i % cout], count: hw) }
        }
        let pointwise = g.kernelH == 1 && g.kernelW == 1 && g.strideH == 1 && g.strideW == 1
            && g.padH == 0 && g.padW == 0
        let image = g.channels * g.height * g.width
        let chunk = pointwise ? batch : max(1, min(batch, (2 << 20) / max(rows * hw, 1)))
        let col = try CPUBuffer(count: pointwise ? 1 : rows * chunk * hw)
        var start = 0
        while start < batch {
            let nc = min(chunk, batch - start)
            let xs = BufRef(x.buffer, x.offset + start * image)
            if !pointwise { try im2col(g, batch: nc, x: xs, col: BufRef(col)) }
            var d = GemmDesc(m: cout, n: hw, k: rows, beta: bias == nil ? 0 : 1)
                .batched(nc, strideA: 0, strideB: pointwise ? image : hw, strideC: cout * hw)
            d.ldb = pointwise ? hw : nc * hw
            d.activation = activation  // (on each panel of the output as it is done)
            Self.sgemm(d, ptr(weight), pointwise ? ptr(xs) : col.pointer, po + start * cout * hw,
                       threads: WorkerPool.cores)
            start += nc
        }
    }

    public func resize(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int,
                       x: BufRef, y: BufRef) throws {
        let px = ptr(x), py = ptr(y)
        let ys = (0..<outH).map { ResizeTaps(mode, $0, inH, outH) }
        let xs = (0..<outW).map { ResizeTaps(mode, $0, inW, outW) }
        // Output rows (over all planes) spread over the cores; nearest reads one tap.
        parallelChunks(planes * outH, minimum: max(2, 16_384 / max(outW, 1))) { lo, hi in
            xs.withUnsafeBufferPointer { xs in
                for r in lo..<hi {
                    let p = r / outH, oy = r % outH, ty = ys[oy]
                    let xp = px + p * inH * inW, yr = py + r * outW
                    if mode == .nearest {
                        let src = xp + ty.i0 * inW
                        for ox in 0..<outW { yr[ox] = src[xs[ox].i0] }
                        continue
                    }
                    for ox in 0..<outW {
                        let tx = xs[ox]
                        let top = xp[ty.i0 * inW + tx.i0] * tx.w0 + xp[ty.i0 * inW + tx.i1] * tx.w1
                        let bot = xp[ty.i1 * inW + tx.i0] * tx.w0 + xp[ty.i1 * inW + tx.i1] * tx.w1
                        yr[ox] = top * ty.w0 + bot * ty.w1
                    }
                }
            }
        }
    }

    public func resizeBackward(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int,
                               outW: Int, dy: BufRef, dx: BufRef) throws {
        let pdy = ptr(dy), pdx = ptr(dx)
        pdx.update(repeating: 0, count: planes * inH * inW)
        let ys = (0..<outH).map { ResizeTaps(mode, $0, inH, outH) }
        let xs = (0..<outW).map { ResizeTaps(mode, $0, inW, outW) }
        for p in 0..<planes {
            let dxp = pdx + p * inH * inW, dyp = pdy + p * outH * outW
            for oy in 0..<outH {
                let ty = ys[oy]
                for ox in 0..<outW {
                    let tx = xs[ox], g = dyp[oy * outW + ox]
                    dxp[ty.i0 * inW + tx.i0] += g * ty.w0 * tx.w0
                    dxp[ty.i0 * inW + tx.i1] += g * ty.w0 * tx.w1
                    dxp[ty.i1 * inW + tx.i0] += g * ty.w1 * tx.w0
                    dxp[ty.i1 * inW + tx.i1] += g * ty.w1 * tx.w1
                }
            }
        }
    }

    public func reduce(outer: Int, reduce: Int, inner: Int, x: BufRef, out: BufRef) throws {
        let px = ptr(x), po = ptr(out)
        po.update(repeating: 0, count: outer * inner)
        for o in 0..<outer {
            for r in 0..<reduce {
                let src = px + (o * reduce + r) * inner, dst = po + o * inner
                for i in 0..<inner { dst[i] += src[i] }
            }
        }
    }

    public func gather(rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef) throws {
        let pt = ptr(table), pi = ptr(index), po = ptr(out)
        for r in 0..<rows {
            (po + r * dim).update(from: pt + Int(pi[r]) * dim, count: dim)
        }
    }

    public func gatherBackward(vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef,
                               dtable: BufRef) throws {
        let pdy = ptr(dy), ps = ptr(start), pl = ptr(list), pt = ptr(dtable)
        for v in 0..<vocab {
            let row = pt + v * dim
            row.update(repeating: 0, count: dim)
            for e in Int(ps[v])..<Int(ps[v + 1]) {
                let src = pdy + Int(pl[e]) * dim
                for j in 0..<dim { row[j] += src[j] }
            }
        }
    }

    public func randn(count: Int, seed: UInt64, offset: UInt64, dst: BufRef) throws {
        Philox.fillNormal(ptr(dst), count: count, seed: seed, offset: offset)
    }

    public func samplePatch(_ d: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?,
                            latent: BufRef, token: BufRef) throws {
        let m = ptr(mu), lv = ptr(logvar), lat = ptr(latent), tok = ptr(token)
        let e = eps.map { ptr($0) }
        let p = d.patch, s = d.size, plane = s * s, n = d.tokenSize
        var draws = [Float](repeating: 0, count: p)
        for b in 0..<d.batch {
            for c in 0..<d.channels {
                for py in 0..<p {
                    let y = d.gridY * p + py, x0 = d.gridX * p
                    let at = c * plane + y * s + x0
                    if let e {
                        for px in 0..<p { draws[px] = e[b * d.channels * plane + at + px] }
                    } else {
                        draws.withUnsafeMutableBufferPointer {
                            if let base = $0.baseAddress {
                                Philox.fillNormal(base, count: p, seed: d.seed &+ UInt64(b), offset: UInt64(at))
                            }
                        }
                    }
                    for px in 0..<p {
                        let j = b * n + (c * p + py) * p + px
                        let sd = Foundation.exp(0.5 * Swift.min(Swift.max(lv[j], d.logvarMin), d.logvarMax))
                        let v = m[j] + draws[px] * d.temperature * sd
                        tok[j] = v
                        lat[b * d.channels * plane + at + px] = v
                    }
                }
            }
        }
    }

    public func adamw(count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef,
                      v: BufRef) throws {
        let p = ptr(param), g = ptr(grad), pm = ptr(m), pv = ptr(v)
        for i in 0..<count {
            let gi = g[i]
            pm[i] = step.beta1 * pm[i] + (1 - step.beta1) * gi
            pv[i] = step.beta2 * pv[i] + (1 - step.beta2) * gi * gi
            let mh = pm[i] / step.biasCorrection1, vh = pv[i] / step.biasCorrection2
            p[i] = p[i] - step.lr * (step.weightDecay * p[i] + mh / (vh.squareRoot() + step.eps))
        }
    }
}

/// Source taps of one output coordinate of a resize (shared by forward and backward).
struct ResizeTaps {
    var i0: Int, i1: Int, w0: Float, w1: Float
    init(_ mode: ResizeMode, _ o: Int, _ inSize: Int, _ outSize: Int) {
        let scale = Float(inSize) / Float(outSize)
        switch mode {
        case .nearest:
            i0 = Swift.min(Int((Float(o) * scale).rounded(.down)), inSize - 1)
            i1 = i0; w0 = 1; w1 = 0
        case .bilinear:
            let src = Swift.max((Float(o) + 0.5) * scale - 0.5, 0)
            i0 = Swift.min(Int(src.rounded(.down)), inSize - 1)
            i1 = Swift.min(i0 + 1, inSize - 1)
            w1 = src - Float(i0); w0 = 1 - w1
        }
    }
}


/// Carries a value into concurrent work whose safety the caller guarantees.
extension ConvGeometry {
    /// The output columns lo..<hi whose input column ox * stride - pad + kx is inside the image
    /// (im2col's and col2im's runs; empty when hi <= lo).
    @inline(__always)
    func insideColumns(_ kx: Int) -> (Int, Int) {
        let lo = max(0, (padW - kx + strideW - 1) / strideW)
        let last = width - 1 + padW - kx  // (floor division: may be negative)
        return (lo, last < 0 ? 0 : min(outW, last / strideW + 1))
    }
}

struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

