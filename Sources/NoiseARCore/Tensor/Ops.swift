import Foundation

/// Layout of attention inputs: [batch, heads, tokens, dim] or [batch, tokens, heads, dim]
/// (the latter is what a Linear projection followed by a reshape produces).
public enum AttentionLayout: Sendable {
    case bhtd, bthd
    func strides(heads: Int, tokens: Int, dim: Int) -> [Int] {
        switch self {
        case .bhtd: return [heads * tokens * dim, tokens * dim, dim]
        case .bthd: return [tokens * heads * dim, dim, heads * dim]
        }
    }
    func shape(batch: Int, heads: Int, tokens: Int, dim: Int) -> [Int] {
        switch self {
        case .bhtd: return [batch, heads, tokens, dim]
        case .bthd: return [batch, tokens, heads, dim]
        }
    }
}

// MARK: - shape ops

extension Tensor {
    /// A strided copy of `src` read through `strides` (offset `srcOffset`) into a new
    /// contiguous tensor of `shape`.
    func gatherStrided(shape outShape: [Int], strides: [Int], srcOffset: Int) throws -> Tensor {
        let out = try Tensor.empty(outShape, on: device)
        try device.run(Op.Copy(shape: outShape, src: Strided(BufRef(buffer, offset + srcOffset), strides: strides),
                               dst: Strided(out.ref, strides: Shape.strides(outShape))))
        return out
    }

    /// Writes `src` (contiguous) into `dst` through `strides` at `dstOffset` (raw, unrecorded).
    package static func scatterStrided(_ src: Tensor, into dst: Tensor, strides: [Int], dstOffset: Int) throws {
        try dst.device.run(Op.Copy(shape: src.shape, src: Strided(src.ref, strides: Shape.strides(src.shape)),
                                   dst: Strided(BufRef(dst.buffer, dst.offset + dstOffset), strides: strides)))
    }

    /// Axes reordered: out.shape[i] = shape[perm[i]].
    public func permuted(_ perm: [Int]) throws -> Tensor {
        try require(perm.sorted() == Array(0..<rank), "permutation \(perm) for rank \(rank)")
        let st = Shape.strides(shape)
        let out = try gatherStrided(shape: perm.map { shape[$0] }, strides: perm.map { st[$0] }, srcOffset: 0)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, p) in perm.enumerated() { inverse[p] = i }
        return record(out, [self], "permute") { g in [try g.permuted(inverse)] }
    }

    /// Two axes swapped.
    public func transposed(_ a: Int, _ b: Int) throws -> Tensor {
        let a = try Shape.axis(a, rank: rank), b = try Shape.axis(b, rank: rank)
        var perm = Array(0..<rank)
        perm.swapAt(a, b)
        return try permuted(perm)
    }

    /// The range `start..<end` along `axis`.
    public func slice(axis: Int, _ start: Int, _ end: Int) throws -> Tensor {
        let ax = try Shape.axis(axis, rank: rank)
        try require(start >= 0 && end <= shape[ax] && start < end,
                    "slice \(start)..<\(end) of axis \(ax) with size \(shape[ax])")
        var s = shape
        s[ax] = end - start
        let st = Shape.strides(shape)
        let out = try gatherStrided(shape: s, strides: st, srcOffset: start * st[ax])
        return record(out, [self], "slice") { g in
            let dx = try Tensor.zeros(self.shape, on: self.device)
            try Tensor.scatterStrided(g, into: dx, strides: st, dstOffset: start * st[ax])
            return [dx]
        }
    }

    /// Tensors joined along `axis` (all other dimensions equal).
    public static func concat(_ parts: [Tensor], axis: Int) throws -> Tensor {
        guard let first = parts.first else { throw NoiseError.invalidArgument("concat of no tensors") }
        let ax = try Shape.axis(axis, rank: first.rank)
        for p in parts {
            try first.sameDevice(p, "concat")
            var a = p.shape, b = first.shape
            try requireShape(a.count == b.count, "concat of \(p.shape) with \(first.shape)")
            a[ax] = 0; b[ax] = 0
            try requireShape(a == b, "concat of \(p.shape) with \(first.shape) along axis \(ax)")
        }
        var shape = first.shape
        shape[ax] = parts.map { $0.shape[ax] }.reduce(0, +)
        let out = try Tensor.empty(shape, on: first.device)
        let st = Shape.strides(shape)
        var pos = 0
        var starts: [Int] = []
        for p in parts {
            starts.append(pos)
            try scatterStrided(p, into: out, strides: st, dstOffset: pos * st[ax])
            pos += p.shape[ax]
        }
        return record(out, parts, "concat") { g in
            try zip(parts, starts).map { p, s in try g.slice(axis: ax, s, s + p.shape[ax]) }
        }
    }

    /// This tensor repeated along broadcast axes to `target` shape.
    public func expanded(to target: [Int]) throws -> Tensor {
        _ = try Shape.broadcast(shape, target)
        if shape == target { return self }
        let out = try gatherStrided(shape: target, strides: Shape.broadcastStrides(shape, to: target), srcOffset: 0)
        return record(out, [self], "expand") { g in [try g.sumTo(self.shape)] }
    }

    // MARK: reductions

    /// Sum over `axes` (all axes when nil).
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) throws -> Tensor {
        let ax = Set(try (axes ?? Array(0..<rank)).map { try Shape.axis($0, rank: rank) })
        var cur = self.detached()
        var curShape = shape
        // Reduce runs of adjacent axes from the last one backwards.
        var a = rank - 1
        while a >= 0 {
            guard ax.contains(a) else { a -= 1; continue }
            var lo = a
            while lo - 1 >= 0 && ax.contains(lo - 1) { lo -= 1 }
            let outer = Shape.count(Array(curShape[..<lo]))
            let red = Shape.count(Array(curShape[lo...a]))
            let inner = Shape.count(Array(curShape[(a + 1)...]))
            var next = curShape
            for i in lo...a { next[i] = 1 }
            let out = try Tensor.empty(next, on: device)
            let src = cur
            try device.run(Op.Reduce(outer: outer, reduce: red, inner: inner, x: src.ref, out: out.ref))
            cur = out
            curShape = next
            a = lo - 1
        }
        let finalShape = keepDims ? curShape : shape.enumerated().filter { !ax.contains($0.offset) }.map(\.element)
        let out = Tensor(shape: finalShape, device: device, buffer: cur.buffer, offset: cur.offset)
        return record(out, [self], "sum") { g in [try g.reshaped(curShape).expanded(to: self.shape)] }
    }

    /// Mean over `axes` (all axes when nil).
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) throws -> Tensor {
        let ax = try (axes ?? Array(0..<rank)).map { try Shape.axis($0, rank: rank) }
        let n = Set(ax).map { shape[$0] }.reduce(1, *)
        return try sum(axes: ax, keepDims: keepDims).scaled(1 / Float(n))
    }
}

