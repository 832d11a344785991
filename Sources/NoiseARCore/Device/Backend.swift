/// The device layer: a backend owns buffers and runs primitive kernels on them.
///
/// Every primitive works on float32 buffers addressed by `BufRef` (buffer + element offset),
/// so callers can place outputs anywhere in a buffer (the differential tests surround outputs
/// with guard regions this way). The CPU backend is the reference ("oracle") for all others.
/// The kernel backends (OpenCL, Vulkan) share one description of each primitive
/// (`KernelBackend`); a new API implements `Backend`, `DeviceBuffer` and the launch of that
/// description, and `Device` must learn to enumerate it.

/// A block of float32 device memory.
public protocol DeviceBuffer: AnyObject {
    /// Capacity in float32 elements.
    var count: Int { get }
}

/// A buffer plus an element offset into it.
public struct BufRef {
    public let buffer: any DeviceBuffer
    public let offset: Int
    public init(_ buffer: any DeviceBuffer, _ offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }
}

/// Primitive kernel families, one per descriptor type in `Op` (`OpKind.descriptor`).
public enum OpKind: String, CaseIterable, Sendable {
    case fill, copy, binary, unary, unaryBackward
    case gemm, softmax, softmaxBackward
    case layerNorm, layerNormBackward, groupNorm, groupNormBackward
    case attention, im2col, col2im, conv2d, resize, resizeBackward
    case reduce, gather, gatherBackward, randn, adamw
    case samplePatch, svd, combine
}

/// Elementwise binary operations (with broadcasting through strides).
public enum BinaryOp: Int32, Sendable, CaseIterable {
    case add = 0, sub = 1, mul = 2, div = 3
}

/// Elementwise unary operations. `p0`/`p1` are parameters where an op takes them.
public enum UnaryOp: Int32, Sendable, CaseIterable {
    case exp = 0, log = 1, sqrt = 2
    /// y = p0 * x + p1
    case affine = 3
    /// y = min(max(x, p0), p1)
    case clamp = 4
    case silu = 5
    /// Exact erf form: 0.5 x (1 + erf(x / sqrt 2)), PyTorch's default.
    case gelu = 6
    case relu = 7, sigmoid = 8, tanh = 9
    /// y = x * x
    case square = 10

    /// Whether the op reads p0 and p1 (affine, clamp). An epilogue activation
    /// (`GemmDesc.activation`, `Op.Conv2d.activation`) must not: it has no parameters to pass.
    public var takesParameters: Bool { self == .affine || self == .clamp }
}

/// The check of an epilogue activation that every backend's GEMM and convolution, and the tensor
/// ops that take one, make: none, or an op without parameters.
package func checkEpilogueActivation(_ activation: UnaryOp?, _ what: String = "epilogue") throws {
    guard let activation else { return }
    try require(!activation.takesParameters, "\(what) activation \(activation): it takes parameters")
}

/// Resize interpolation (PyTorch `F.interpolate` semantics, align_corners=False).
public enum ResizeMode: Int32, Sendable {
    /// src = floor(dst * in / out), PyTorch's legacy 'nearest'.
    case nearest = 0
    /// Half-pixel centres, clamped at the border.
    case bilinear = 1
}

/// Row-major batched GEMM: C = alpha * op(A) * op(B) + beta * C, for every (b0, b1) batch pair.
public struct GemmDesc: Sendable, Equatable {
    public var transA = false, transB = false
    public var m: Int, n: Int, k: Int
    public var alpha: Float = 1, beta: Float = 0
    public var lda: Int, ldb: Int, ldc: Int
    public var batch0 = 1, batch1 = 1
    public var strideA0 = 0, strideA1 = 0
    public var strideB0 = 0, strideB1 = 0
    public var strideC0 = 0, strideC1 = 0
    /// Batch-reduce GEMM (oneDNN's "brgemm"): C = alpha * sum over the batch pairs of
    /// op(A_b) op(B_b) + beta * C, into one C (the C strides are not used), summed in batch
    /// order. The CPU backend implements it (a stride-1 convolution as one product per kernel
    /// tap); the GPU backends leave it to the CPU.
    public var reduceBatch = false
    /// With a bias operand (`Op.Gemm.bias`): every row of C of batch entry (i0, i1) gets
    /// bias[i0 * biasStride0 + column] added after the product (a linear layer's bias as the
    /// GEMM's epilogue).
    public var biasStride0 = 0
    /// Applied to every element of C last (the GEMM's activation epilogue):
    /// C = act(alpha op(A) op(B) + beta C_in + bias), e.g. a feed-forward layer's GELU. Only ops
    /// without parameters (`UnaryOp.takesParameters` false).
    public var activation: UnaryOp? = nil

