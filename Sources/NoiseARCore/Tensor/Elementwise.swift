/// Elementwise ops with NumPy broadcasting, unary maps and scalar forms.
extension Tensor {
    func sameDevice(_ other: Tensor, _ op: String) throws {
        try require(other.device === device, "\(op): tensors on different devices (\(device.info.id), \(other.device.info.id))")
    }

    /// a op b with broadcasting.
    static func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        try a.sameDevice(b, "\(op)")
        let shape = try Shape.broadcast(a.shape, b.shape)
        let out = try Tensor.empty(shape, on: a.device)
        if shape.count <= Strided.maxRank {
            try a.device.run(Op.Binary(op, shape: shape, a: Strided(a.ref, strides: Shape.broadcastStrides(a.shape, to: shape)),
                                       b: Strided(b.ref, strides: Shape.broadcastStrides(b.shape, to: shape)), out: out.ref))
        } else {
            throw NoiseError.unsupported("elementwise ops above rank \(Strided.maxRank)")
        }
        return record(out, [a, b], "\(op)") { g in
            let ga: Tensor?, gb: Tensor?
            switch op {
            case .add: ga = g; gb = g
            case .sub: ga = g; gb = try g.scaled(-1)
            case .mul: ga = try g * b; gb = try g * a
            case .div:
                ga = try g / b
                gb = try (g * a / (b * b)).scaled(-1)
            }
            return [try ga.map { try $0.sumTo(a.shape) }, try gb.map { try $0.sumTo(b.shape) }]
        }
    }

    public static func + (a: Tensor, b: Tensor) throws -> Tensor { try binary(.add, a, b) }
    public static func - (a: Tensor, b: Tensor) throws -> Tensor { try binary(.sub, a, b) }
    public static func * (a: Tensor, b: Tensor) throws -> Tensor { try binary(.mul, a, b) }
    public static func / (a: Tensor, b: Tensor) throws -> Tensor { try binary(.div, a, b) }

    /// The sum of coefficient x tensor over `terms` (all of one shape): one pass per four
    /// terms (`Op.Combine`) where separate scale and add ops would take 2k - 1. Classifier-free
    /// guidance and the schedulers' updates are such combinations.
    public static func linearCombination(_ terms: [(Float, Tensor)]) throws -> Tensor {
        guard let (_, first) = terms.first else { throw NoiseError.shapeMismatch("linear combination of no terms") }
        for (c, t) in terms {
            try first.sameDevice(t, "linearCombination")
            try requireShape(t.shape == first.shape, "linear combination of \(first.shape) and \(t.shape)")
            try require(c.isFinite, "linear combination coefficient \(c) is not finite")
        }
        let dev = first.device, n = first.count
        let out = try Tensor.empty(first.shape, on: dev)
        // The first pass takes up to four terms; each later one adds up to three onto out.
        var next = 0
        while next < terms.count {
            let lead: [(Float, BufRef)] = next == 0 ? [] : [(Float(1), out.ref)]
            let take = min(Op.Combine.maxTerms - lead.count, terms.count - next)
            let part: [(Float, BufRef)] = lead + terms[next..<(next + take)].map { (c, t) in (c, t.ref) }
            try dev.run(Op.Combine(count: n, coefficients: part.map(\.0), inputs: part.map(\.1), out: out.ref))
            next += take
        }
        return record(out, terms.map(\.1), "linearCombination") { g in
            try terms.map { c, _ in try g.scaled(c) }
        }
    }

    /// Sums a broadcast gradient back down to `target` shape.
    func sumTo(_ target: [Int]) throws -> Tensor {
        if shape == target { return self }
        let axes = Shape.broadcastAxes(target, to: shape)
        return try sum(axes: axes, keepDims: true).reshaped(target)
    }

    /// y = f(x) for a unary op.
    func unary(_ op: UnaryOp, _ p0: Float = 0, _ p1: Float = 0) throws -> Tensor {
        let out = try Tensor.empty(shape, on: device)
        let n = count
        try device.run(Op.Unary(op, count: n, x: ref, y: out.ref, p0: p0, p1: p1))
        return record(out, [self], "\(op)") { g in
            let dx = try Tensor.empty(self.shape, on: self.device)
            try self.device.run(Op.UnaryBackward(op, count: n, x: self.ref, dy: g.ref, dx: dx.ref, p0: p0, p1: p1))
            return [dx]
        }
    }

    public func exp() throws -> Tensor { try unary(.exp) }
    public func log() throws -> Tensor { try unary(.log) }
    public func sqrt() throws -> Tensor { try unary(.sqrt) }
    public func square() throws -> Tensor { try unary(.square) }
    public func silu() throws -> Tensor { try unary(.silu) }
    /// Exact (erf) GELU, PyTorch's default.
    public func gelu() throws -> Tensor { try unary(.gelu) }
    public func relu() throws -> Tensor { try unary(.relu) }
    public func sigmoid() throws -> Tensor { try unary(.sigmoid) }
    public func tanh() throws -> Tensor { try unary(.tanh) }
    public func clamp(_ lo: Float, _ hi: Float) throws -> Tensor { try unary(.clamp, lo, hi) }
    /// s * x
    public func scaled(_ s: Float) throws -> Tensor { try unary(.affine, s, 0) }
    /// s * x + t
    public func affine(_ s: Float, _ t: Float) throws -> Tensor { try unary(.affine, s, t) }

    public static func * (a: Tensor, s: Float) throws -> Tensor { try a.scaled(s) }
    public static func + (a: Tensor, s: Float) throws -> Tensor { try a.affine(1, s) }
    public static func - (a: Tensor, s: Float) throws -> Tensor { try a.affine(1, -s) }
}
