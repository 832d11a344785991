import Foundation

/// Typed op descriptors: one value type per primitive, with named operands.
///
/// A call site builds one (`try device.run(Op.Gemm(d, a: x.ref, b: w.ref, c: y.ref))`);
/// `Device.run` asks the backend whether it `supports` that very call (it sees shapes, head
/// dims, optional operands) and otherwise runs it on the CPU backend, moving exactly the
/// buffers the descriptor names as read and written. Each backend states its own limits in
/// `supports`; callers carry none.
public protocol PrimitiveOp {
    associatedtype Result = Void
    /// The op family (profiles, `NOISEAR_DISABLE_OPS`, fallback notices).
    static var kind: OpKind { get }
    /// Buffers the op reads (and does not write).
    var reads: [BufRef] { get }
    /// Buffers the op writes (read-write operands included).
    var writes: [BufRef] { get }
    /// The same op with every buffer reference replaced by `f(ref)` (used to move a call to
    /// another backend's copies of its buffers).
    func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self
    /// Runs the op on `backend` (which must support it).
    func execute(on backend: any Backend) throws -> Result
}

extension PrimitiveOp {
    public var kind: OpKind { Self.kind }
}

/// The namespace of the op descriptors.
public enum Op {
    /// dst[0..<count] = value.
    public struct Fill: PrimitiveOp {
        public static let kind = OpKind.fill
        public var dst: BufRef, count: Int, value: Float
        public init(dst: BufRef, count: Int, value: Float) { self.dst = dst; self.count = count; self.value = value }
        public var reads: [BufRef] { [] }
        public var writes: [BufRef] { [dst] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.dst = try f(dst); return o
        }
        public func execute(on b: any Backend) throws { try b.fill(dst, count: count, value: value) }
    }

    /// dst[strided] = src[strided] over `shape` (rank <= 6).
    public struct Copy: PrimitiveOp {
        public static let kind = OpKind.copy
        public var shape: [Int], src: Strided, dst: Strided
        public init(shape: [Int], src: Strided, dst: Strided) { self.shape = shape; self.src = src; self.dst = dst }
        public var reads: [BufRef] { [src.ref] }
        public var writes: [BufRef] { [dst.ref] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.src.ref = try f(src.ref); o.dst.ref = try f(dst.ref); return o
        }
        public func execute(on b: any Backend) throws { try b.copy(shape: shape, src: src, dst: dst) }
    }

    /// out (contiguous `shape`) = a op b through broadcast strides.
    public struct Binary: PrimitiveOp {
        public static let kind = OpKind.binary
        public var op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef
        public init(_ op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef) {
            self.op = op; self.shape = shape; self.a = a; self.b = b; self.out = out
        }
        public var reads: [BufRef] { [a.ref, b.ref] }
        public var writes: [BufRef] { [out] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.a.ref = try f(a.ref); o.b.ref = try f(b.ref); o.out = try f(out); return o
        }
        public func execute(on be: any Backend) throws { try be.binary(op, shape: shape, a: a, b: b, out: out) }
    }

    /// y = f(x) elementwise.
    public struct Unary: PrimitiveOp {
        public static let kind = OpKind.unary
        public var op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float, p1: Float
        public init(_ op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float = 0, p1: Float = 0) {
            self.op = op; self.count = count; self.x = x; self.y = y; self.p0 = p0; self.p1 = p1
        }
        public var reads: [BufRef] { [x] }
        public var writes: [BufRef] { [y] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.y = try f(y); return o
        }
        public func execute(on b: any Backend) throws { try b.unary(op, count: count, x: x, y: y, p0: p0, p1: p1) }
    }

    /// dx = dy * f'(x).
    public struct UnaryBackward: PrimitiveOp {
        public static let kind = OpKind.unaryBackward
        public var op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef, p0: Float, p1: Float
        public init(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef, p0: Float = 0, p1: Float = 0) {
            self.op = op; self.count = count; self.x = x; self.dy = dy; self.dx = dx; self.p0 = p0; self.p1 = p1
        }
        public var reads: [BufRef] { [x, dy] }
        public var writes: [BufRef] { [dx] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.dy = try f(dy); o.dx = try f(dx); return o
        }
        public func execute(on b: any Backend) throws {
            try b.unaryBackward(op, count: count, x: x, dy: dy, dx: dx, p0: p0, p1: p1)
        }
    }