    /// A plain (optionally transposed) contiguous GEMM.
    public init(m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false,
                alpha: Float = 1, beta: Float = 0) {
        self.m = m; self.n = n; self.k = k
        self.transA = transA; self.transB = transB
        self.alpha = alpha; self.beta = beta
        lda = transA ? m : k
        ldb = transB ? k : n
        ldc = n
    }

    /// The same GEMM batched over `batch` contiguous matrices (a stride 0 broadcasts that side).
    public func batched(_ batch: Int, strideA: Int, strideB: Int, strideC: Int) -> GemmDesc {
        var d = self
        d.batch0 = batch
        d.strideA0 = strideA; d.strideB0 = strideB; d.strideC0 = strideC
        return d
    }

    /// Floating-point operations of the whole batched product.
    public var flops: Double { 2.0 * Double(m) * Double(n) * Double(k) * Double(batch0 * batch1) }
}

/// A strided read of up to `maxRank` dimensions (stride 0 broadcasts).
public struct Strided {
    public static let maxRank = 6
    public var ref: BufRef
    public var strides: [Int]
    public init(_ ref: BufRef, strides: [Int]) {
        self.ref = ref
        self.strides = strides
    }
}

/// Fused multi-head attention, O = softmax(scale * Q K^T + bias + causal) V, per (batch, head).
///
/// Q, K, V and O are addressed by (batch, head, token) strides with the feature axis contiguous,
/// so both [B,H,T,D] and [B,T,H,D] layouts work without a copy. The optional bias is a
/// contiguous [biasBatch, biasHeads, Tq, Tk] tensor read at batch `b % biasBatch` and head
/// `h % biasHeads` (a relative-position bias has biasBatch 1; Swin's window mask has one per window).
/// The causal mask is aligned bottom-right: query i sees keys j <= i + (Tk - Tq).
public struct AttentionDesc: Sendable, Equatable {
    public var batch: Int, heads: Int, tq: Int, tk: Int, headDim: Int, valueDim: Int
    public var scale: Float
    public var causal = false
    public var qStrides: [Int], kStrides: [Int], vStrides: [Int], oStrides: [Int]
    public var biasBatch = 0, biasHeads = 0  // 0: no bias

    /// Contiguous [B,H,T,D] layout for all four tensors.
    public init(batch: Int, heads: Int, tq: Int, tk: Int, headDim: Int, valueDim: Int? = nil,
                scale: Float? = nil, causal: Bool = false) {
        self.batch = batch; self.heads = heads; self.tq = tq; self.tk = tk
        self.headDim = headDim
        let dv = valueDim ?? headDim
        self.valueDim = dv
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
        self.causal = causal
        qStrides = [heads * tq * headDim, tq * headDim, headDim]
        kStrides = [heads * tk * headDim, tk * headDim, headDim]
        vStrides = [heads * tk * dv, tk * dv, dv]
        oStrides = [heads * tq * dv, tq * dv, dv]
    }

    public var flops: Double {
        2.0 * Double(batch * heads) * Double(tq) * Double(tk) * Double(headDim + valueDim)
    }
}

/// Convolution geometry (NCHW, groups = 1).
public struct ConvGeometry: Sendable, Equatable {
    public var channels: Int, height: Int, width: Int
    public var kernelH: Int, kernelW: Int
    public var strideH = 1, strideW = 1, padH = 0, padW = 0
    public init(channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int,
                stride: Int = 1, padding: Int = 0) {
        self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW
        strideH = stride; strideW = stride; padH = padding; padW = padding
    }
    public var outH: Int { (height + 2 * padH - kernelH) / strideH + 1 }
    public var outW: Int { (width + 2 * padW - kernelW) / strideW + 1 }
    /// Rows of the im2col matrix: channels * kernelH * kernelW.
    public var colRows: Int { channels * kernelH * kernelW }
    /// Columns of the im2col matrix: outH * outW.
    public var colCols: Int { outH * outW }
}

