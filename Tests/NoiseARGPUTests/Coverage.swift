import Foundation
import NoiseARGPU
import Testing

/// Which op families each backend ran, as seen through `RecordingBackend`: the differential
/// harness and the gradient checks run every backend through one.
final class OpCoverage: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [String: Set<OpKind>] = [:]
    func record(_ label: String, _ kind: OpKind) {
        lock.lock()
        seen[label, default: []].insert(kind)
        lock.unlock()
    }
    func kinds(_ label: String) -> Set<OpKind> {
        lock.lock()
        defer { lock.unlock() }
        return seen[label] ?? []
    }
    func reset() {
        lock.lock()
        seen = [:]
        lock.unlock()
    }
}

/// A backend that runs everything on `inner` and records each primitive's family under `label`.
final class RecordingBackend: Backend {
    let inner: any Backend
    let label: String
    let coverage: OpCoverage
    init(_ inner: any Backend, label: String, coverage: OpCoverage) {
        self.inner = inner; self.label = label; self.coverage = coverage
    }
    private func note(_ k: OpKind) { coverage.record(label, k) }
    var info: DeviceInfo { inner.info }
    func supports(_ op: any PrimitiveOp) -> Bool { inner.supports(op) }
    func allocate(_ count: Int) throws -> any DeviceBuffer { try inner.allocate(count) }
    func upload(_ src: UnsafeBufferPointer<Float>, to dst: BufRef) throws { try inner.upload(src, to: dst) }
    func download(_ src: BufRef, into dst: UnsafeMutableBufferPointer<Float>) throws { try inner.download(src, into: dst) }
    func synchronize() throws { try inner.synchronize() }
    func fill(_ dst: BufRef, count: Int, value: Float) throws { note(.fill); try inner.fill(dst, count: count, value: value) }
    func copy(shape: [Int], src: Strided, dst: Strided) throws { note(.copy); try inner.copy(shape: shape, src: src, dst: dst) }
    func binary(_ op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef) throws {
        note(.binary); try inner.binary(op, shape: shape, a: a, b: b, out: out)
    }
    func unary(_ op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float, p1: Float) throws {
        note(.unary); try inner.unary(op, count: count, x: x, y: y, p0: p0, p1: p1)
    }
    func unaryBackward(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef, p0: Float, p1: Float) throws {
        note(.unaryBackward); try inner.unaryBackward(op, count: count, x: x, dy: dy, dx: dx, p0: p0, p1: p1)
    }
    func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef?, cIn: BufRef?) throws {
        note(.gemm); try inner.gemm(d, a: a, b: b, c: c, bias: bias, cIn: cIn)
    }
    func softmax(rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef) throws {
        note(.softmax); try inner.softmax(rows: rows, cols: cols, log: log, x: x, y: y)
    }
    func softmaxBackward(rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef, dx: BufRef) throws {
        note(.softmaxBackward); try inner.softmaxBackward(rows: rows, cols: cols, log: log, y: y, dy: dy, dx: dx)
    }
    func layerNorm(rows: Int, cols: Int, eps: Float, x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef,
                   mean: BufRef, rstd: BufRef) throws {
        note(.layerNorm)
        try inner.layerNorm(rows: rows, cols: cols, eps: eps, x: x, gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd)
    }
    func layerNormBackward(rows: Int, cols: Int, x: BufRef, gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef,
                           dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) throws {
        note(.layerNormBackward)
        try inner.layerNormBackward(rows: rows, cols: cols, x: x, gamma: gamma, mean: mean, rstd: rstd, dy: dy, dx: dx,
                                    dgamma: dgamma, dbeta: dbeta)
    }
    func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef, gamma: BufRef?,
                   beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef) throws {
        note(.groupNorm)
        try inner.groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x, gamma: gamma,
                            beta: beta, y: y, mean: mean, rstd: rstd)
    }
    func groupNormBackward(n: Int, channels: Int, spatial: Int, groups: Int, x: BufRef, gamma: BufRef?, mean: BufRef,
                           rstd: BufRef, dy: BufRef, dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) throws {
        note(.groupNormBackward)
        try inner.groupNormBackward(n: n, channels: channels, spatial: spatial, groups: groups, x: x, gamma: gamma,
                                    mean: mean, rstd: rstd, dy: dy, dx: dx, dgamma: dgamma, dbeta: dbeta)
    }
    func attention(_ d: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?, o: BufRef) throws {
        note(.attention); try inner.attention(d, q: q, k: k, v: v, bias: bias, o: o)
    }
    func im2col(_ g: ConvGeometry, batch: Int, x: BufRef, col: BufRef) throws {
        note(.im2col); try inner.im2col(g, batch: batch, x: x, col: col)
    }
    func col2im(_ g: ConvGeometry, batch: Int, col: BufRef, dx: BufRef) throws {
        note(.col2im); try inner.col2im(g, batch: batch, col: col, dx: dx)
    }
    func conv2d(_ g: ConvGeometry, batch: Int, outChannels: Int, x: BufRef, weight: BufRef, bias: BufRef?,
                activation: UnaryOp?, out: BufRef) throws {
        note(.conv2d)
        try inner.conv2d(g, batch: batch, outChannels: outChannels, x: x, weight: weight, bias: bias,
                         activation: activation, out: out)
    }
    func resize(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int, x: BufRef, y: BufRef) throws {
        note(.resize); try inner.resize(mode, planes: planes, inH: inH, inW: inW, outH: outH, outW: outW, x: x, y: y)
    }
    func resizeBackward(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int, dy: BufRef,
                        dx: BufRef) throws {
        note(.resizeBackward)
        try inner.resizeBackward(mode, planes: planes, inH: inH, inW: inW, outH: outH, outW: outW, dy: dy, dx: dx)
    }
    func reduce(outer: Int, reduce: Int, inner n: Int, x: BufRef, out: BufRef) throws {
        note(.reduce); try inner.reduce(outer: outer, reduce: reduce, inner: n, x: x, out: out)
    }
    func gather(rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef) throws {
        note(.gather); try inner.gather(rows: rows, dim: dim, table: table, index: index, out: out)
    }
    func gatherBackward(vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef, dtable: BufRef) throws {
        note(.gatherBackward); try inner.gatherBackward(vocab: vocab, dim: dim, dy: dy, start: start, list: list, dtable: dtable)
    }
    func randn(count: Int, seed: UInt64, offset: UInt64, dst: BufRef) throws {
        note(.randn); try inner.randn(count: count, seed: seed, offset: offset, dst: dst)
    }
    func samplePatch(_ d: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?, latent: BufRef, token: BufRef) throws {
        note(.samplePatch); try inner.samplePatch(d, mu: mu, logvar: logvar, eps: eps, latent: latent, token: token)
    }
    func adamw(count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef, v: BufRef) throws {
        note(.adamw); try inner.adamw(count: count, step: step, param: param, grad: grad, m: m, v: v)
    }
    func combine(count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef) throws {
        note(.combine); try inner.combine(count: count, coefficients: coefficients, inputs: inputs, out: out)
    }
    func svd(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef, tolerance: Float, maxSweeps: Int,
             precondition: Bool) throws -> Int {
        note(.svd)
        return try inner.svd(batch: batch, n: n, a: a, u: u, s: s, vt: vt, tolerance: tolerance, maxSweeps: maxSweeps,
                             precondition: precondition)
    }
}

