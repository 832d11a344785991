/// Where a shifted-tap convolution put its padded input (kept for the weight gradient).
struct ShiftedTapsLayout {
    /// xp [C, rowLen]: the images' rows rowStride apart, the images plane apart.
    let xp: Tensor
    let rowStride: Int, plane: Int, cols: Int, rowLen: Int
}

/// Convolution, resize and embedding lookup.
extension Tensor {
    /// 2-D convolution of x [N, C, H, W] with weight [Cout, C, kh, kw] and bias [Cout]
    /// (groups = 1). On the CPU backend stride-1 "same" convolutions go as shifted kernel taps
    /// (recorded or not). Other convolutions without a tape are one `Op.Conv2d` where the
    /// backend takes the call: on OpenCL and Vulkan a direct convolution (an implicit GEMM with
    /// the bias fused), on the CPU backend im2col in chunks of about 8 MiB and a GEMM onto the
    /// bias. Recorded convolutions (the backward pass needs the whole im2col matrix) and calls a
    /// kernel backend declines take im2col + GEMM for the whole batch. `activation` (a
    /// parameter-free unary op) is applied last: the convolution's epilogue in `Op.Conv2d`,
    /// else a pass of its own.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1,
                              padding: Int = 0, activation: UnaryOp? = nil) throws -> Tensor {
        try checkEpilogueActivation(activation, "conv2d")
        let (y, activated) = try conv2dBiased(x, weight: weight, bias: bias, stride: stride, padding: padding,
                                              activation: activation)
        guard let activation, !activated else { return y }
        return try y.unary(activation)
    }

    /// The convolution plus bias; with `activation` too when the returned flag says so (one
    /// `Op.Conv2d` with the activation as its epilogue).
    static func conv2dBiased(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int,
                             activation: UnaryOp?) throws -> (Tensor, activated: Bool) {
        try x.sameDevice(weight, "conv2d")
        try requireShape(x.rank == 4 && weight.rank == 4 && weight.shape[1] == x.shape[1],
                         "conv2d of input \(x.shape) with weight \(weight.shape)")
        try require(stride >= 1 && padding >= 0, "conv2d stride \(stride), padding \(padding)")
        let n = x.shape[0], cout = weight.shape[0]
        let g = ConvGeometry(channels: x.shape[1], height: x.shape[2], width: x.shape[3],
                             kernelH: weight.shape[2], kernelW: weight.shape[3], stride: stride,
                             padding: padding)
        try requireShape(g.outH > 0 && g.outW > 0, "conv2d kernel \(weight.shape) larger than padded input \(x.shape)")
        let hw = g.colCols, cols = n * hw
        if let bias { try requireShape(bias.shape == [cout], "conv2d bias \(bias.shape) for \(cout) channels") }
        let inputs = [x, weight] + (bias.map { [$0] } ?? [])
        let recording = isRecorded(on: x.device, inputs)
        if x.device.isCPU && stride == 1 && g.kernelH * g.kernelW > 1
            && g.kernelH == 2 * padding + 1 && g.kernelW == 2 * padding + 1 {
            let (out, layout) = try conv2dShiftedTaps(x, weight: weight, bias: bias, g)
            guard recording else { return (out, false) }
            return (record(out, inputs, "conv2d") { gy in
                try conv2dShiftedTapsBackward(gy, x: x, weight: weight, bias: bias, g, layout)
            }, false)
        }
        let out = try Tensor.empty([n, cout, g.outH, g.outW], on: x.device)
        if !recording {
            let op = Op.Conv2d(g, batch: n, outChannels: cout, x: x.ref, weight: weight.ref, bias: bias?.ref,
                               activation: activation, out: out.ref)
            if x.device.backend.supports(op) {
                try x.device.run(op)
                return (out, true)
            }
        }
        // The whole batch's im2col matrix (the backward pass reads it), yT [Cout, N*HW] =
        // W [Cout, CKK] col [CKK, N*HW], then [Cout, N, HW] -> [N, Cout, HW] with the bias added
        // in the same pass; a single image without a bias needs neither.
        let col = try Tensor.empty([g.colRows, cols], on: x.device)
        try x.device.run(Op.Im2col(g, batch: n, x: x.ref, col: col.ref))
        let d = GemmDesc(m: cout, n: cols, k: g.colRows)
        if n == 1 && bias == nil {
            try x.device.run(Op.Gemm(d, a: weight.ref, b: col.ref, c: out.ref))
        } else {
            let yT = try Tensor.empty([cout, n, hw], on: x.device)
            try x.device.run(Op.Gemm(d, a: weight.ref, b: col.ref, c: yT.ref))
            let src = Strided(yT.ref, strides: [hw, cols, 1])
            if let bias {
                try x.device.run(Op.Binary(.add, shape: [n, cout, hw], a: src,
                                           b: Strided(bias.ref, strides: [0, 1, 0]), out: out.ref))
            } else {
                try x.device.run(Op.Copy(shape: [n, cout, hw], src: src,
                                         dst: Strided(out.ref, strides: Shape.strides([n, cout, hw]))))
            }
        }
        return (record(out, inputs, "conv2d") { gy in
            // gyT [Cout, N*HW]; dW = gyT col^T; dcol = W^T gyT; dx = col2im(dcol); db = sum gy
            let gyT = try gy.reshaped([n, cout, hw]).permuted([1, 0, 2])
            let dw = try Tensor.empty(weight.shape, on: x.device)
            let dwd = GemmDesc(m: cout, n: g.colRows, k: cols, transB: true)
            try x.device.run(Op.Gemm(dwd, a: gyT.ref, b: col.ref, c: dw.ref))
            let dcol = try Tensor.empty(col.shape, on: x.device)
            let dcd = GemmDesc(m: g.colRows, n: cols, k: cout, transA: true)
            try x.device.run(Op.Gemm(dcd, a: weight.ref, b: gyT.ref, c: dcol.ref))
            let dx = try Tensor.empty(x.shape, on: x.device)
            try x.device.run(Op.Col2im(g, batch: n, col: dcol.ref, dx: dx.ref))
            var grads: [Tensor?] = [dx, dw]
            if bias != nil { grads.append(try gyT.sum(axes: [1, 2])) }
            return grads
        }, false)
    }

    /// A stride-1 "same" convolution (kernel 2p+1, padding p) without an im2col matrix (CPU
    /// inference). The batch is copied once into zero-padded channel rows xp [C, L] where the
    /// rows of the images follow each other R = W + p apart and the images S = (H + p) * R apart
    /// (the p zeros after a row are the left padding of the next; the p zero rows after an image
    /// the top padding of the next). Output pixel (b, y, x) is column b*S + y*R + x of
    /// yp [Cout, N], and kernel tap (ky, kx) reads xp shifted by ky*R + kx, so
    /// yp = sum over taps of W[:, :, ky, kx] [Cout, C] times a shifted view of xp: one batch-reduce
    /// GEMM. The columns of the padding are computed and dropped when yp is copied to NCHW with
    /// the bias added. The input is copied once instead of kh*kw times.
    static func conv2dShiftedTaps(_ x: Tensor, weight: Tensor, bias: Tensor?,
                                  _ g: ConvGeometry) throws -> (Tensor, ShiftedTapsLayout) {
        let n = x.shape[0], c = g.channels, cout = weight.shape[0]
        let kh = g.kernelH, kw = g.kernelW, taps = kh * kw, ph = g.padH, pw = g.padW
        let rowStride = g.width + pw, plane = (g.height + ph) * rowStride
        let (images, o1) = n.multipliedReportingOverflow(by: plane)
        let cols = images - ph * rowStride  // (the last image's bottom padding is not needed)
        let (rowLen, o2) = images.addingReportingOverflow(2 * ph * rowStride + 2 * pw)
        let (padded, o3) = rowLen.multipliedReportingOverflow(by: c)
        try require(!o1 && !o2 && !o3, "conv2d of \(x.shape): padded input too large")
        let dev = x.device
        // xp [C, rowLen]: x [N, C, H, W] at its pixels, zeros everywhere else (written as such,
        // not filled first: the lead, the gap after each row, the rows below each image, the tail).
        let xp = try Tensor.empty([padded], on: dev)
        let base = ph * rowStride + pw
        func at(_ offset: Int) -> BufRef { BufRef(xp.buffer, xp.offset + offset) }
        try dev.run(Op.Copy(shape: [n, c, g.height, g.width], src: Strided(x.ref, strides: Shape.strides(x.shape)),
                            dst: Strided(at(base), strides: [plane, rowLen, rowStride, 1])))
        let zero = try Tensor.zeros([1], on: dev)
        for (shape, offset, strides) in [([c, base], 0, [rowLen, 1]),
                                         ([c, n, g.height, pw], base + g.width, [rowLen, plane, rowStride, 1]),
                                         ([c, n, ph * rowStride], base + g.height * rowStride, [rowLen, plane, 1]),
                                         ([c, rowLen - base - images], base + images, [rowLen, 1])] {
            try dev.run(Op.Copy(shape: shape, src: Strided(zero.ref, strides: shape.map { _ in 0 }),
                                dst: Strided(at(offset), strides: strides)))
        }
        // wt [kh, kw, Cout, C] from weight [Cout, C, kh, kw].
        let wt = try Tensor.empty([taps, cout, c], on: dev)
        try dev.run(Op.Copy(shape: [taps, cout, c], src: Strided(weight.ref, strides: [1, c * taps, taps]),
                            dst: Strided(wt.ref, strides: [cout * c, c, 1])))
        // yp [Cout, cols] = sum over (ky, kx) of wt[ky, kx] xp[:, ky*R + kx ..< ky*R + kx + cols].
        let yp = try Tensor.empty([cout, cols], on: dev)
        var d = GemmDesc(m: cout, n: cols, k: c)
        d.ldb = rowLen
        d.batch0 = kh; d.strideA0 = kw * cout * c; d.strideB0 = rowStride
        d.batch1 = kw; d.strideA1 = cout * c; d.strideB1 = 1
        d.reduceBatch = true
        try dev.run(Op.Gemm(d, a: wt.ref, b: xp.ref, c: yp.ref))
        // yp's pixel columns -> out [N, Cout, H, W] (+ bias).
        let shape = [n, cout, g.outH, g.outW]
        let out = try Tensor.empty(shape, on: dev)
        let src = Strided(yp.ref, strides: [plane, cols, rowStride, 1])
        if let bias {
            try dev.run(Op.Binary(.add, shape: shape, a: src, b: Strided(bias.ref, strides: [0, 1, 0, 0]), out: out.ref))
        } else {
            try dev.run(Op.Copy(shape: shape, src: src, dst: Strided(out.ref, strides: Shape.strides(shape))))
        }
        return (out, ShiftedTapsLayout(xp: xp, rowStride: rowStride, plane: plane, cols: cols, rowLen: rowLen))
    }

    /// The gradients of a shifted-tap convolution (x, weight, bias order) for gy [N, Cout, H, W]:
    ///     dx = the same convolution of gy with the kernel flipped and its channels swapped
    ///     dW[:, :, ky, kx] = gyp [Cout, cols] xp[:, ky*R + kx ...]^T   (gy on the padded grid,
    ///                        zero in the padding columns; one GEMM per tap, K = the pixels)
    ///     db = the sum of gy over images and pixels
    static func conv2dShiftedTapsBackward(_ gy: Tensor, x: Tensor, weight: Tensor, bias: Tensor?,
                                          _ g: ConvGeometry, _ layout: ShiftedTapsLayout) throws -> [Tensor?] {
        let dev = x.device, c = g.channels, cout = weight.shape[0]
        let kh = g.kernelH, kw = g.kernelW, taps = kh * kw
        // W'[c, o, ky, kx] = W[o, c, kh-1-ky, kw-1-kx] (a few thousand floats, on the host).
        let w = try weight.toArray()
        var flipped = [Float](repeating: 0, count: w.count)
        for o in 0..<cout {
            for ci in 0..<c {
                for t in 0..<taps { flipped[(ci * cout + o) * taps + t] = w[(o * c + ci) * taps + taps - 1 - t] }
            }
        }
        let gt = ConvGeometry(channels: cout, height: g.height, width: g.width, kernelH: kh, kernelW: kw,
                              stride: 1, padding: g.padH)
        let (dx, _) = try conv2dShiftedTaps(gy, weight: Tensor(flipped, shape: [c, cout, kh, kw], on: dev),
                                            bias: nil, gt)
        // gyp [Cout, cols]: gy at its pixels' columns, zeros elsewhere.
        let gyp = try Tensor.zeros([cout, layout.cols], on: dev)
        try dev.run(Op.Copy(shape: gy.shape, src: Strided(gy.ref, strides: Shape.strides(gy.shape)),
                            dst: Strided(gyp.ref, strides: [layout.plane, layout.cols, layout.rowStride, 1])))
        // dWt [kh, kw, Cout, C], one product per tap, then [Cout, C, kh, kw].
        let dwt = try Tensor.empty([taps, cout, c], on: dev)
        var d = GemmDesc(m: cout, n: c, k: layout.cols, transB: true)
        d.ldb = layout.rowLen
        d.batch0 = kh; d.strideB0 = layout.rowStride; d.strideC0 = kw * cout * c
        d.batch1 = kw; d.strideB1 = 1; d.strideC1 = cout * c
        try dev.run(Op.Gemm(d, a: gyp.ref, b: layout.xp.ref, c: dwt.ref))
        let dw = try Tensor.empty(weight.shape, on: dev)
        try dev.run(Op.Copy(shape: [cout, c, taps], src: Strided(dwt.ref, strides: [c, 1, cout * c]),
                            dst: Strided(dw.ref, strides: [c * taps, taps, 1])))
        return [dx, dw] + (bias == nil ? [] : [try gy.sum(axes: [0, 2, 3])])
    }

    /// Resize of [..., H, W] to [..., outH, outW] (PyTorch interpolate, align_corners=False).
    public func resized(height outH: Int, width outW: Int, mode: ResizeMode) throws -> Tensor {
        try requireShape(rank >= 2, "resize of \(shape)")
        try require(outH > 0 && outW > 0, "resize to \(outH)x\(outW)")
        let inH = shape[rank - 2], inW = shape[rank - 1], planes = count / (inH * inW)
        let y = try Tensor.empty(Array(shape.dropLast(2)) + [outH, outW], on: device)
        try device.run(Op.Resize(mode, planes: planes, inH: inH, inW: inW, outH: outH, outW: outW, x: ref, y: y.ref))
        return record(y, [self], "resize") { g in
            let dx = try Tensor.empty(self.shape, on: self.device)
            try self.device.run(Op.ResizeBackward(mode, planes: planes, inH: inH, inW: inW, outH: outH,
                                                  outW: outW, dy: g.ref, dx: dx.ref))
            return [dx]
        }
    }

    /// Rows of `table` [V, D] at `indices`: an embedding lookup, [indices.count, D].
    public static func gather(_ table: Tensor, indices: [Int]) throws -> Tensor {
        try requireShape(table.rank == 2, "gather from \(table.shape): expected [V, D]")
        let vocab = table.shape[0], dim = table.shape[1]
        try require(!indices.isEmpty, "gather with no indices")
        try require(vocab < (1 << 24), "gather table of \(vocab) rows (at most 2^24)")
        if let bad = indices.first(where: { $0 < 0 || $0 >= vocab }) {
            throw NoiseError.invalidArgument("gather index \(bad) outside 0..<\(vocab)")
        }
        let dev = table.device
        let idx = try Tensor(indices.map(Float.init), shape: [indices.count], on: dev)
        let out = try Tensor.empty([indices.count, dim], on: dev)
        try dev.run(Op.Gather(rows: indices.count, dim: dim, table: table.ref, index: idx.ref, out: out.ref))
        return record(out, [table], "gather") { g in
            // Inverse index as CSR, built on the host from the (host-known) indices.
            var counts = [Int](repeating: 0, count: vocab + 1)
            for i in indices { counts[i + 1] += 1 }
            for v in 0..<vocab { counts[v + 1] += counts[v] }
            var fill = counts
            var list = [Float](repeating: 0, count: indices.count)
            for (row, i) in indices.enumerated() {
                list[fill[i]] = Float(row)
                fill[i] += 1
            }
            let start = try Tensor(counts.map(Float.init), shape: [vocab + 1], on: dev)
            let lst = try Tensor(list, shape: [indices.count], on: dev)
            let dt = try Tensor.empty(table.shape, on: dev)
            try dev.run(Op.GatherBackward(vocab: vocab, dim: dim, dy: g.ref, start: start.ref, list: lst.ref, dtable: dt.ref))
            return [dt]
        }
    }
}