/// AdamW hyper-parameters for one update step (bias corrections precomputed by the caller).
public struct AdamWStep: Sendable, Equatable {
    public var lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// 1 - beta1^t and 1 - beta2^t for step t (1-based).
    public var biasCorrection1: Float, biasCorrection2: Float
    public init(lr: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                weightDecay: Float = 0.01, step: Int) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.weightDecay = weightDecay
        biasCorrection1 = 1 - Float(Foundation.pow(Double(beta1), Double(step)))
        biasCorrection2 = 1 - Float(Foundation.pow(Double(beta2), Double(step)))
    }
}

/// What a device is, for listings and selection.
public struct DeviceInfo: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case cpu, gpu, accelerator, other }
    /// "cpu" or "opencl:N".
    public var id: String
    public var backend: String
    public var name: String
    public var vendor: String
    public var kind: Kind
    public var platform: String
    public var memoryBytes: UInt64
    public var computeUnits: Int
    public var openCLCVersion: String
    public var driverVersion: String
    public var fp16: Bool
    public var fp64: Bool
    /// The limits the kernels depend on, by the API's own names (e.g. Vulkan's
    /// maxComputeWorkGroupInvocations, maxComputeSharedMemorySize, maxStorageBufferRange).
    public var limits: [String: Int] = [:]
}

/// Geometry and settings of `Backend.samplePatch`: a latent [batch, channels, size, size] cut
/// into patches of patch x patch pixels, and the patch being written.
public struct PatchSampleDesc: Sendable, Equatable {
    public var batch: Int, channels: Int, size: Int, patch: Int
    public var gridY: Int, gridX: Int
    public var seed: UInt64
    public var temperature: Float
    public var logvarMin: Float = -20, logvarMax: Float = 10
    public init(batch: Int, channels: Int, size: Int, patch: Int, gridY: Int, gridX: Int,
                seed: UInt64, temperature: Float) {
        self.batch = batch; self.channels = channels; self.size = size; self.patch = patch
        self.gridY = gridY; self.gridX = gridX; self.seed = seed; self.temperature = temperature
    }
    /// Elements of one token: channels * patch * patch.
    public var tokenSize: Int { channels * patch * patch }
}

/// A compute backend: buffers plus primitive kernels. All primitives are asynchronous with
/// respect to the host where the backend allows it; `download` waits.
public protocol Backend: AnyObject {
    var info: DeviceInfo { get }
    /// Whether this backend runs this call itself (else `Device` runs it on the CPU backend).
    /// It sees the whole descriptor (shapes, dims, optional operands), so each backend states
    /// its own limits here.
    func supports(_ op: any PrimitiveOp) -> Bool

    func allocate(_ count: Int) throws -> any DeviceBuffer
    func upload(_ src: UnsafeBufferPointer<Float>, to dst: BufRef) throws
    func download(_ src: BufRef, into dst: UnsafeMutableBufferPointer<Float>) throws
    func synchronize() throws