    /// C = alpha op(A) op(B) + beta C, batched.
    public struct Gemm: PrimitiveOp {
        public static let kind = OpKind.gemm
        public var desc: GemmDesc, a: BufRef, b: BufRef, c: BufRef
        /// Added to every row of C after the product (`GemmDesc.biasStride0`).
        public var bias: BufRef?
        /// Where beta's term reads C from (laid out as C: a residual); nil reads C itself.
        public var cIn: BufRef?
        public init(_ desc: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef? = nil, cIn: BufRef? = nil) {
            self.desc = desc; self.a = a; self.b = b; self.c = c; self.bias = bias; self.cIn = cIn
        }
        public var reads: [BufRef] { [a, b] + [bias, cIn].compactMap { $0 } }
        // C is read too when beta != 0; a written buffer is always moved both ways.
        public var writes: [BufRef] { [c] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.a = try f(a); o.b = try f(b); o.c = try f(c); o.bias = try bias.map(f)
            o.cIn = try cIn.map(f)
            return o
        }
        public func execute(on be: any Backend) throws { try be.gemm(desc, a: a, b: b, c: c, bias: bias, cIn: cIn) }
    }

    /// Row-wise (log-)softmax of a [rows, cols] matrix.
    public struct Softmax: PrimitiveOp {
        public static let kind = OpKind.softmax
        public var rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef
        public init(rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef) {
            self.rows = rows; self.cols = cols; self.log = log; self.x = x; self.y = y
        }
        public var reads: [BufRef] { [x] }
        public var writes: [BufRef] { [y] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.y = try f(y); return o
        }
        public func execute(on b: any Backend) throws { try b.softmax(rows: rows, cols: cols, log: log, x: x, y: y) }
    }

    public struct SoftmaxBackward: PrimitiveOp {
        public static let kind = OpKind.softmaxBackward
        public var rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef, dx: BufRef
        public init(rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef, dx: BufRef) {
            self.rows = rows; self.cols = cols; self.log = log; self.y = y; self.dy = dy; self.dx = dx
        }
        public var reads: [BufRef] { [y, dy] }
        public var writes: [BufRef] { [dx] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.y = try f(y); o.dy = try f(dy); o.dx = try f(dx); return o
        }
        public func execute(on b: any Backend) throws {
            try b.softmaxBackward(rows: rows, cols: cols, log: log, y: y, dy: dy, dx: dx)
        }
    }

    /// Row-wise layer norm with optional gamma/beta; saves mean and 1/std per row.
    public struct LayerNorm: PrimitiveOp {
        public static let kind = OpKind.layerNorm
        public var rows: Int, cols: Int, eps: Float
        public var x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef
        public init(rows: Int, cols: Int, eps: Float, x: BufRef, gamma: BufRef?, beta: BufRef?,
                    y: BufRef, mean: BufRef, rstd: BufRef) {
            self.rows = rows; self.cols = cols; self.eps = eps; self.x = x; self.gamma = gamma
            self.beta = beta; self.y = y; self.mean = mean; self.rstd = rstd
        }
        public var reads: [BufRef] { [x] + [gamma, beta].compactMap { $0 } }
        public var writes: [BufRef] { [y, mean, rstd] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.x = try f(x); o.gamma = try gamma.map(f); o.beta = try beta.map(f)
            o.y = try f(y); o.mean = try f(mean); o.rstd = try f(rstd)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.layerNorm(rows: rows, cols: cols, eps: eps, x: x, gamma: gamma, beta: beta, y: y,
                            mean: mean, rstd: rstd)
        }
    }

