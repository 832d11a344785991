/// Multi-head scaled dot-product attention.
extension Tensor {
    /// softmax(scale * q k^T + bias + causal mask) v per (batch, head).
    ///
    /// - q: [B, H, Tq, D] (or [B, Tq, H, D] with `layout: .bthd`); k: [B, H, Tk, D];
    ///   v: [B, H, Tk, Dv]; the output has q's layout with Dv features.
    /// - bias: optional additive [Bb, Hb, Tq, Tk] with B divisible by Bb (batch b reads bias
    ///   b % Bb) and Hb 1 or H: a relative-position bias, or Swin's per-window mask.
    /// - causal: query i sees keys j <= i + (Tk - Tq) (bottom-right aligned, so a cached
    ///   decoding step with Tq = 1 sees every key).
    /// The forward pass is one fused OpenCL kernel with an online softmax; the backward pass
    /// recomputes the probabilities with GEMM and softmax kernels.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor? = nil,
                                 causal: Bool = false, scale: Float? = nil,
                                 layout: AttentionLayout = .bhtd) throws -> Tensor {
        try q.sameDevice(k, "attention")
        try q.sameDevice(v, "attention")
        try requireShape(q.rank == 4 && k.rank == 4 && v.rank == 4,
                         "attention expects rank-4 q, k, v; got \(q.shape), \(k.shape), \(v.shape)")
        let tAxis = layout == .bhtd ? 2 : 1, hAxis = layout == .bhtd ? 1 : 2
        let b = q.shape[0], h = q.shape[hAxis], tq = q.shape[tAxis], dim = q.shape[3]
        let tk = k.shape[tAxis], dv = v.shape[3]
        try requireShape(k.shape == layout.shape(batch: b, heads: h, tokens: tk, dim: dim),
                         "attention key shape \(k.shape) does not fit query \(q.shape)")
        try requireShape(v.shape == layout.shape(batch: b, heads: h, tokens: tk, dim: dv),
                         "attention value shape \(v.shape) does not fit key \(k.shape)")
        var d = AttentionDesc(batch: b, heads: h, tq: tq, tk: tk, headDim: dim, valueDim: dv,
                              scale: scale, causal: causal)
        d.qStrides = layout.strides(heads: h, tokens: tq, dim: dim)
        d.kStrides = layout.strides(heads: h, tokens: tk, dim: dim)
        d.vStrides = layout.strides(heads: h, tokens: tk, dim: dv)
        d.oStrides = layout.strides(heads: h, tokens: tq, dim: dv)
        try attach(bias, to: &d, of: q)
        let out = try Tensor.empty(layout.shape(batch: b, heads: h, tokens: tq, dim: dv), on: q.device)
        try attentionForward(d, q, k, v, bias, into: out)
        let inputs = [q, k, v] + (bias.map { [$0] } ?? [])
        return record(out, inputs, "attention") { g in
            let p = try attentionProbs(d, q, k, bias)
            // dV = P^T dO ; dP = dO V^T ; dS = softmax'(P, dP) ; dQ = s dS K ; dK = s dS^T Q
            let dv_ = try Tensor.empty(v.shape, on: v.device)
            try attentionGemm(d, p, true, g, d.oStrides, false, into: dv_, d.vStrides, m: tk, n: dv, kdim: tq, scale: 1)
            let dp = try Tensor.empty([b, h, tq, tk], on: q.device)
            try attentionGemm(d, g, false, v, d.vStrides, true, into: dp, [h * tq * tk, tq * tk, tk],
                              m: tq, n: tk, kdim: dv, scale: 1, aStrides: d.oStrides)
            let ds = try Tensor.empty([b, h, tq, tk], on: q.device)
            try q.device.run(Op.SoftmaxBackward(rows: b * h * tq, cols: tk, log: false, y: p.ref, dy: dp.ref, dx: ds.ref))
            let dq = try Tensor.empty(q.shape, on: q.device)
            try attentionGemm(d, ds, false, k, d.kStrides, false, into: dq, d.qStrides, m: tq, n: dim, kdim: tk, scale: d.scale)
            let dk = try Tensor.empty(k.shape, on: k.device)
            try attentionGemm(d, ds, true, q, d.qStrides, false, into: dk, d.kStrides, m: tk, n: dim, kdim: tq, scale: d.scale)
            var grads: [Tensor?] = [dq, dk, dv_]
            if let bias {
                let bb = bias.shape[0], bh = bias.shape[1]
                var db = try ds.reshaped([b / bb, bb, h, tq, tk]).sum(axes: [0])
                if bh == 1 { db = try db.sum(axes: [1], keepDims: true) }
                grads.append(try db.reshaped(bias.shape))
            }
            return grads
        }
    }

    /// Self-attention over a packed projection qkv [B, T, 3 * heads * D] (q, k and v side by
    /// side, each heads x D: timm's and PyTorch's fused qkv layout), `bias` as in
    /// `attention(q:k:v:bias:)`. Returns [B, T, heads * D]. Without a tape the heads are read in
    /// place; recorded, q, k and v are split off and the recorded attention runs.
    public static func attention(packed qkv: Tensor, heads: Int, bias: Tensor? = nil) throws -> Tensor {
        try requireShape(qkv.rank == 3 && heads > 0 && qkv.shape[2] % (3 * heads) == 0,
                         "packed attention of \(qkv.shape) with \(heads) heads (the last axis must be 3 x heads x D)")
        let b = qkv.shape[0], t = qkv.shape[1], width = qkv.shape[2] / 3, dim = width / heads
        guard isRecorded(on: qkv.device, [qkv, bias]) else {
            return try attention(q: qkv, qColumn: 0, k: qkv, kColumn: width, v: qkv, vColumn: 2 * width,
                                 heads: heads, dim: dim, bias: bias)
        }
        let split = try qkv.reshaped([b, t, 3, heads, dim])
        func part(_ i: Int) throws -> Tensor { try split.slice(axis: 2, i, i + 1).reshaped([b, t, heads, dim]) }
        return try attention(q: part(0), k: part(1), v: part(2), bias: bias, layout: .bthd).reshaped([b, t, width])
    }

    /// Checks an additive bias [Bb, 1|heads, Tq, Tk] (the batch a multiple of Bb) against `d` and
    /// records its broadcast there (nothing without a bias); it must be on q's device.
    static func attach(_ bias: Tensor?, to d: inout AttentionDesc, of q: Tensor) throws {
        guard let bias else { return }
        try requireShape(bias.rank == 4 && bias.shape[2] == d.tq && bias.shape[3] == d.tk && bias.shape[0] > 0
                            && d.batch % bias.shape[0] == 0 && (bias.shape[1] == 1 || bias.shape[1] == d.heads),
                         "attention bias \(bias.shape) does not fit [B|Bb, 1|\(d.heads), \(d.tq), \(d.tk)]")
        try q.sameDevice(bias, "attention")
        d.biasBatch = bias.shape[0]
        d.biasHeads = bias.shape[1]
    }

    /// The forward pass for a descriptor whose strides address q, k, v and out (unrecorded).
    /// The fused kernel where the backend takes this call (each backend states its limits,
    /// e.g. OpenCL's head dims up to 256), else the GEMM + softmax + GEMM form on the same device.
    static func attentionForward(_ d: AttentionDesc, _ q: Tensor, _ k: Tensor, _ v: Tensor, _ bias: Tensor?,
                                 into out: Tensor) throws {
        let fused = Op.Attention(d, q: q.ref, k: k.ref, v: v.ref, bias: bias?.ref, o: out.ref)
        if q.device.backend.supports(fused) {
            try q.device.run(fused)
        } else {
            let p = try attentionProbs(d, q, k, bias)
            try attentionGemm(d, p, false, v, d.vStrides, false, into: out, d.oStrides, m: d.tq, n: d.valueDim,
                              kdim: d.tk, scale: 1)
        }
    }

    /// Multi-head attention over heads read in place from column ranges of token rows
    /// (unrecorded): q is columns qColumn..<qColumn + heads*dim of `q` [B, Tq, Wq], k and v
    /// likewise of [B, Tk, Wk] and [B, Tk, Wv]. They may all be one packed projection (e.g.
    /// [B, T, 3D] holding q, k and v side by side), which then needs no split. `bias` as in
    /// `attention(q:k:v:bias:)`, [Bb, 1|heads, Tq, Tk]. Returns [B, Tq, heads*dim].
    package static func attention(q: Tensor, qColumn: Int, k: Tensor, kColumn: Int, v: Tensor, vColumn: Int,
                                  heads: Int, dim: Int, bias: Tensor? = nil) throws -> Tensor {
        try q.sameDevice(k, "attention")
        try q.sameDevice(v, "attention")
        let width = heads * dim
        try requireShape(q.rank == 3 && k.rank == 3 && v.rank == 3 && k.shape[0] == q.shape[0]
                            && v.shape[0] == q.shape[0] && v.shape[1] == k.shape[1] && heads > 0 && dim > 0
                            && qColumn >= 0 && qColumn + width <= q.shape[2] && kColumn >= 0
                            && kColumn + width <= k.shape[2] && vColumn >= 0 && vColumn + width <= v.shape[2],
                         "attention of columns \(qColumn), \(kColumn), \(vColumn) (\(heads) heads of \(dim)) of \(q.shape), \(k.shape), \(v.shape)")
        let b = q.shape[0], tq = q.shape[1], tk = k.shape[1]
        var d = AttentionDesc(batch: b, heads: heads, tq: tq, tk: tk, headDim: dim)
        d.qStrides = [tq * q.shape[2], dim, q.shape[2]]
        d.kStrides = [tk * k.shape[2], dim, k.shape[2]]
        d.vStrides = [tk * v.shape[2], dim, v.shape[2]]
        d.oStrides = [tq * width, dim, width]
        try attach(bias, to: &d, of: q)
        // Views at the columns (only their references are read, through the strides above).
        func at(_ t: Tensor, _ column: Int) -> Tensor {
            Tensor(shape: t.shape, device: t.device, buffer: t.buffer, offset: t.offset + column)
        }
        let out = try Tensor.empty([b, tq, width], on: q.device)
        try attentionForward(d, at(q, qColumn), at(k, kColumn), at(v, vColumn), bias, into: out)
        return out
    }

    /// Attention of q [B, Tq, H, D] over the first `tokens` positions of key/value caches
    /// [B, capacity, H, D] (a decoding step reads its prefix in place; unrecorded, no causal mask
    /// inside the prefix). Returns [B, Tq, H, D].
    package static func cachedAttention(q: Tensor, keys: Tensor, values: Tensor, tokens: Int) throws -> Tensor {
        let b = q.shape[0], tq = q.shape[1], h = q.shape[2], dim = q.shape[3], cap = keys.shape[1]
        try requireShape(keys.shape == [b, cap, h, dim] && values.shape == keys.shape && tokens <= cap && tokens > 0,
                         "cached attention: q \(q.shape), caches \(keys.shape), \(tokens) tokens")
        var d = AttentionDesc(batch: b, heads: h, tq: tq, tk: tokens, headDim: dim, valueDim: dim,
                              scale: nil, causal: false)
        d.qStrides = AttentionLayout.bthd.strides(heads: h, tokens: tq, dim: dim)
        d.oStrides = d.qStrides
        d.kStrides = AttentionLayout.bthd.strides(heads: h, tokens: cap, dim: dim)
        d.vStrides = d.kStrides
        let out = try Tensor.empty(q.shape, on: q.device)
        try attentionForward(d, q, keys, values, nil, into: out)
        return out
    }

    /// P = softmax(scale q k^T + bias + causal) as a contiguous [B, H, Tq, Tk] tensor.
    package static func attentionProbs(_ d: AttentionDesc, _ q: Tensor, _ k: Tensor, _ bias: Tensor?) throws -> Tensor {
        let dev = q.device
        var s = try Tensor.empty([d.batch, d.heads, d.tq, d.tk], on: dev)
        try attentionGemm(d, q, false, k, d.kStrides, true, into: s, [d.heads * d.tq * d.tk, d.tq * d.tk, d.tk],
                          m: d.tq, n: d.tk, kdim: d.headDim, scale: d.scale, aStrides: d.qStrides)
        try dev.noGrad {
            if let bias {
                let bb = bias.shape[0]
                s = try (s.reshaped([d.batch / bb, bb, d.heads, d.tq, d.tk]) + bias.reshaped([1] + bias.shape))
                    .reshaped([d.batch, d.heads, d.tq, d.tk])
            }
            if d.causal {
                var mask = [Float](repeating: 0, count: d.tq * d.tk)
                for i in 0..<d.tq {
                    for j in 0..<d.tk where j > i + d.tk - d.tq { mask[i * d.tk + j] = -Float.infinity }
                }
                s = try s + Tensor(mask, shape: [d.tq, d.tk], on: dev)
            }
        }
        let p = try Tensor.empty(s.shape, on: dev)
        try dev.run(Op.Softmax(rows: d.batch * d.heads * d.tq, cols: d.tk, log: false, x: s.ref, y: p.ref))
        return p
    }

    /// out[b,h] = scale * op(A[b,h]) op(B[b,h]) with (batch, head, row) strides for each side;
    /// A defaults to a contiguous [B, H, rows, cols] tensor.
    package static func attentionGemm(_ d: AttentionDesc, _ a: Tensor, _ transA: Bool, _ bT: Tensor, _ bStrides: [Int],
                              _ transB: Bool, into out: Tensor, _ oStrides: [Int], m: Int, n: Int,
                              kdim: Int, scale: Float, aStrides: [Int]? = nil) throws {
        let aRows = transA ? kdim : m, aCols = transA ? m : kdim
        let aS = aStrides ?? [d.heads * aRows * aCols, aRows * aCols, aCols]
        var g = GemmDesc(m: m, n: n, k: kdim, transA: transA, transB: transB, alpha: scale)
        g.lda = aS[2]; g.ldb = bStrides[2]; g.ldc = oStrides[2]
        g.batch0 = d.batch; g.batch1 = d.heads
        g.strideA0 = aS[0]; g.strideA1 = aS[1]
        g.strideB0 = bStrides[0]; g.strideB1 = bStrides[1]
        g.strideC0 = oStrides[0]; g.strideC1 = oStrides[1]
        try a.device.run(Op.Gemm(g, a: a.ref, b: bT.ref, c: out.ref))
    }
}