    func fill(_ dst: BufRef, count: Int, value: Float) throws
    /// dst[strided dst] = src[strided src] over `shape` (rank <= 6).
    func copy(shape: [Int], src: Strided, dst: Strided) throws
    /// out (contiguous, `shape`) = a op b, a and b read through broadcast strides.
    func binary(_ op: BinaryOp, shape: [Int], a: Strided, b: Strided, out: BufRef) throws
    func unary(_ op: UnaryOp, count: Int, x: BufRef, y: BufRef, p0: Float, p1: Float) throws
    /// dx = dy * f'(x).
    func unaryBackward(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef,
                       p0: Float, p1: Float) throws
    /// out[i] = sum over t of coefficients[t] * inputs[t][i] for i < count, 1 to
    /// `Op.Combine.maxTerms` terms (classifier-free guidance, a scheduler step; out may be one
    /// of the inputs).
    func combine(count: Int, coefficients: [Float], inputs: [BufRef], out: BufRef) throws
    /// C = alpha op(A) op(B) + beta C_in (+ the bias row, see `GemmDesc.biasStride0`, when
    /// given), where C_in is `cIn` (laid out as C: a residual the product is added to) or C;
    /// then `GemmDesc.activation` on every element when set.
    func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef?, cIn: BufRef?) throws
    /// Row-wise (log-)softmax over the last axis of a [rows, cols] matrix.
    func softmax(rows: Int, cols: Int, log: Bool, x: BufRef, y: BufRef) throws
    /// dx from y = (log-)softmax(x) and dy.
    func softmaxBackward(rows: Int, cols: Int, log: Bool, y: BufRef, dy: BufRef, dx: BufRef) throws
    /// Row-wise layer norm; saves mean and 1/std per row.
    func layerNorm(rows: Int, cols: Int, eps: Float, x: BufRef, gamma: BufRef?, beta: BufRef?,
                   y: BufRef, mean: BufRef, rstd: BufRef) throws
    /// dx (overwritten) and, when given, dgamma/dbeta (overwritten).
    func layerNormBackward(rows: Int, cols: Int, x: BufRef, gamma: BufRef?, mean: BufRef,
                           rstd: BufRef, dy: BufRef, dx: BufRef, dgamma: BufRef?,
                           dbeta: BufRef?) throws
    /// Group norm of [n, channels, spatial]; saves mean/rstd per (n, group).
    func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                   gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef) throws
    /// Group norm followed by a unary op on y (a ResNet block's GroupNorm + SiLU). The default
    /// runs the two; a backend may fuse them (the CPU backend applies the op to each group's
    /// rows while they are in cache).
    func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                   gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef,
                   activation: UnaryOp) throws
    func groupNormBackward(n: Int, channels: Int, spatial: Int, groups: Int, x: BufRef,
                           gamma: BufRef?, mean: BufRef, rstd: BufRef, dy: BufRef, dx: BufRef,
                           dgamma: BufRef?, dbeta: BufRef?) throws
    func attention(_ d: AttentionDesc, q: BufRef, k: BufRef, v: BufRef, bias: BufRef?,
                   o: BufRef) throws
    /// col [C*kh*kw, batch*outH*outW] from x [batch, C, H, W] (the batch folded into the
    /// columns, so a convolution is one GEMM).
    func im2col(_ g: ConvGeometry, batch: Int, x: BufRef, col: BufRef) throws
    /// dx [batch, C, H, W] (overwritten) = sum of col entries that read each pixel.
    func col2im(_ g: ConvGeometry, batch: Int, col: BufRef, dx: BufRef) throws
    /// out [batch, Cout, outH, outW] (overwritten) = the convolution of x [batch, C, H, W] with
    /// weight [Cout, C, kh, kw] (groups = 1), plus bias [Cout] when given, then `activation`
    /// on every element when given (parameter-free ops only): one pass, no im2col matrix in
    /// memory where the backend can (an implicit GEMM on the kernel backends).
    func conv2d(_ g: ConvGeometry, batch: Int, outChannels: Int, x: BufRef, weight: BufRef,
                bias: BufRef?, activation: UnaryOp?, out: BufRef) throws
    /// [planes, inH, inW] -> [planes, outH, outW].
    func resize(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int,
                x: BufRef, y: BufRef) throws
    /// dx (overwritten) from dy.
    func resizeBackward(_ mode: ResizeMode, planes: Int, inH: Int, inW: Int, outH: Int,
                        outW: Int, dy: BufRef, dx: BufRef) throws
    /// Sum over a [outer, reduce, inner] view: out[o, i] = sum_r x[o, r, i].
    func reduce(outer: Int, reduce: Int, inner: Int, x: BufRef, out: BufRef) throws
    /// out[i, :] = table[index[i], :]; indices are float-encoded integers (exact below 2^24).
    func gather(rows: Int, dim: Int, table: BufRef, index: BufRef, out: BufRef) throws
    /// dtable[v, :] = sum over i with index[i] == v of dy[i, :], given the inverse index as CSR
    /// (`start[v]..<start[v+1]` into `list` of row numbers), float-encoded.
    func gatherBackward(vocab: Int, dim: Int, dy: BufRef, start: BufRef, list: BufRef,
                        dtable: BufRef) throws
    /// Standard normals from Philox4x32-10: element i uses counter (offset + i/4, ...).
    func randn(count: Int, seed: UInt64, offset: UInt64, dst: BufRef) throws
    /// One patch of an autoregressive noise sample: for image b and token element
    /// j = (c, py, px) of patch (gridY, gridX), with y = gridY*P + py, x = gridX*P + px,
    /// `latent[b, c, y, x] = token[b, j] = mu[b, j] + eps * temperature * exp(0.5 * clamp(logvar[b, j]))`
    /// where eps is `eps[b, c, y, x]` when given, else normal number `c*S*S + y*S + x` of the
    /// Philox stream `seed + b` (the same draw as `Tensor.randn` of image b's latent).
    func samplePatch(_ d: PatchSampleDesc, mu: BufRef, logvar: BufRef, eps: BufRef?,
                     latent: BufRef, token: BufRef) throws
    /// One fused AdamW update of param, m, v in place.
    func adamw(count: Int, step: AdamWStep, param: BufRef, grad: BufRef, m: BufRef,
               v: BufRef) throws
    /// One-sided Jacobi SVD of `batch` row-major n x n matrices a = u diag(s) vt: u and vt
    /// [batch, n, n] orthogonal (completed for zero singular values), s [batch, n] descending.
    /// Sweeps until a sweep finds every pair with |cos| <= tolerance, or `maxSweeps`; returns
    /// the most sweeps any matrix used. With `precondition` the sweeps run on R of the pivoted
    /// QR factorisation of a^T instead of on a (`PivotedQR`: far fewer sweeps).
    func svd(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef, tolerance: Float,
             maxSweeps: Int, precondition: Bool) throws -> Int
}

