import COpenCL
import Foundation

/// A float32 OpenCL buffer.
public final class OpenCLBuffer: DeviceBuffer {
    public let count: Int
    let mem: cl_mem
    init(mem: cl_mem, count: Int) {
        self.mem = mem
        self.count = count
    }
    // The runtime keeps the object alive until enqueued commands that use it finish.
    deinit { clReleaseMemObject(mem) }
}

/// A kernel argument.
enum KArg {
    case mem(cl_mem)
    case i32(Int)
    case u32(UInt32)
    case f32(Float)
    case i8([Int])
}

/// The OpenCL backend: hand-written kernels from `Kernels/*.cl`, compiled per device with the
/// device type's parameter set (`KernelParams`) and cached on disk.
public final class OpenCLBackend: Backend {
    public let info: DeviceInfo
    public let params: KernelParams
    /// The device's work-group, work-item and local-memory limits (checked against `params`).
    public let limits: KernelLimits
    let device: cl_device_id
    let context: cl_context
    let queue: cl_command_queue
    let diskCache: KernelDiskCache
    let environment: [String: String]
    private var programs: [String: cl_program] = [:]
    private var kernels: [String: cl_kernel] = [:]
    /// Memo keys of programs loaded from the disk cache (rebuilt from source if they fail).
    private var cachedPrograms: Set<String> = []
    private var scratch: [String: OpenCLBuffer] = [:]
    private let disabled: Set<OpKind>
    private lazy var dummy: OpenCLBuffer? = try? allocate(1) as? OpenCLBuffer
    /// Program builds that were compiled from source (not loaded from the disk cache).
    public private(set) var sourceBuilds = 0

    /// Opens OpenCL device number `index` (enumeration order over all platforms).
    ///
    /// The kernel parameters (`params`, else the device type's set with the environment's
    /// overrides) are validated against the kernels and the device's limits first. `warn`
    /// receives notices about ignored settings (default: standard error), each once per process.
    public init(index: Int, params: KernelParams? = nil,
                environment: [String: String] = ProcessInfo.processInfo.environment,
                warn: (String) -> Void = { FileHandle.standardError.write(Data(("warning: " + $0 + "\n").utf8)) })
        throws
    {
        let all = try CL.allDevices()
        guard !all.isEmpty else {
            throw NoiseError.device("no OpenCL platform or device found (is an ICD such as pocl-opencl-icd installed?)")
        }
        guard index >= 0 && index < all.count else {
            throw NoiseError.device("no OpenCL device \(index): \(all.count) found (see `noisear-gpu devices`)")
        }
        let (platform, dev) = all[index]
        device = dev
        info = CL.info(dev, platform: platform, index: index)
        limits = CL.limits(dev, fp64: info.fp64)
        let chosen = try params ?? KernelParams.forDevice(info.kind, environment: environment)
        try chosen.validate(for: limits)
        self.params = chosen
        var off = Set<OpKind>()
        var unknown: [String] = []
        for item in (environment["NOISEAR_DISABLE_OPS"] ?? "").split(separator: ",") {
            let name = item.trimmingCharacters(in: .whitespaces)
            if name.isEmpty { continue }
            if let op = OpKind(rawValue: name) { off.insert(op) } else { unknown.append(name) }
        }
        disabled = off
        if !unknown.isEmpty {
            let message = "NOISEAR_DISABLE_OPS: ignoring unknown op name\(unknown.count > 1 ? "s" : "") "
                + unknown.joined(separator: ", ") + "; valid names: "
                + OpKind.allCases.map(\.rawValue).joined(separator: ", ")
            if WarnOnce.shared.first(message) { warn(message) }
        }
        var err: cl_int = 0
        var d: cl_device_id? = dev
        guard let ctx = clCreateContext(nil, 1, &d, nil, nil, &err), err == CL_SUCCESS else {
            throw NoiseError.openCL(call: "clCreateContext", code: err, name: CL.name(err))
        }
        context = ctx
        guard let q = clCreateCommandQueue(ctx, dev, 0, &err), err == CL_SUCCESS else {
            clReleaseContext(ctx)
            throw NoiseError.openCL(call: "clCreateCommandQueue", code: err, name: CL.name(err))
        }
        queue = q
        diskCache = KernelDiskCache(environment: environment)
        self.environment = environment
    }

