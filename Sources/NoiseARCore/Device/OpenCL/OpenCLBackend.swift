import COpenCL
import Foundation

/// A float32 OpenCL buffer.
public final class OpenCLBuffer: DeviceBuffer {
    public let count: Int
    let mem: cl_mem
    /// The backend's pool and the bucket this memory object belongs to (nil: released at once).
    private let pool: BufferPool<cl_mem>?
    private let bucket: Int
    init(mem: cl_mem, count: Int, pool: BufferPool<cl_mem>? = nil, bucket: Int = 0) {
        self.mem = mem
        self.count = count
        self.pool = pool
        self.bucket = bucket
    }
    // The runtime keeps the object alive until enqueued commands that use it finish; a pooled
    // object is reused only by commands enqueued later on the same in-order queue.
    deinit {
        if let pool { pool.give(mem, bucket: bucket) } else { clReleaseMemObject(mem) }
    }
}

/// The OpenCL backend: hand-written kernels from `Kernels/*.cl`, compiled per device with the
/// device type's parameter set (`KernelParams`) and cached on disk.
public final class OpenCLBackend: KernelBackend {
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
    /// The device buffer pool's counters.
    public var poolStatistics: BufferPoolStatistics { pool.statistics }
    /// Idle device buffers by size class (`NOISEAR_DEVICE_POOL_MB` caps the idle bytes; 0: off).
    lazy var pool = BufferPool<cl_mem>(
        idleLimit: environment["NOISEAR_DEVICE_POOL_MB"].flatMap { Int($0) }.map { max($0, 0) << 20 }
            ?? BufferPool<cl_mem>.defaultIdleLimit(memoryBytes: info.memoryBytes),
        release: { clReleaseMemObject($0) })
    private let disabled: Set<OpKind>
    private lazy var dummy: OpenCLBuffer? = try? allocate(1) as? OpenCLBuffer
    public var parallelism: Int { info.computeUnits }

    /// A one-element buffer bound where an optional operand is absent.
    public func dummyBuffer() throws -> any DeviceBuffer {
        guard let d = dummy else { throw NoiseError.device("dummy buffer allocation failed") }
        return d
    }
    /// Program builds that were compiled from source (not loaded from the disk cache).
    public private(set) var sourceBuilds = 0
    /// Kernels launched since the backend opened.
    public private(set) var launches = 0

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
        disabled = OpKind.disabled(environment: environment, warn: warn)
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

    /// Whether a family is enabled (`NOISEAR_DISABLE_OPS` turns families off).
    public func enables(_ kind: OpKind) -> Bool { !disabled.contains(kind) }

    /// Every call of an enabled family, except: group norm with only one of gamma and beta
    /// (the kernel takes both or neither) and fused attention with head dims above 256 (the
    /// kernel's private accumulators are sized by the head dims) and batch-reduce GEMMs, and
    /// direct convolutions beyond `directConvolutionFits` (32-bit indices, the CONV_* tile
    /// within the device's work-group and local-memory limits).
    public func supports(_ op: any PrimitiveOp) -> Bool {
        guard enables(op.kind) else { return false }
        switch op {
        case let g as Op.GroupNorm: return (g.gamma == nil) == (g.beta == nil)
        case let a as Op.Attention: return a.desc.headDim <= 256 && a.desc.valueDim <= 256
        case let g as Op.Gemm: return !g.desc.reduceBatch || g.desc.batch0 * g.desc.batch1 == 1
        case let c as Op.Conv2d: return directConvolutionFits(c)
        default: return true
        }
    }

    // MARK: memory

    public func allocate(_ count: Int) throws -> any DeviceBuffer {
        try require(count >= 0, "negative allocation \(count)")
        var err: cl_int = 0
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        try require(!overflow, "allocation of \(count) floats overflows")
        // Freed buffers wait in the pool for the next request of their size class.
        let (mem, bucket) = try pool.obtain(bytes) { size in
            guard let mem = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), size, nil, &err),
                err == CL_SUCCESS
            else {
                throw NoiseError.openCL(call: "clCreateBuffer(\(size) bytes)", code: err, name: CL.name(err))
            }
            return mem
        }
        return OpenCLBuffer(mem: mem, count: count, pool: bucket == nil ? nil : pool, bucket: bucket ?? 0)
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
    public func scratchBuffer(_ name: String, _ count: Int) throws -> any DeviceBuffer {
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
    public func launchKernel(_ file: String, _ name: String, extra: [String: Int], global: [Int],
                      local: [Int]?, _ args: [KArg]) throws {
        if global.contains(where: { $0 == 0 }) { return }
        let k = try kernel(file, name, extra: extra)
        for (i, a) in args.enumerated() {
            let idx = cl_uint(i)
            let code: cl_int
            switch a {
            case .buf(let b):
                guard let m = b as? OpenCLBuffer else {
                    throw NoiseError.device("kernel \(name) argument \(i) is not an OpenCL buffer")
                }
                var v: cl_mem? = m.mem
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
        launches += 1
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