    public struct LayerNormBackward: PrimitiveOp {
        public static let kind = OpKind.layerNormBackward
        public var rows: Int, cols: Int
        public var x: BufRef, gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef
        public var dx: BufRef, dgamma: BufRef?, dbeta: BufRef?
        public init(rows: Int, cols: Int, x: BufRef, gamma: BufRef?, mean: BufRef, rstd: BufRef,
                    dy: BufRef, dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) {
            self.rows = rows; self.cols = cols; self.x = x; self.gamma = gamma; self.mean = mean
            self.rstd = rstd; self.dy = dy; self.dx = dx; self.dgamma = dgamma; self.dbeta = dbeta
        }
        public var reads: [BufRef] { [x, mean, rstd, dy] + [gamma].compactMap { $0 } }
        public var writes: [BufRef] { [dx] + [dgamma, dbeta].compactMap { $0 } }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.x = try f(x); o.gamma = try gamma.map(f); o.mean = try f(mean); o.rstd = try f(rstd)
            o.dy = try f(dy); o.dx = try f(dx); o.dgamma = try dgamma.map(f); o.dbeta = try dbeta.map(f)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.layerNormBackward(rows: rows, cols: cols, x: x, gamma: gamma, mean: mean, rstd: rstd,
                                    dy: dy, dx: dx, dgamma: dgamma, dbeta: dbeta)
        }
    }

    /// Group norm of [n, channels, spatial]; saves mean/rstd per (n, group).
    public struct GroupNorm: PrimitiveOp {
        public static let kind = OpKind.groupNorm
        public var n: Int, channels: Int, spatial: Int, groups: Int, eps: Float
        public var x: BufRef, gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef
        /// A unary op applied to y afterwards (SiLU in the ResNet blocks), nil for none.
        public var activation: UnaryOp?
        public init(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                    gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef,
                    activation: UnaryOp? = nil) {
            self.n = n; self.channels = channels; self.spatial = spatial; self.groups = groups
            self.eps = eps; self.x = x; self.gamma = gamma; self.beta = beta; self.y = y
            self.mean = mean; self.rstd = rstd; self.activation = activation
        }
        public var reads: [BufRef] { [x] + [gamma, beta].compactMap { $0 } }
        public var writes: [BufRef] { [y, mean, rstd] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.x = try f(x); o.gamma = try gamma.map(f); o.beta = try beta.map(f)
            o.y = try f(y); o.mean = try f(mean); o.rstd = try f(rstd)
            return o
        }
        public func execute(on b: any Backend) throws {
            if let activation {
                try b.groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                                gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd, activation: activation)
            } else {
                try b.groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                                gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd)
            }
        }
    }

    public struct GroupNormBackward: PrimitiveOp {
        public static let kind = OpKind.groupNormBackward
        public var n: Int, channels: Int, spatial: Int, groups: Int
        public var x: BufRef, gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef
        public var dx: BufRef, dgamma: BufRef?, dbeta: BufRef?
        public init(n: Int, channels: Int, spatial: Int, groups: Int, x: BufRef, gamma: BufRef?,
                    mean: BufRef, rstd: BufRef, dy: BufRef, dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) {
            self.n = n; self.channels = channels; self.spatial = spatial; self.groups = groups
            self.x = x; self.gamma = gamma; self.mean = mean; self.rstd = rstd; self.dy = dy
            self.dx = dx; self.dgamma = dgamma; self.dbeta = dbeta
        }
        public var reads: [BufRef] { [x, mean, rstd, dy] + [gamma].compactMap { $0 } }
        public var writes: [BufRef] { [dx] + [dgamma, dbeta].compactMap { $0 } }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.x = try f(x); o.gamma = try gamma.map(f); o.mean = try f(mean); o.rstd = try f(rstd)
            o.dy = try f(dy); o.dx = try f(dx); o.dgamma = try dgamma.map(f); o.dbeta = try dbeta.map(f)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.groupNormBackward(n: n, channels: channels, spatial: spatial, groups: groups, x: x,
                                    gamma: gamma, mean: mean, rstd: rstd, dy: dy, dx: dx,
                                    dgamma: dgamma, dbeta: dbeta)
        }
    }

    /// Fused attention O = softmax(scale Q K^T + bias + causal) V.
    public struct Attention: PrimitiveOp {
        public static let kind = OpKind.attention
        public var desc: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?, o: BufRef
        public init(_ desc: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?, o: BufRef) {
            self.desc = desc; self.q = q; self.k = k; self.v = v; self.bias = bias; self.o = o
        }
        public var reads: [BufRef] { [q, k, v] + [bias].compactMap { $0 } }
        public var writes: [BufRef] { [o] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var r = self
            r.q = try f(q); r.k = try f(k); r.v = try f(v); r.bias = try bias.map(f); r.o = try f(o)
            return r
        }
        public func execute(on b: any Backend) throws { try b.attention(desc, q: q, k: k, v: v, bias: bias, o: o) }
    }

    /// col [C*kh*kw, batch*outH*outW] from x [batch, C, H, W].
    public struct Im2col: PrimitiveOp {
        public static let kind = OpKind.im2col
        public var geometry: ConvGeometry, batch: Int, x: BufRef, col: BufRef
        public init(_ geometry: ConvGeometry, batch: Int, x: BufRef, col: BufRef) {
            self.geometry = geometry; self.batch = batch; self.x = x; self.col = col
        }
        public var reads: [BufRef] { [x] }
        public var writes: [BufRef] { [col] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.col = try f(col); return o
        }
        public func execute(on b: any Backend) throws { try b.im2col(geometry, batch: batch, x: x, col: col) }
    }

    /// dx [batch, C, H, W] (overwritten) from col.
    public struct Col2im: PrimitiveOp {
        public static let kind = OpKind.col2im
        public var geometry: ConvGeometry, batch: Int, col: BufRef, dx: BufRef
        public init(_ geometry: ConvGeometry, batch: Int, col: BufRef, dx: BufRef) {
            self.geometry = geometry; self.batch = batch; self.col = col; self.dx = dx
        }
        public var reads: [BufRef] { [col] }
        public var writes: [BufRef] { [dx] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.col = try f(col); o.dx = try f(dx); return o
        }
        public func execute(on b: any Backend) throws { try b.col2im(geometry, batch: batch, col: col, dx: dx) }
    }

    /// out [batch, Cout, outH, outW] = conv2d(x [batch, C, H, W], weight [Cout, C, kh, kw]) + bias
    /// (groups = 1; bias [Cout] optional), without an im2col matrix where the backend can.
    public struct Conv2d: PrimitiveOp {
        public static let kind = OpKind.conv2d
        public var geometry: ConvGeometry, batch: Int, outChannels: Int
        public var x: BufRef, weight: BufRef, bias: BufRef?, out: BufRef
        /// Applied to every output last (the convolution's activation epilogue); parameter-free
        /// ops only.
        public var activation: UnaryOp?
        public init(_ geometry: ConvGeometry, batch: Int, outChannels: Int, x: BufRef, weight: BufRef,
                    bias: BufRef?, activation: UnaryOp? = nil, out: BufRef) {
            self.geometry = geometry; self.batch = batch; self.outChannels = outChannels
            self.x = x; self.weight = weight; self.bias = bias; self.activation = activation; self.out = out
        }
        public var reads: [BufRef] { [x, weight] + [bias].compactMap { $0 } }
        public var writes: [BufRef] { [out] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.x = try f(x); o.weight = try f(weight); o.bias = try bias.map(f); o.out = try f(out)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.conv2d(geometry, batch: batch, outChannels: outChannels, x: x, weight: weight, bias: bias,
                         activation: activation, out: out)
        }
    }

    /// [planes, inH, inW] -> [planes, outH, outW].
    public struct Resize: PrimitiveOp {
        public static let kind = OpKind.resize
        public var mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int
        public var x: BufRef, y: BufRef
        public init(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int, x: BufRef, y: BufRef) {
            self.mode = mode; self.planes = planes; self.inH = inH; self.inW = inW
            self.outH = outH; self.outW = outW; self.x = x; self.y = y
        }
        public var reads: [BufRef] { [x] }
        public var writes: [BufRef] { [y] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.y = try f(y); return o
        }
        public func execute(on b: any Backend) throws {
            try b.resize(mode, planes: planes, inH: inH, inW: inW, outH: outH, outW: outW, x: x, y: y)
        }
    }

    public struct ResizeBackward: PrimitiveOp {
        public static let kind = OpKind.resizeBackward
        public var mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int
        public var dy: BufRef, dx: BufRef
        public init(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int, dy: BufRef, dx: BufRef) {
            self.mode = mode; self.planes = planes; self.inH = inH; self.inW = inW
            self.outH = outH; self.outW = outW; self.dy = dy; self.dx = dx
        }
        public var reads: [BufRef] { [dy] }
        public var writes: [BufRef] { [dx] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.dy = try f(dy); o.dx = try f(dx); return o
        }
        public func execute(on b: any Backend) throws {
            try b.resizeBackward(mode, planes: planes, inH: inH, inW: inW, outH: outH, outW: outW, dy: dy, dx: dx)
        }
    }

    /// out[o, i] = sum_r x[o, r, i].
    public struct Reduce: PrimitiveOp {
        public static let kind = OpKind.reduce
        public var outer: Int, reduce: Int, inner: Int, x: BufRef, out: BufRef
        public init(outer: Int, reduce: Int, inner: Int, x: BufRef, out: BufRef) {
            self.outer = outer; self.reduce = reduce; self.inner = inner; self.x = x; self.out = out
        }
        public var reads: [BufRef] { [x] }
        public var writes: [BufRef] { [out] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.x = try f(x); o.out = try f(out); return o
        }
        public func execute(on b: any Backend) throws {
            try b.reduce(outer: outer, reduce: reduce, inner: inner, x: x, out: out)
        }
    }

    /// out[i, :] = table[index[i], :].
    public struct Gather: PrimitiveOp {
        public static let kind = OpKind.gather
        public var rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef
        public init(rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef) {
            self.rows = rows; self.dim = dim; self.table = table; self.index = index; self.out = out
        }
        public var reads: [BufRef] { [table, index] }
        public var writes: [BufRef] { [out] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.table = try f(table); o.index = try f(index); o.out = try f(out); return o
        }
        public func execute(on b: any Backend) throws {
            try b.gather(rows: rows, dim: dim, table: table, index: index, out: out)
        }
    }

    public struct GatherBackward: PrimitiveOp {
        public static let kind = OpKind.gatherBackward
        public var vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef, dtable: BufRef
        public init(vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef, dtable: BufRef) {
            self.vocab = vocab; self.dim = dim; self.dy = dy; self.start = start; self.list = list; self.dtable = dtable
        }
        public var reads: [BufRef] { [dy, start, list] }
        public var writes: [BufRef] { [dtable] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.dy = try f(dy); o.start = try f(start); o.list = try f(list); o.dtable = try f(dtable)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.gatherBackward(vocab: vocab, dim: dim, dy: dy, start: start, list: list, dtable: dtable)
        }
    }

    /// Philox4x32-10 standard normals.
    public struct Randn: PrimitiveOp {
        public static let kind = OpKind.randn
        public var count: Int, seed: UInt64, offset: UInt64, dst: BufRef
        public init(count: Int, seed: UInt64, offset: UInt64, dst: BufRef) {
            self.count = count; self.seed = seed; self.offset = offset; self.dst = dst
        }
        public var reads: [BufRef] { [] }
        public var writes: [BufRef] { [dst] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.dst = try f(dst); return o
        }
        public func execute(on b: any Backend) throws { try b.randn(count: count, seed: seed, offset: offset, dst: dst) }
    }

    /// One patch of an autoregressive noise sample (see `Backend.samplePatch`).
    public struct SamplePatch: PrimitiveOp {
        public static let kind = OpKind.samplePatch
        public var desc: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?, latent: BufRef, token: BufRef
        public init(_ desc: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?, latent: BufRef, token: BufRef) {
            self.desc = desc; self.mu = mu; self.logvar = logvar; self.eps = eps; self.latent = latent; self.token = token
        }
        public var reads: [BufRef] { [mu, logvar] + [eps].compactMap { $0 } }
        public var writes: [BufRef] { [latent, token] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.mu = try f(mu); o.logvar = try f(logvar); o.eps = try eps.map(f)
            o.latent = try f(latent); o.token = try f(token)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.samplePatch(desc, mu: mu, logvar: logvar, eps: eps, latent: latent, token: token)
        }
    }

    /// One fused AdamW update of param, m, v in place.
    public struct AdamW: PrimitiveOp {
        public static let kind = OpKind.adamw
        public var count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef, v: BufRef
        public init(count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef, v: BufRef) {
            self.count = count; self.step = step; self.param = param; self.grad = grad; self.m = m; self.v = v
        }
        public var reads: [BufRef] { [grad] }
        public var writes: [BufRef] { [param, m, v] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self
            o.param = try f(param); o.grad = try f(grad); o.m = try f(m); o.v = try f(v)
            return o
        }
        public func execute(on b: any Backend) throws {
            try b.adamw(count: count, step: step, param: param, grad: grad, m: m, v: v)
        }
    }

    /// A linear combination of up to four same-sized contiguous buffers in one pass.
    public struct Combine: PrimitiveOp {
        public static let kind = OpKind.combine
        public static let maxTerms = 4
        public var count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef
        public init(count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef) {
            self.count = count; self.coefficients = coefficients; self.inputs = inputs; self.out = out
        }
        public var reads: [BufRef] { inputs }
        public var writes: [BufRef] { [out] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.inputs = try inputs.map(f); o.out = try f(out); return o
        }
        public func execute(on b: any Backend) throws {
            try b.combine(count: count, coefficients: coefficients, inputs: inputs, out: out)
        }
    }

    /// Batched one-sided Jacobi SVD; the result is the most sweeps any matrix used.
    public struct SVD: PrimitiveOp {
        public static let kind = OpKind.svd
        public var batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef
        public var tolerance: Float, maxSweeps: Int, precondition: Bool
        public init(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef, tolerance: Float, maxSweeps: Int,
                    precondition: Bool = true) {
            self.batch = batch; self.n = n; self.a = a; self.u = u; self.s = s; self.vt = vt
            self.tolerance = tolerance; self.maxSweeps = maxSweeps; self.precondition = precondition
        }
        public var reads: [BufRef] { [a] }
        public var writes: [BufRef] { [u, s, vt] }
        public func rebased(_ f: (BufRef) throws -> BufRef) rethrows -> Self {
            var o = self; o.a = try f(a); o.u = try f(u); o.s = try f(s); o.vt = try f(vt); return o
        }
        public func execute(on b: any Backend) throws -> Int {
            try b.svd(batch: batch, n: n, a: a, u: u, s: s, vt: vt, tolerance: tolerance, maxSweeps: maxSweeps,
                      precondition: precondition)
        }
    }
}