// MARK: - linear algebra

extension Tensor {
    /// op(a) @ op(b) over the last two axes; leading axes must match, or `b` is a matrix
    /// applied to every row of `a`.
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false,
                              transposeB: Bool = false) throws -> Tensor {
        try a.sameDevice(b, "matmul")
        try requireShape(a.rank >= 2 && b.rank >= 2, "matmul of \(a.shape) and \(b.shape)")
        if b.rank == 2 && a.rank > 2 && !transposeA {
            let rows = a.count / a.shape[a.rank - 1]
            let flat = try matmul(a.reshaped([rows, a.shape[a.rank - 1]]), b,
                                  transposeB: transposeB)
            return try flat.reshaped(Array(a.shape.dropLast()) + [flat.shape[1]])
        }
        let lead = Array(a.shape.dropLast(2))
        try requireShape(lead == Array(b.shape.dropLast(2)),
                         "matmul batch axes differ: \(a.shape) and \(b.shape)")
        let (ar, ac) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (br, bc) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        let m = transposeA ? ac : ar, k = transposeA ? ar : ac
        let kb = transposeB ? bc : br, n = transposeB ? br : bc
        try requireShape(k == kb, "matmul inner sizes differ: \(a.shape)\(transposeA ? "^T" : "") @ \(b.shape)\(transposeB ? "^T" : "")")
        let batch = Shape.count(lead)
        let out = try Tensor.empty(lead + [m, n], on: a.device)
        let d = GemmDesc(m: m, n: n, k: k, transA: transposeA, transB: transposeB)
            .batched(batch, strideA: ar * ac, strideB: br * bc, strideC: m * n)
        try a.device.run(Op.Gemm(d, a: a.ref, b: b.ref, c: out.ref))
        return record(out, [a, b], "matmul") { g in
            let da = transposeA
                ? try matmul(b, g, transposeA: transposeB, transposeB: true)
                : try matmul(g, b, transposeB: !transposeB)
            let db = transposeB
                ? try matmul(g, a, transposeA: true, transposeB: transposeA)
                : try matmul(a, g, transposeA: !transposeA)
            return [da, db]
        }
    }

    /// activation(x @ weight^T + bias (+ residual)), with PyTorch's Linear layout: weight
    /// [out, in], bias [out]; `residual` has the output's shape (a transformer block's skip
    /// connection); `activation` a parameter-free unary op (a feed-forward layer's GELU).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, residual: Tensor? = nil,
                              activation: UnaryOp? = nil) throws -> Tensor {
        try checkEpilogueActivation(activation, "linear")
        // Not recorded: the bias, the residual and the activation are the GEMM's epilogue
        // (`Op.Gemm.bias`, beta 1 reading C from the residual, `GemmDesc.activation`), one to
        // three passes fewer than GEMM then adds and the activation.
        if bias != nil || residual != nil || activation != nil, x.rank >= 1, weight.rank == 2,
           x.shape[x.rank - 1] == weight.shape[1],
           bias.map({ $0.shape == [weight.shape[0]] }) ?? true,
           residual.map({ $0.shape == Array(x.shape.dropLast()) + [weight.shape[0]] }) ?? true,
           !isRecorded(on: x.device, [x, weight, bias, residual]) {
            try x.sameDevice(weight, "linear")
            for t in [bias, residual].compactMap({ $0 }) { try x.sameDevice(t, "linear") }
            let k = weight.shape[1], n = weight.shape[0], rows = x.count / max(k, 1)
            let out = try Tensor.empty(Array(x.shape.dropLast()) + [n], on: x.device)
            var d = GemmDesc(m: rows, n: n, k: k, transB: true, beta: residual == nil ? 0 : 1)
            d.activation = activation
            try x.device.run(Op.Gemm(d, a: x.ref, b: weight.ref, c: out.ref, bias: bias?.ref, cIn: residual?.ref))
            return out
        }
        let y = try matmul(x, weight, transposeB: true)
        let biased = try bias.map { try y + $0 } ?? y
        let summed = try residual.map { try biased + $0 } ?? biased
        return try activation.map { try summed.unary($0) } ?? summed
    }

    /// GEGLU (diffusers' feed-forward): with weight [2*inner, in] = [W_h; W_g] and bias [2*inner],
    /// (x W_h^T + b_h) * gelu(x W_g^T + b_g), [..., inner].
    public static func geglu(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        try requireShape(x.rank >= 1 && weight.rank == 2 && weight.shape[0] % 2 == 0
                         && x.shape[x.rank - 1] == weight.shape[1],
                         "geglu of \(x.shape) with weight \(weight.shape)")
        if let bias { try requireShape(bias.shape == [weight.shape[0]], "geglu bias \(bias.shape) for weight \(weight.shape)") }
        let inner = weight.shape[0] / 2, k = weight.shape[1], rows = x.count / max(k, 1)
        guard !isRecorded(on: x.device, [x, weight, bias]) else {
            let proj = try linear(x, weight: weight, bias: bias)
            let last = proj.rank - 1
            return try proj.slice(axis: last, 0, inner) * proj.slice(axis: last, inner, 2 * inner).gelu()
        }
        try x.sameDevice(weight, "geglu")
        if let bias { try x.sameDevice(bias, "geglu") }
        // Both halves as one GEMM batched over [W_h; W_g] into [2, rows, inner] (each half's
        // bias as the epilogue), the gate's GELU in place, then the product: no strided copies
        // of the halves.
        let dev = x.device
        let halves = try Tensor.empty([2, rows, inner], on: dev)
        var d = GemmDesc(m: rows, n: inner, k: k, transB: true)
            .batched(2, strideA: 0, strideB: inner * k, strideC: rows * inner)
        d.biasStride0 = inner
        try dev.run(Op.Gemm(d, a: x.ref, b: weight.ref, c: halves.ref, bias: bias?.ref))
        let gate = BufRef(halves.buffer, halves.offset + rows * inner)
        try dev.run(Op.Unary(.gelu, count: rows * inner, x: gate, y: gate))
        let out = try Tensor.empty(Array(x.shape.dropLast()) + [inner], on: dev)
        try dev.run(Op.Binary(.mul, shape: [rows * inner], a: Strided(halves.ref, strides: [1]),
                              b: Strided(gate, strides: [1]), out: out.ref))
        return out
    }
}