import Foundation

extension Backend {
    /// A GEMM without a bias, beta reading C itself.
    public func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef) throws {
        try gemm(d, a: a, b: b, c: c, bias: nil, cIn: nil)
    }

    /// A GEMM with a bias row, beta reading C itself.
    public func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef, bias: BufRef?) throws {
        try gemm(d, a: a, b: b, c: c, bias: bias, cIn: nil)
    }

    public func groupNorm(n: Int, channels: Int, spatial: Int, groups: Int, eps: Float, x: BufRef,
                          gamma: BufRef?, beta: BufRef?, y: BufRef, mean: BufRef, rstd: BufRef,
                          activation: UnaryOp) throws {
        try groupNorm(n: n, channels: channels, spatial: spatial, groups: groups, eps: eps, x: x,
                      gamma: gamma, beta: beta, y: y, mean: mean, rstd: rstd)
        try unary(activation, count: n * channels * spatial, x: y, y: y, p0: 0, p1: 0)
    }

    /// Throws when `n` elements from `r` would fall outside its buffer.
    func checkRange(_ r: BufRef, _ n: Int) throws {
        try require(r.offset >= 0 && r.offset + n <= r.buffer.count,
                    "range \(r.offset)..<\(r.offset + n) outside buffer of \(r.buffer.count)")
    }

    /// The argument check every backend's `combine` makes: 1 to `Op.Combine.maxTerms` inputs,
    /// one coefficient each.
    func checkCombineArguments(coefficients: [Float], inputs: [BufRef]) throws {
        try require(!inputs.isEmpty && inputs.count <= Op.Combine.maxTerms && coefficients.count == inputs.count,
                    "combine of \(inputs.count) inputs with \(coefficients.count) coefficients (1 to \(Op.Combine.maxTerms))")
    }

    /// The argument checks every backend's `svd` makes; false when there is nothing to do.
    func checkSVDArguments(batch: Int, n: Int, a: BufRef, u: BufRef, s: BufRef, vt: BufRef,
                           maxSweeps: Int) throws -> Bool {
        try require(batch >= 0 && n >= 0 && maxSweeps >= 0,
                    "svd of \(batch) matrices of size \(n) with \(maxSweeps) sweeps")
        let nn = n * n
        try checkRange(a, batch * nn)
        try checkRange(u, batch * nn)
        try checkRange(vt, batch * nn)
        try checkRange(s, batch * n)
        return batch > 0 && n > 0
    }
}