extension OpKind {
    /// The descriptor type of each family (the coverage test walks this table).
    public var descriptor: any PrimitiveOp.Type {
        switch self {
        case .fill: return Op.Fill.self
        case .copy: return Op.Copy.self
        case .binary: return Op.Binary.self
        case .unary: return Op.Unary.self
        case .unaryBackward: return Op.UnaryBackward.self
        case .gemm: return Op.Gemm.self
        case .softmax: return Op.Softmax.self
        case .softmaxBackward: return Op.SoftmaxBackward.self
        case .layerNorm: return Op.LayerNorm.self
        case .layerNormBackward: return Op.LayerNormBackward.self
        case .groupNorm: return Op.GroupNorm.self
        case .groupNormBackward: return Op.GroupNormBackward.self
        case .attention: return Op.Attention.self
        case .im2col: return Op.Im2col.self
        case .col2im: return Op.Col2im.self
        case .conv2d: return Op.Conv2d.self
        case .resize: return Op.Resize.self
        case .resizeBackward: return Op.ResizeBackward.self
        case .reduce: return Op.Reduce.self
        case .gather: return Op.Gather.self
        case .gatherBackward: return Op.GatherBackward.self
        case .randn: return Op.Randn.self
        case .adamw: return Op.AdamW.self
        case .samplePatch: return Op.SamplePatch.self
        case .combine: return Op.Combine.self
        case .svd: return Op.SVD.self
        }
    }
}

extension OpKind {
    /// The families named in `NOISEAR_DISABLE_OPS` (unknown names warn once, with the valid ones).
    static func disabled(environment: [String: String],
                         warn: (String) -> Void = { FileHandle.standardError.write(Data(("warning: " + $0 + "\n").utf8)) })
        -> Set<OpKind>
    {
        var off = Set<OpKind>()
        var unknown: [String] = []
        for item in (environment["NOISEAR_DISABLE_OPS"] ?? "").split(separator: ",") {
            let name = item.trimmingCharacters(in: .whitespaces)
            if name.isEmpty { continue }
            if let op = OpKind(rawValue: name) { off.insert(op) } else { unknown.append(name) }
        }
        if !unknown.isEmpty {
            let message = "NOISEAR_DISABLE_OPS: ignoring unknown op name\(unknown.count > 1 ? "s" : "") "
                + unknown.joined(separator: ", ") + "; valid names: "
                + OpKind.allCases.map(\.rawValue).joined(separator: ", ")
            if WarnOnce.shared.first(message) { warn(message) }
        }
        return off
    }
}