// MARK: - softmax and normalisation

extension Tensor {
    /// Softmax over the last axis, of x + mask when a (broadcastable) additive mask is given.
    public func softmax(mask: Tensor? = nil) throws -> Tensor {
        try softmaxImpl(log: false, mask: mask)
    }

    /// Log-softmax over the last axis.
    public func logSoftmax(mask: Tensor? = nil) throws -> Tensor {
        try softmaxImpl(log: true, mask: mask)
    }

    func softmaxImpl(log: Bool, mask: Tensor?) throws -> Tensor {
        let x = try mask.map { try self + $0 } ?? self
        let cols = x.shape[x.rank - 1], rows = x.count / cols
        let y = try Tensor.empty(x.shape, on: device)
        try device.run(Op.Softmax(rows: rows, cols: cols, log: log, x: x.ref, y: y.ref))
        return record(y, [x], log ? "logSoftmax" : "softmax") { g in
            let dx = try Tensor.empty(x.shape, on: x.device)
            try x.device.run(Op.SoftmaxBackward(rows: rows, cols: cols, log: log, y: y.ref, dy: g.ref, dx: dx.ref))
            return [dx]
        }
    }

    /// Layer norm over the last axis with optional affine gamma/beta [D].
    public func layerNorm(gamma: Tensor?, beta: Tensor?, eps: Float = 1e-5) throws -> Tensor {
        let cols = shape[rank - 1], rows = count / cols
        for p in [gamma, beta].compactMap({ $0 }) {
            try requireShape(p.shape == [cols], "layer norm parameter \(p.shape) for features \(cols)")
        }
        let y = try Tensor.empty(shape, on: device)
        let mean = try Tensor.empty([rows], on: device), rstd = try Tensor.empty([rows], on: device)
        try device.run(Op.LayerNorm(rows: rows, cols: cols, eps: eps, x: ref, gamma: gamma?.ref, beta: beta?.ref,
                                    y: y.ref, mean: mean.ref, rstd: rstd.ref))
        let inputs = [self] + [gamma, beta].compactMap { $0 }
        return record(y, inputs, "layerNorm") { gy in
            let dx = try Tensor.empty(self.shape, on: self.device)
            let dg = try gamma.map { _ in try Tensor.empty([cols], on: self.device) }
            let db = try beta.map { _ in try Tensor.empty([cols], on: self.device) }
            try self.device.run(Op.LayerNormBackward(rows: rows, cols: cols, x: self.ref, gamma: gamma?.ref,
                                                     mean: mean.ref, rstd: rstd.ref, dy: gy.ref, dx: dx.ref,
                                                     dgamma: dg?.ref, dbeta: db?.ref))
            return [dx] + [dg, db].compactMap { $0 }
        }
    }