extension OpKind {
    /// How the tape differentiates a family: a backward kernel, a forward op whose gradient is
    /// built from other ops, or none (the family is never differentiated).
    enum GradientRole { case backwardKernel, differentiable, none }
    var gradientRole: GradientRole {
        switch self {
        case .unaryBackward, .softmaxBackward, .layerNormBackward, .groupNormBackward, .col2im, .resizeBackward,
            .gatherBackward:
            return .backwardKernel
        case .copy, .binary, .unary, .gemm, .softmax, .layerNorm, .groupNorm, .attention, .im2col, .resize, .reduce,
            .gather, .combine:
            return .differentiable
        // (conv2d runs only untaped: recorded convolutions take im2col + GEMM)
        case .fill, .randn, .adamw, .samplePatch, .svd, .conv2d:
            return .none
        }
    }
}

/// Every op family has a differential test on every backend (CPU, each OpenCL and Vulkan
/// parameter set), and every differentiable family a finite-difference gradient check whose
/// backward pass runs on every backend. The test runs the differential and gradient tests
/// itself through `RecordingBackend`s and fails on any (family, backend) pair that none of
/// them ran, so a new family without tests fails here.
@Suite(.serialized) struct OpCoverageTests {
    @Test func everyOpHasDifferentialAndGradientTestsOnEveryBackend() throws {
        let differential = OpCoverage(), gradient = OpCoverage()
        try OpCoverageScope.with(differential: differential, gradient: gradient) {
            let d = DifferentialOpTests()
            try d.fillAndCopy()
            try d.binary(op: .mul)
            try d.unary(op: .gelu)
            try d.gemm(m: 17, n: 33, k: 9)
            try d.softmax(rows: 7, cols: 13)
            try d.layerNorm(rows: 9, cols: 37)
            try d.groupNorm(groups: 3)
            try d.attention(DifferentialOpTests.AttnCase(b: 2, h: 3, tq: 5, tk: 7, d: 8, dv: 8))
            try d.im2colAndCol2im()
            try ConvDirectTests().directConvolution(ConvDirectTests.cases[0])
            try d.resize(mode: .bilinear)
            try d.reduce(outer: 3, reduce: 5, inner: 7)
            try d.gatherRows()
            try d.randnIsBitwiseIdentical()
            try d.adamw()
            try d.samplePatch()
            try d.combine()
            try SVDTests().backendGuardsAndOffsets()
            let g = GradientTests()
            try g.elementwiseBroadcast()
            try g.unary(op: .silu)
            try g.matmulAndLinear()
            try g.softmaxFamily()
            try g.norms()
            try g.attention()
            try g.convAndResize()
            try g.shapeOps()
            try g.linearCombination()
        }
        var labels = ["cpu"]
        try withBackends { labels += $0.map(\.label) }
        for label in labels {
            let ran = differential.kinds(label)
            for kind in OpKind.allCases {
                let tested = ran.contains(kind)
                #expect(tested, "op '\(kind.rawValue)' has no differential test on \(label)")
            }
            let grads = gradient.kinds(label)
            for kind in OpKind.allCases where kind.gradientRole != .none {
                let checked = grads.contains(kind)
                #expect(checked, "op '\(kind.rawValue)' has no gradient check that runs it on \(label)")
            }
        }
    }
}

/// Where the harness and the gradient checks record: task-local, so only the coverage test's
/// own runs count (tests running in parallel record into a recorder nothing reads).
enum OpCoverageScope {
    @TaskLocal static var differential = OpCoverage()
    @TaskLocal static var gradient = OpCoverage()
    static func with(differential d: OpCoverage, gradient g: OpCoverage, _ body: () throws -> Void) throws {
        try $differential.withValue(d) { try $gradient.withValue(g) { try body() } }
    }
}