    deinit {
        clFinish(queue)
        for k in kernels.values { clReleaseKernel(k) }
        for p in programs.values { clReleaseProgram(p) }
        scratch.removeAll()
        dummy = nil
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    public func supports(_ op: OpKind) -> Bool { !disabled.contains(op) }

    // MARK: memory

    public func allocate(_ count: Int) throws -> any DeviceBuffer {
        try require(count >= 0, "negative allocation \(count)")
        var err: cl_int = 0
        let bytes = max(count, 1) * MemoryLayout<Float>.size
        guard let mem = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), bytes, nil, &err),
            err == CL_SUCCESS
        else {
            throw NoiseError.openCL(call: "clCreateBuffer(\(bytes) bytes)", code: err, name: CL.name(err))
        }
        return OpenCLBuffer(mem: mem, count: count)
    }

    func mem(_ r: BufRef) -> cl_mem { (r.buffer as! OpenCLBuffer).mem }


    public func upload(_ src: UnsafeBufferPointer<Float>, to dst: BufRef) throws {
        guard let base = src.baseAddress, src.count > 0 else { return }
        try checkRange(dst, src.count)
        try CL.check(
            clEnqueueWriteBuffer(queue, mem(dst), cl_bool(CL_TRUE), dst.offset * 4, src.count * 4,
                                 base, 0, nil, nil), "clEnqueueWriteBuffer")
    }

    public func download(_ src: BufRef, into dst: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = dst.baseAddress, dst.count > 0 else { return }
        try checkRange(src, dst.count)
        try CL.check(
            clEnqueueReadBuffer(queue, mem(src), cl_bool(CL_TRUE), src.offset * 4, dst.count * 4,
                                base, 0, nil, nil), "clEnqueueReadBuffer")
    }

    public func synchronize() throws { try CL.check(clFinish(queue), "clFinish") }

    /// A scratch buffer of at least `count` floats, reused between calls.
    func scratchBuffer(_ name: String, _ count: Int) throws -> OpenCLBuffer {
        if let b = scratch[name], b.count >= count { return b }
        guard let b = try allocate(count) as? OpenCLBuffer else {
            throw NoiseError.device("scratch allocation failed")
        }
        scratch[name] = b
        return b
    }

    // MARK: programs and launches

    /// Builds (or loads from the caches) program `file` with the parameter set plus `extra`.
    /// `fromSource` skips the disk cache (used when a cached program turned out unusable).
    func program(_ file: String, extra: [String: Int] = [:], fromSource: Bool = false) throws
        -> (cl_program, String)
    {
        let options = params.options(extra: extra)
        let memoKey = file + "|" + options
        if let p = programs[memoKey] { return (p, memoKey) }
        let source = try KernelSources.program(file, environment: environment)
        let key = KernelDiskCache.key(source: source, options: options, device: info)
        var err: cl_int = 0
        var dev: cl_device_id? = device
        if !fromSource, let binary = diskCache.load(key) {
            var status: cl_int = 0
            let prog: cl_program? = binary.withUnsafeBytes { raw -> cl_program? in
                var ptr: UnsafePointer<UInt8>? = raw.bindMemory(to: UInt8.self).baseAddress
                var len = raw.count
                return clCreateProgramWithBinary(context, 1, &dev, &len, &ptr, &status, &err)
            }
            if let prog, err == CL_SUCCESS, status == CL_SUCCESS,
                clBuildProgram(prog, 1, &dev, options, nil, nil) == CL_SUCCESS
            {
                programs[memoKey] = prog
                cachedPrograms.insert(memoKey)
                return (prog, memoKey)
            }
            if let prog { clReleaseProgram(prog) }
            // A corrupt or stale entry: fall through and rebuild from source.
        }
        let prog: cl_program? = source.withCString { cstr -> cl_program? in
            var p: UnsafePointer<CChar>? = cstr
            return clCreateProgramWithSource(context, 1, &p, nil, &err)
        }
        guard let prog, err == CL_SUCCESS else {
            throw NoiseError.openCL(call: "clCreateProgramWithSource(\(file))", code: err, name: CL.name(err))
        }
        let status = clBuildProgram(prog, 1, &dev, options, nil, nil)
        if status != CL_SUCCESS {
            let log = buildLog(prog)
            clReleaseProgram(prog)
            if status == CL_BUILD_PROGRAM_FAILURE || status == CL_INVALID_BUILD_OPTIONS || !log.isEmpty {
                throw NoiseError.kernelBuild(program: file, options: options, log: log)
            }
            try CL.check(status, "clBuildProgram(\(file))")
        }
        sourceBuilds += 1
        if let binary = programBinary(prog) { diskCache.store(key, binary) }
        programs[memoKey] = prog
        return (prog, memoKey)
    }

    private func buildLog(_ prog: cl_program) -> String {
        var size = 0
        clGetProgramBuildInfo(prog, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
        guard size > 1 else { return "" }
        var buf = [CChar](repeating: 0, count: size + 1)
        clGetProgramBuildInfo(prog, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &buf, nil)
        return CL.cString(buf)
    }

    private func programBinary(_ prog: cl_program) -> Data? {
        var size = 0
        guard clGetProgramInfo(prog, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size,
                               &size, nil) == CL_SUCCESS, size > 0
        else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        let ok = bytes.withUnsafeMutableBufferPointer { buf -> Bool in
            var ptr: UnsafeMutablePointer<UInt8>? = buf.baseAddress
            return clGetProgramInfo(prog, cl_program_info(CL_PROGRAM_BINARIES),
                                    MemoryLayout<UnsafeMutablePointer<UInt8>?>.size, &ptr, nil) == CL_SUCCESS
        }
        return ok ? Data(bytes) : nil
    }

    /// Kernel `name` of program `file`. When the program came from the disk cache and the
    /// kernel cannot be created from it (e.g. CL_INVALID_KERNEL_NAME from a stale or misfiled
    /// entry), the program is discarded, rebuilt from source (rewriting the entry) and retried.
    func kernel(_ file: String, _ name: String, extra: [String: Int] = [:]) throws -> cl_kernel {
        let (prog, memoKey) = try program(file, extra: extra)
        let key = memoKey + "|" + name
        if let k = kernels[key] { return k }
        var err: cl_int = 0
        if let k = clCreateKernel(prog, name, &err) {
            if err == CL_SUCCESS {
                kernels[key] = k
                return k
            }
            clReleaseKernel(k)
        }
        if cachedPrograms.contains(memoKey) {
            discardProgram(memoKey)
            let (fresh, _) = try program(file, extra: extra, fromSource: true)
            if let k = clCreateKernel(fresh, name, &err) {
                if err == CL_SUCCESS {
                    kernels[key] = k
                    return k
                }
                clReleaseKernel(k)
            }
        }
        throw NoiseError.openCL(call: "clCreateKernel(\(name))", code: err, name: CL.name(err))
    }

    /// Forgets a program and the kernels created from it (the runtime keeps them alive for
    /// commands already enqueued).
    private func discardProgram(_ memoKey: String) {
        for (key, k) in kernels where key.hasPrefix(memoKey + "|") {
            clReleaseKernel(k)
            kernels[key] = nil
        }
        if let p = programs.removeValue(forKey: memoKey) { clReleaseProgram(p) }
        cachedPrograms.remove(memoKey)
    }

    /// Sets the arguments and enqueues; `global` is rounded up to a multiple of `local`.
    func launch(_ file: String, _ name: String, extra: [String: Int] = [:], global: [Int],
                local: [Int]? = nil, _ args: [KArg]) throws {
        if global.contains(where: { $0 == 0 }) { return }
        let k = try kernel(file, name, extra: extra)
        for (i, a) in args.enumerated() {
            let idx = cl_uint(i)
            let code: cl_int
            switch a {
            case .mem(let m):
                var v: cl_mem? = m
                code = clSetKernelArg(k, idx, MemoryLayout<cl_mem?>.size, &v)
            case .i32(let x):
                var v = cl_int(truncatingIfNeeded: x)
                code = clSetKernelArg(k, idx, 4, &v)
            case .u32(let x):
                var v = x
                code = clSetKernelArg(k, idx, 4, &v)
            case .f32(let x):
                var v = x
                code = clSetKernelArg(k, idx, 4, &v)
            case .i8(let xs):
                var v = SIMD8<Int32>(repeating: 0)
                for j in 0..<min(8, xs.count) { v[j] = Int32(truncatingIfNeeded: xs[j]) }
                code = clSetKernelArg(k, idx, MemoryLayout<SIMD8<Int32>>.size, &v)
            }
            try CL.check(code, "clSetKernelArg(\(name), \(i))")
        }
        var g = global
        var l = local
        if let lv = local {
            for i in 0..<g.count { g[i] = (g[i] + lv[i] - 1) / lv[i] * lv[i] }
        }
        let code: cl_int
        if l != nil {
            code = clEnqueueNDRangeKernel(queue, k, cl_uint(g.count), nil, &g, &l!, 0, nil, nil)
        } else {
            code = clEnqueueNDRangeKernel(queue, k, cl_uint(g.count), nil, &g, nil, 0, nil, nil)
        }
        try CL.check(code, "clEnqueueNDRangeKernel(\(name), global \(g), local \(l.map { "\($0)" } ?? "auto"))")
    }

    /// Buffer and offset arguments of a reference.
    func ref(_ r: BufRef) -> [KArg] { [.mem(mem(r)), .i32(r.offset)] }

    /// An optional reference: the buffer (or a dummy), its offset and a presence flag.
    func optRef(_ r: BufRef?) throws -> [KArg] {
        if let r { return ref(r) }
        guard let d = dummy else { throw NoiseError.device("dummy buffer allocation failed") }
        return [.mem(d.mem), .i32(0)]
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

    public func unaryBackward(_ op: UnaryOp, count: Int, x: BufRef, dy: BufRef, dx: BufRef,
                              p0: Float, p1: Float) throws {
        try launch("elementwise.cl", "unary_backward_f32", global: [count],
                   ref(x) + ref(dy) + ref(dx) + [.i32(count), .i32(Int(op.rawValue)), .f32(p0), .f32(p1)])
    }

    public func gemm(_ d: GemmDesc, a: BufRef, b: BufRef, c: BufRef) throws {
        let batch = d.batch0 * d.batch1
        if d.m <= 4 {
            let wg = params["ROW_WG"]
            try launch("gemm.cl", "gemm_skinny", global: [d.n * wg, batch],
                       local: [wg > 1 ? wg : min(16, limits.maxLocal(0)), 1],
                       ref(a) + ref(b) + ref(c)
                           + [d.m, d.n, d.k, d.lda, d.ldb, d.ldc, d.transA ? 1 : 0, d.transB ? 1 : 0,
                              d.batch1, d.strideA0, d.strideA1, d.strideB0, d.strideB1, d.strideC0,
                              d.strideC1].map { KArg.i32($0) } + [.f32(d.alpha), .f32(d.beta)])
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
                       d.strideC1].map { KArg.i32($0) } + [.f32(d.alpha), .f32(d.beta)])
            return
        }
        let mr = params["GEMM_MR"], nr = 16 * params["GEMM_NV"]
        let mp = (d.m + mr - 1) / mr, np = (d.n + nr - 1) / nr
        let ap = try scratchBuffer("gemmA", batch * mp * mr * d.k)
        let bp = try scratchBuffer("gemmB", batch * np * nr * d.k)
        try launch("gemm.cl", "gemm_pack_a", global: [d.k, mp, batch],
                   ref(a) + [d.m, d.k, d.lda, d.transA ? 1 : 0, d.batch1, d.strideA0, d.strideA1]
                       .map { KArg.i32($0) } + [.mem(ap.mem), .i32(mp)])
        try launch("gemm.cl", "gemm_pack_b", global: [d.k, np, batch],
                   ref(b) + [d.n, d.k, d.ldb, d.transB ? 1 : 0, d.batch1, d.strideB0, d.strideB1]
                       .map { KArg.i32($0) } + [.mem(bp.mem), .i32(np)])
        try launch("gemm.cl", "gemm_packed", global: [mp, np, batch], local: [max(params["GEMM_LWG"], 1), 1, 1],
                   [.mem(ap.mem), .mem(bp.mem), .i32(d.k), .i32(mp), .i32(np)] + ref(c)
                       + [d.m, d.n, d.ldc, d.batch1, d.strideC0, d.strideC1].map { KArg.i32($0) }
                       + [.f32(d.alpha), .f32(d.beta)])
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
        let affine = gamma != nil && beta != nil
        try require(affine || (gamma == nil && beta == nil), "group norm needs both gamma and beta or neither")
        try launch("softmax.cl", "group_norm", global: [n * groups * params["ROW_WG"]], local: rowLocal,
                   ref(x) + (try optRef(gamma)) + (try optRef(beta)) + [.i32(affine ? 1 : 0)]
                       + ref(y) + ref(mean) + ref(rstd)
                       + [.i32(groups), .i32(channels / groups), .i32(spatial), .f32(eps)])
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
                       ref(x) + [.mem(partial.mem), .i32(0), .i32(whole), .i32(chunk), .i32(inner)])
            if tail > 0 {
                try launch("elementwise.cl", "reduce_sum", global: [inner],
                           [.mem(mem(x)), .i32(x.offset + whole * chunk * inner), .mem(partial.mem),
                            .i32(whole * inner), .i32(1), .i32(tail), .i32(inner)])
            }
            try launch("elementwise.cl", "reduce_sum", global: [inner],
                       [.mem(partial.mem), .i32(0)] + ref(out)
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

/// Messages given once per process (a setting read by every backend warns once).
final class WarnOnce: @unchecked Sendable {
    static let shared = WarnOnce()
    private let lock = NSLock()
    private var given: Set<String> = []

    /// True the first time `message` is seen.
    func first(_ message: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return given.insert(message).inserted
    }
}