    /// Group norm, then SiLU (a ResNet block's norm and activation): one op without a tape
    /// (fused on the CPU backend), the two recorded ops with one.
    public func groupNormSiLU(groups: Int, gamma: Tensor?, beta: Tensor?, eps: Float = 1e-5) throws -> Tensor {
        if Tensor.isRecorded(on: device, [self, gamma, beta]) {
            return try groupNorm(groups: groups, gamma: gamma, beta: beta, eps: eps).silu()
        }
        return try groupNorm(groups: groups, gamma: gamma, beta: beta, eps: eps, activation: .silu)
    }

    /// Group norm of [N, C, ...] over groups of C/groups channels and all spatial positions,
    /// with optional per-channel affine gamma/beta [C].
    public func groupNorm(groups: Int, gamma: Tensor?, beta: Tensor?, eps: Float = 1e-5) throws -> Tensor {
        try groupNorm(groups: groups, gamma: gamma, beta: beta, eps: eps, activation: nil)
    }

    func groupNorm(groups: Int, gamma: Tensor?, beta: Tensor?, eps: Float, activation: UnaryOp?) throws -> Tensor {
        try requireShape(rank >= 2, "group norm of \(shape): expected [N, C, ...]")
        let n = shape[0], c = shape[1], spatial = count / (n * c)
        try require(groups > 0 && c % groups == 0, "\(c) channels do not split into \(groups) groups")
        try require((gamma == nil) == (beta == nil), "group norm takes gamma and beta together")
        for p in [gamma, beta].compactMap({ $0 }) {
            try requireShape(p.shape == [c], "group norm parameter \(p.shape) for \(c) channels")
        }
        let y = try Tensor.empty(shape, on: device)
        let mean = try Tensor.empty([n * groups], on: device), rstd = try Tensor.empty([n * groups], on: device)
        try device.run(Op.GroupNorm(n: n, channels: c, spatial: spatial, groups: groups, eps: eps, x: ref,
                                    gamma: gamma?.ref, beta: beta?.ref, y: y.ref, mean: mean.ref, rstd: rstd.ref,
                                    activation: activation))
        if activation != nil { return y }  // (never recorded: groupNormSiLU records the two ops)
        let inputs = [self] + [gamma, beta].compactMap { $0 }
        return record(y, inputs, "groupNorm") { gy in
            let dx = try Tensor.empty(self.shape, on: self.device)
            let affine = gamma != nil
            let dg = affine ? try Tensor.empty([c], on: self.device) : nil
            let db = affine ? try Tensor.empty([c], on: self.device) : nil
            try self.device.run(Op.GroupNormBackward(n: n, channels: c, spatial: spatial, groups: groups,
                                                     x: self.ref, gamma: gamma?.ref, mean: mean.ref,
                                                     rstd: rstd.ref, dy: gy.ref, dx: dx.ref, dgamma: dg?.ref,
                                                     dbeta: db?.ref))
            return [dx] + [dg, db].compactMap { $0 }
        }
    }
}
