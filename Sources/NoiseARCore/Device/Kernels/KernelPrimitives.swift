import Foundation

/// A kernel argument: a buffer, or a 32-bit scalar (int8 is OpenCL's 8-lane int vector,
/// eight ints in a Vulkan push-constant block).
public enum KArg {
    case buf(any DeviceBuffer)
    case i32(Int)
    case u32(UInt32)
    case f32(Float)
    case i8([Int])
}

/// A backend that runs the kernels of `Kernels/` through one launch call: the OpenCL C
/// kernels (`OpenCLBackend`) or their GLSL twins in `Kernels/vulkan` (`VulkanBackend`), which
/// take the same arguments in the same order. The primitives below are written once for both:
/// which kernel, its arguments and its global/local sizes.
public protocol KernelBackend: Backend {
    var params: KernelParams { get }
    var limits: KernelLimits { get }
    /// Runs kernel `name` of program `file` over `global` items in groups of `local` (nil: the
    /// backend's choice); `extra` adds kernel parameters for this launch.
    func launchKernel(_ file: String, _ name: String, extra: [String: Int], global: [Int],
                      local: [Int]?, _ args: [KArg]) throws
    /// A scratch buffer of at least `count` floats, reused between calls.
    func scratchBuffer(_ name: String, _ count: Int) throws -> any DeviceBuffer
    /// A one-element buffer bound where an optional operand is absent.
    func dummyBuffer() throws -> any DeviceBuffer
    /// About how many work groups keep the device busy (OpenCL: its compute units).
    var parallelism: Int { get }
    /// Kernels launched since the backend opened.
    var launches: Int { get }
}

extension KernelBackend {
    public func launch(_ file: String, _ name: String, extra: [String: Int] = [:], global: [Int],
                local: [Int]? = nil, _ args: [KArg]) throws {
        try launchKernel(file, name, extra: extra, global: global, local: local, args)
    }

    /// Buffer and offset arguments of a reference.
    func ref(_ r: BufRef) -> [KArg] { [.buf(r.buffer), .i32(r.offset)] }

    /// An optional reference: the buffer (or a dummy), its offset and a presence flag.
    func optRef(_ r: BufRef?) throws -> [KArg] {
        if let r { return ref(r) }
        return [.buf(try dummyBuffer()), .i32(0)]
    }

    /// Pads an up-to-6-D shape and strides to 6 entries (leading 1s / 0s).
    func pad6(_ shape: [Int], _ strides: [[Int]]) throws -> ([Int], [[Int]]) {
        try require(shape.count <= Strided.maxRank, "rank \(shape.count) above \(Strided.maxRank)")
        let lead = Strided.maxRank - shape.count
        return ([Int](repeating: 1, count: lead) + shape,
                strides.map { [Int](repeating: 0, count: lead) + $0 })
    }

    // MARK: primitives

    public func fill(_ dst: BufRef, count: Int, value: Float) throws {
        try launch("elementwise.cl", "fill_f32", global: [count], ref(dst) + [.i32(count), .f32(value)])
    }

    public func copy(shape: [Int], src: Strided, dst: Strided) throws {
        let (cs, cst) = Shape.collapse(shape, [src.strides, dst.strides])
        let n = Shape.count(shape)
        if cs.count == 1 {
            try launch("elementwise.cl", "copy_1d", global: [n],
                       ref(src.ref) + [.i32(cst[0][0])] + ref(dst.ref) + [.i32(cst[1][0]), .i32(n)])
            return
        }
        let (s, st) = try pad6(cs, cst)
        try launch("elementwise.cl", "copy_strided", global: [n],
                   ref(src.ref) + [.i8(st[0])] + ref(dst.ref) + [.i8(st[1]), .i8(s), .i32(n)])
    }

    public func binary(_ op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef) throws {
        let (cs, cst) = Shape.collapse(shape, [a.strides, b.strides, Shape.strides(shape)])
        let n = Shape.count(shape)
        if cs.count == 1 {
            try launch("elementwise.cl", "binary_1d", global: [n],
                       ref(a.ref) + [.i32(cst[0][0])] + ref(b.ref) + [.i32(cst[1][0])] + ref(out)
                           + [.i32(n), .i32(Int(op.rawValue))])
            return
        }
        let (s, st) = try pad6(cs, Array(cst.prefix(2)))
        try launch("elementwise.cl", "binary_strided", global: [n],
                   ref(a.ref) + [.i8(st[0])] + ref(b.ref) + [.i8(st[1])] + ref(out)
                       + [.i8(s), .i32(n), .i32(Int(op.rawValue))])
    }