/// AdamW (decoupled weight decay) over a set of parameters, one fused kernel per tensor.
public final class AdamW {
    public var lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    public private(set) var step = 0
    private var state: [ObjectIdentifier: (m: Tensor, v: Tensor)] = [:]

    /// The first and second moments kept for a parameter (nil before its first update).
    public func moments(of p: Tensor) -> (m: Tensor, v: Tensor)? { state[ObjectIdentifier(p)] }

    /// Restores the step count and the moments of parameters (resuming a checkpoint).
    public func restore(step: Int, moments: [(param: Tensor, m: Tensor, v: Tensor)]) throws {
        try require(step >= 0, "optimizer step \(step) is negative")
        for (p, m, v) in moments {
            try requireShape(m.shape == p.shape && v.shape == p.shape, "optimizer moments \(m.shape), \(v.shape) for \(p.shape)")
            state[ObjectIdentifier(p)] = (try m.to(p.device), try v.to(p.device))
        }
        self.step = step
    }

    public init(lr: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                weightDecay: Float = 0.01) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.weightDecay = weightDecay
    }

    /// Applies one update to every parameter that has a gradient.
    public func update(_ params: [Tensor]) throws {
        step += 1
        let s = AdamWStep(lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step)
        for p in params {
            guard let g = p.grad else { continue }
            let id = ObjectIdentifier(p)
            if state[id] == nil {
                state[id] = (try Tensor.zeros(p.shape, on: p.device), try Tensor.zeros(p.shape, on: p.device))
            }
            guard let (m, v) = state[id] else { continue }
            let n = p.count
            try p.device.run(Op.AdamW(count: n, step: s, param: p.ref, grad: g.ref, m: m.ref, v: v.ref))
        }
    }
}