    public func unary(_ op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float, p1: Float) throws {
        try launch("elementwise.cl", "unary_f32", global: [count],
                   ref(x) + ref(y) + [.i32(count), .i32(Int(op.rawValue)), .f32(p0), .f32(p1)])
    }

    public func combine(count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef) throws {
        try checkCombineArguments(coefficients: coefficients, inputs: inputs)
        // Four operand slots always; unused ones get a dummy buffer and coefficient 0.
        var args: [KArg] = []
        for t in 0..<Op.Combine.maxTerms {
            args += t < inputs.count ? ref(inputs[t]) : try optRef(nil)
        }
        let cs = (0..<Op.Combine.maxTerms).map { KArg.f32($0 < coefficients.count ? coefficients[$0] : 0) }
        try launch("elementwise.cl", "combine_f32", global: [count],
                   args + ref(out) + [.i32(count), .i32(inputs.count)] + cs)
    }

    public func unaryBackward(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef,
                              p0: Float, p1: Float) throws {
        try launch("elementwise.cl", "unary_backward_f32", global: [count],
                   ref(x) + ref(dy) + ref(dx) + [.i32(count), .i32(Int(op.rawValue)), .f32(p0), .f32(p1)])
    }

    public func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef?, cIn: BufRef?) throws {
        try checkEpilogueActivation(d.activation)
        let batch = d.batch0 * d.batch1
        // The epilogue's arguments: the bias (a dummy buffer without one), where beta's term
        // reads C (C itself without cIn), the activation (-1: none).
        let epilogueArgs = try optRef(bias) + [.i32(bias == nil ? 0 : 1), .i32(d.biasStride0)] + ref(cIn ?? c)
            + [Self.activationArg(d.activation)]
        if d.m <= 4 {
            let wg = params["ROW_WG"]
            try launch("gemm.cl", "gemm_skinny", global: [d.n * wg, batch],
                       local: [wg > 1 ? wg : min(16, limits.maxLocal(0)), 1],
                       ref(a) + ref(b) + ref(c)
                           + [d.m, d.n, d.k, d.lda, d.ldb, d.ldc, d.transA ? 1 : 0, d.transB ? 1 : 0,
                              d.batch1, d.strideA0, d.strideA1, d.strideB0, d.strideB1, d.strideC0,
                              d.strideC1].map { KArg.i32($0) } + [.f32(d.alpha), .f32(d.beta)] + epilogueArgs)
            return
        }
        if params["GEMM_VARIANT"] == 1 {
            let tsm = params["GEMM_TSM"], tsn = params["GEMM_TSN"]
            let rtsm = tsm / params["GEMM_WPTM"], rtsn = tsn / params["GEMM_WPTN"]
            try launch(
                "gemm.cl", "gemm_tiled",
                global: [(d.m + tsm - 1) / tsm * rtsm, (d.n + tsn - 1) / tsn * rtsn, batch],
                local: [rtsm, rtsn, 1],
                ref(a) + ref(b) + ref(c)
                    + [d.m, d.n, d.k, d.lda, d.ldb, d.ldc, d.transA ? 1 : 0, d.transB ? 1 : 0,
                       d.batch1, d.strideA0, d.strideA1, d.strideB0, d.strideB1, d.strideC0,
                       d.strideC1].map { KArg.i32($0) } + [.f32(d.alpha), .f32(d.beta)] + epilogueArgs)
            return
        }
        let mr = params["GEMM_MR"], nr = 16 * params["GEMM_NV"]
        let mp = (d.m + mr - 1) / mr, np = (d.n + nr - 1) / nr
        let ap = try scratchBuffer("gemmA", batch * mp * mr * d.k)
        let bp = try scratchBuffer("gemmB", batch * np * nr * d.k)
        try launch("gemm.cl", "gemm_pack_a", global: [d.k, mp, batch],
                   ref(a) + [d.m, d.k, d.lda, d.transA ? 1 : 0, d.batch1, d.strideA0, d.strideA1]
                       .map { KArg.i32($0) } + [.buf(ap), .i32(mp)])
        try launch("gemm.cl", "gemm_pack_b", global: [d.k, np, batch],
                   ref(b) + [d.n, d.k, d.ldb, d.transB ? 1 : 0, d.batch1, d.strideB0, d.strideB1]
                       .map { KArg.i32($0) } + [.buf(bp), .i32(np)])
        try launch("gemm.cl", "gemm_packed", global: [mp, np, batch], local: [max(params["GEMM_LWG"], 1), 1, 1],
                   [.buf(ap), .buf(bp), .i32(d.k), .i32(mp), .i32(np)] + ref(c)
                       + [d.m, d.n, d.ldc, d.batch1, d.strideC0, d.strideC1].map { KArg.i32($0) }
                       + [.f32(d.alpha), .f32(d.beta)] + epilogueArgs)
    }

    var rowLocal: [Int] { [params["ROW_WG"]] }

    public func softmax(rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef) throws {
        try launch("softmax.cl", "softmax_rows", global: [rows * params["ROW_WG"]], local: rowLocal,
                   ref(x) + ref(y) + [.i32(rows), .i32(cols), .i32(log ? 1 : 0)])
    }

    public func softmaxBackward(rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef,
                                dx: BufRef) throws {
        try launch("softmax.cl", "softmax_rows_backward", global: [rows * params["ROW_WG"]],
                   local: rowLocal, ref(y) + ref(dy) + ref(dx) + [.i32(rows), .i32(cols), .i32(log ? 1 : 0)])
    }

    public func layerNorm(rows: Int, cols: Int, eps: Float, x: BufRef, gamma: BufRef?,
                          beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef) throws {
        try groupNorm(n: rows, channels: 1, spatial: cols, groups: 1, eps: eps, x: x, gamma: nil,
                      beta: nil, y: y, mean: mean, rstd: rstd)
        if gamma != nil || beta != nil {
            try launch("softmax.cl", "layer_norm_affine", global: [rows * cols],
                       ref(y) + (try optRef(gamma)) + [.i32(gamma != nil ? 1 : 0)]
                           + (try optRef(beta)) + [.i32(beta != nil ? 1 : 0), .i32(rows), .i32(cols)])
        }
    }

    public func layerNormBackward(rows: Int, cols: Int, x: BufRef, gamma: BufRef?, mean: BufRef,
                                  rstd: BufRef, dy: BufRef, dx: BufRef, dgamma: BufRef?,
                                  dbeta: BufRef?) throws {
        try launch("softmax.cl", "group_norm_backward_dx", global: [rows * params["ROW_WG"]],
                   local: rowLocal,
                   ref(x) + (try optRef(gamma)) + [.i32(gamma != nil ? 1 : 0), .i32(1)] + ref(mean)
                       + ref(rstd) + ref(dy) + ref(dx) + [.i32(1), .i32(1), .i32(cols)])
        if dgamma != nil || dbeta != nil {
            try launch("softmax.cl", "norm_backward_affine", global: [cols],
                       ref(x) + ref(mean) + ref(rstd) + ref(dy) + (try optRef(dgamma))
                           + [.i32(dgamma != nil ? 1 : 0)] + (try optRef(dbeta))
                           + [.i32(dbeta != nil ? 1 : 0), .i32(rows), .i32(cols), .i32(1), .i32(1)])
        }
    }

    public func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                          gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef) throws {
        try groupNormKernel(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                            gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd, silu: false)
    }

    /// GroupNorm + SiLU is one kernel (the `silu` flag of group_norm); other activations run
    /// as a second kernel.
    public func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                          gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef,
                          activation: UnaryOp) throws {
        try groupNormKernel(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                            gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd, silu: activation == .silu)
        if activation != .silu {
            try unary(activation, count: n * channels * spatial, x: y, y: y, p0: 0, p1: 0)
        }
    }

    func groupNormKernel(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                         gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef, silu: Bool) throws {
        let affine = gamma != nil && beta != nil
        try require(affine || (gamma == nil && beta == nil), "group norm needs both gamma and beta or neither")
        try launch("softmax.cl", "group_norm", global: [n * groups * params["ROW_WG"]], local: rowLocal,
                   ref(x) + (try optRef(gamma)) + (try optRef(beta)) + [.i32(affine ? 1 : 0)]
                       + ref(y) + ref(mean) + ref(rstd)
                       + [.i32(groups), .i32(channels / groups), .i32(spatial), .f32(eps), .i32(silu ? 1 : 0)])
    }

    public func groupNormBackward(n: Int, channels: Int, spatial: Int, groups: Int, x: BufRef,
                                  gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef,
                                  dx: BufRef, dgamma: BufRef?, dbeta: BufRef?) throws {
        try launch("softmax.cl", "group_norm_backward_dx", global: [n * groups * params["ROW_WG"]],
                   local: rowLocal,
                   ref(x) + (try optRef(gamma)) + [.i32(gamma != nil ? 1 : 0), .i32(0)] + ref(mean)
                       + ref(rstd) + ref(dy) + ref(dx)
                       + [.i32(groups), .i32(channels / groups), .i32(spatial)])
        if dgamma != nil || dbeta != nil {
            try launch("softmax.cl", "norm_backward_affine", global: [channels],
                       ref(x) + ref(mean) + ref(rstd) + ref(dy) + (try optRef(dgamma))
                           + [.i32(dgamma != nil ? 1 : 0)] + (try optRef(dbeta))
                           + [.i32(dbeta != nil ? 1 : 0), .i32(n), .i32(channels), .i32(spatial), .i32(groups)])
        }
    }

    public func attention(_ d: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?,
                          o: BufRef) throws {
        var vw = 16
        while vw > 1 && (d.headDim % vw != 0 || d.valueDim % vw != 0) { vw /= 2 }
        let qb = params["ATT_QB"], wg = params["ATT_WG"]
        let items = (d.tq + qb - 1) / qb
        var extra = ["ATT_D": d.headDim, "ATT_DV": d.valueDim, "ATT_VW": vw]
        // ATT_LOCAL stages ATT_KB rows of K and V (head dims known only now) in local memory;
        // where they do not fit, the keys are read from global memory instead.
        if params["ATT_LOCAL"] != 0 && !attentionFitsLocal(headDim: d.headDim, valueDim: d.valueDim) {
            extra["ATT_LOCAL"] = 0
        }
        try launch(
            "attention.cl", "attention_fwd",
            extra: extra,
            global: [(items + wg - 1) / wg * wg, d.heads, d.batch], local: [wg, 1, 1],
            ref(q) + d.qStrides.map { KArg.i32($0) } + ref(k) + d.kStrides.map { KArg.i32($0) }
                + ref(v) + d.vStrides.map { KArg.i32($0) } + (try optRef(bias))
                + [.i32(bias != nil ? d.biasBatch : 0), .i32(max(d.biasHeads, 1))]
                + ref(o) + d.oStrides.map { KArg.i32($0) }
                + [.i32(d.tq), .i32(d.tk), .f32(d.scale), .i32(d.causal ? 1 : 0)])
    }

    /// Whether ATT_KB keys and values of these dims fit in the device's local memory.
    func attentionFitsLocal(headDim: Int, valueDim: Int) -> Bool {
        let (dims, o1) = headDim.addingReportingOverflow(valueDim)
        let (bytes, o2) = dims.multipliedReportingOverflow(by: 4 * params["ATT_KB"])
        return !o1 && !o2 && bytes <= limits.localMemoryBytes
    }

    func convArgs(_ g: ConvGeometry, _ batch: Int) -> [KArg] {
        [batch, g.channels, g.height, g.width, g.kernelH, g.kernelW, g.strideH, g.strideW, g.padH,
         g.padW, g.outH, g.outW].map { KArg.i32($0) }
    }

    public func im2col(_ g: ConvGeometry, batch: Int, x: BufRef, col: BufRef) throws {
        try launch("conv.cl", "im2col", global: [g.colRows * batch * g.outH],
                   ref(x) + ref(col) + convArgs(g, batch))
    }

    public func col2im(_ g: ConvGeometry, batch: Int, col: BufRef, dx: BufRef) throws {
        try launch("conv.cl", "col2im", global: [batch * g.channels * g.height],
                   ref(col) + ref(dx) + convArgs(g, batch))
    }

    /// conv2d_direct (Kernels/conv.cl; CPU twin `CPUBackend.conv2d`): one launch, a work group
    /// per tile of (output channels, output pixels over the batch), CONV_TSM x CONV_TSN, with
    /// CONV_TSM halved (a program variant) while the channels fill at most half a tile.
    public func conv2d(_ g: ConvGeometry, batch: Int, outChannels: Int, x: BufRef, weight: BufRef,
                       bias: BufRef?, activation: UnaryOp?, out: BufRef) throws {
        try checkEpilogueActivation(activation)
        let tsm = convChannelTile(outChannels), tsn = params["CONV_TSN"]
        let items = (pixels: params.convTile.pixels, channels: tsm / params["CONV_WPTM"])
        let pixels = batch * g.outH * g.outW
        try launch("conv.cl", "conv2d_direct", extra: tsm == params["CONV_TSM"] ? [:] : ["CONV_TSM": tsm],
                   global: [(pixels + tsn - 1) / tsn * items.pixels, (outChannels + tsm - 1) / tsm * items.channels],
                   local: [items.pixels, items.channels],
                   ref(x) + ref(weight) + (try optRef(bias)) + [.i32(bias != nil ? 1 : 0)] + ref(out)
                       + convArgs(g, batch) + [.i32(outChannels), Self.activationArg(activation)])
    }

    /// The `act` argument of the GEMM and convolution kernels' epilogue (epilogue_act):
    /// the op's raw value, -1 for none.
    static func activationArg(_ activation: UnaryOp?) -> KArg { .i32(activation.map { Int($0.rawValue) } ?? -1) }

    /// The direct convolution's tile of output channels for `outChannels`: CONV_TSM, halved
    /// while the channels fit in half of it and the half stays a multiple of CONV_WPTM (a
    /// 3-channel output layer then computes 8 channels, not 64). Smaller tiles fit wherever
    /// CONV_TSM does.
    func convChannelTile(_ outChannels: Int) -> Int {
        var tsm = max(params["CONV_TSM"], 1)
        let wptm = max(params["CONV_WPTM"], 1)
        while outChannels <= tsm / 2 && (tsm / 2) % wptm == 0 && tsm / 2 >= wptm { tsm /= 2 }
        return tsm
    }

    /// The limits of `conv2d_direct` that every kernel backend shares: a sane geometry, the
    /// tile within the device's work-group and local-memory limits (`KernelParams.convTileFits`),
    /// and every index the kernel computes in 32-bit ints (each operand's offset plus extent,
    /// and the pixel, K and channel counts rounded up to whole tiles).
    func directConvolutionFits(_ c: Op.Conv2d) -> Bool {
        let g = c.geometry, limit = Int(Int32.max)
        let sizes = [g.channels, g.height, g.width, g.kernelH, g.kernelW, g.strideH, g.strideW]
        guard c.batch >= 0, c.outChannels >= 1, sizes.allSatisfy({ $0 >= 1 && $0 <= limit }),
              g.padH >= 0, g.padW >= 0, g.padH <= limit, g.padW <= limit,
              g.outH >= 1, g.outW >= 1, params.convTileFits(limits)
        else { return false }
        /// The product of `factors` plus `extra`, nil when it overflows or exceeds Int32.max.
        func fits(_ factors: [Int], plus extra: Int = 0) -> Int? {
            var v = 1
            for f in factors {
                let (p, o) = v.multipliedReportingOverflow(by: f)
                guard !o, p <= limit else { return nil }
                v = p
            }
            let (s, o) = v.addingReportingOverflow(extra)
            return !o && s <= limit ? s : nil
        }
        guard let k = fits([g.channels, g.kernelH, g.kernelW]),
              fits([g.height + 2 * g.padH, g.width + 2 * g.padW]) != nil,  // (the padded plane)
              fits([g.outH, g.strideH]) != nil, fits([g.outW, g.strideW]) != nil,
              fits([c.batch, g.outH, g.outW], plus: params["CONV_TSN"]) != nil,
              fits([k], plus: params["CONV_TSK"]) != nil,
              fits([c.outChannels], plus: params["CONV_TSM"]) != nil,
              fits([c.batch, g.channels, g.height, g.width], plus: c.x.offset) != nil,
              fits([c.outChannels, k], plus: c.weight.offset) != nil,
              fits([c.batch, c.outChannels, g.outH, g.outW], plus: c.out.offset) != nil,
              fits([c.outChannels], plus: c.bias?.offset ?? 0) != nil
        else { return false }
        return true
    }

    public func resize(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int,
                       x: BufRef, y: BufRef) throws {
        try launch("conv.cl", "resize2d", global: [planes * outH * outW],
                   ref(x) + ref(y) + [planes, inH, inW, outH, outW, Int(mode.rawValue)].map { KArg.i32($0) })
    }

    public func resizeBackward(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int,
                               outW: Int, dy: BufRef, dx: BufRef) throws {
        try launch("conv.cl", "resize2d_backward", global: [planes * inH * inW],
                   ref(dy) + ref(dx) + [planes, inH, inW, outH, outW, Int(mode.rawValue)].map { KArg.i32($0) })
    }

    public func reduce(outer: Int, reduce: Int, inner: Int, x: BufRef, out: BufRef) throws {
        // A long reduction into few outputs runs in two passes to keep the device busy:
        // [whole, chunk, inner] -> partial rows, plus the tail rows, then partials -> out.
        let chunk = 1024
        if outer == 1 && inner < 4096 && reduce > 4 * chunk {
            let whole = reduce / chunk, tail = reduce - whole * chunk
            let partial = try scratchBuffer("reduce", (whole + 1) * inner)
            try launch("elementwise.cl", "reduce_sum", global: [whole * inner],
                       ref(x) + [.buf(partial), .i32(0), .i32(whole), .i32(chunk), .i32(inner)])
            if tail > 0 {
                try launch("elementwise.cl", "reduce_sum", global: [inner],
                           [.buf(x.buffer), .i32(x.offset + whole * chunk * inner), .buf(partial),
                            .i32(whole * inner), .i32(1), .i32(tail), .i32(inner)])
            }
            try launch("elementwise.cl", "reduce_sum", global: [inner],
                       [.buf(partial), .i32(0)] + ref(out)
                           + [.i32(1), .i32(whole + (tail > 0 ? 1 : 0)), .i32(inner)])
            return
        }
        try launch("elementwise.cl", "reduce_sum", global: [outer * inner],
                   ref(x) + ref(out) + [.i32(outer), .i32(reduce), .i32(inner)])
    }

    public func gather(rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef) throws {
        try launch("elementwise.cl", "gather_rows", global: [rows * dim],
                   ref(table) + ref(index) + ref(out) + [.i32(rows), .i32(dim)])
    }

    public func gatherBackward(vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef,
                               dtable: BufRef) throws {
        try launch("elementwise.cl", "gather_rows_backward", global: [vocab * dim],
                   ref(dy) + ref(start) + ref(list) + ref(dtable) + [.i32(vocab), .i32(dim)])
    }

    public func randn(count: Int, seed: UInt64, offset: UInt64, dst: BufRef) throws {
        try launch("random.cl", "philox_randn", global: [count],
                   ref(dst) + [.i32(count), .u32(UInt32(truncatingIfNeeded: seed)),
                               .u32(UInt32(truncatingIfNeeded: seed >> 32)),
                               .u32(UInt32(truncatingIfNeeded: offset)),
                               .u32(UInt32(truncatingIfNeeded: offset >> 32))])
    }

    public func samplePatch(_ d: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?,
                            latent: BufRef, token: BufRef) throws {
        try launch("random.cl", "noisear_sample_patch", global: [d.batch * d.tokenSize],
                   ref(mu) + ref(logvar) + (try optRef(eps)) + [.i32(eps != nil ? 1 : 0)] + ref(latent) + ref(token)
                       + [.i32(d.batch), .i32(d.channels), .i32(d.size), .i32(d.patch), .i32(d.gridY),
                          .i32(d.gridX), .u32(UInt32(truncatingIfNeeded: d.seed)),
                          .u32(UInt32(truncatingIfNeeded: d.seed >> 32)), .f32(d.temperature),
                          .f32(d.logvarMin), .f32(d.logvarMax)])
    }

    public func adamw(count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef,
                      v: BufRef) throws {
        try launch("elementwise.cl", "adamw_f32", global: [count],
                   ref(param) + ref(grad) + ref(m) + ref(v)
                       + [.i32(count), .f32(step.lr), .f32(step.beta1), .f32(step.beta2), .f32(step.eps),
                          .f32(step.weightDecay), .f32(step.biasCorrection1), .f32(step.biasCorrection2)])
    }
}
