import Foundation


/// A compute device as the rest of the library sees it: one backend, the CPU backend as the
/// fallback for kernel families the backend does not support, and the autograd switch.
///
/// Select with `Device.open("auto" | "cpu" | "opencl" | "opencl:N")` or from the environment
/// (`NOISEAR_DEVICE`). `auto` takes the first OpenCL GPU or accelerator and otherwise the CPU
/// backend (an OpenCL CPU device such as PoCL only when asked for by name).
public final class Device {
    public let backend: any Backend
    /// The CPU backend used for fallbacks (the backend itself when it is the CPU one).
    public let cpu: CPUBackend
    /// When true (default), ops on tensors that require gradients record backward closures.
    public var gradEnabled = true
    /// Messages for the user (fallback warnings, notices); default prints to standard error.
    public var warn: (String) -> Void = { msg in
        FileHandle.standardError.write(Data(("warning: " + msg + "\n").utf8))
    }
    private var warned: Set<OpKind> = []
    /// Per op family: launches and seconds, collected while `profiling` is on (each primitive
    /// then waits for the device, so the times are exclusive).
    public var profiling = false
    public private(set) var profile: [OpKind: (count: Int, seconds: Double)] = [:]
    public func resetProfile() { profile = [:] }

    public var info: DeviceInfo { backend.info }
    public var isCPU: Bool { backend is CPUBackend }

    public init(backend: any Backend) {
        self.backend = backend
        cpu = (backend as? CPUBackend) ?? CPUBackend()
    }

    /// The CPU backend.
    public static func cpuDevice() -> Device { Device(backend: CPUBackend()) }

    /// Every device: the CPU backend first, then each OpenCL device.
    public static func list() -> (devices: [DeviceInfo], openCLError: String?) {
        var out = [CPUBackend().info]
        do {
            let all = try CL.allDevices()
            for (i, pd) in all.enumerated() { out.append(CL.info(pd.device, platform: pd.platform, index: i)) }
            return (out, all.isEmpty ? "no OpenCL platform found" : nil)
        } catch {
            return (out, "\(error)")
        }
    }

    /// Opens a device by specification. `notice` receives the one-line notice when `auto`
    /// falls back to the CPU backend.
    public static func open(_ spec: String? = nil,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            notice: (String) -> Void = { _ in }) throws -> Device {
        let s = (spec ?? environment["NOISEAR_DEVICE"] ?? "auto").lowercased()
        switch s {
        case "", "auto":
            let all = (try? CL.allDevices()) ?? []
            if all.isEmpty {
                notice("no OpenCL platform found; using the CPU backend")
                return cpuDevice()
            }
            for (i, pd) in all.enumerated() {
                let info = CL.info(pd.device, platform: pd.platform, index: i)
                if info.kind == .gpu || info.kind == .accelerator {
                    return Device(backend: try OpenCLBackend(index: i, environment: environment))
                }
            }
            return cpuDevice()
        case "cpu":
            return cpuDevice()
        case "opencl":
            return Device(backend: try OpenCLBackend(index: 0, environment: environment))
        default:
            if s.hasPrefix("opencl:"), let n = Int(s.dropFirst("opencl:".count)) {
                return Device(backend: try OpenCLBackend(index: n, environment: environment))
            }
            throw NoiseError.device("unknown device \(Text.quoted(s, limit: 40)): expected auto, cpu, opencl or opencl:N")
        }
    }

    // MARK: dispatch with fallback

    /// Runs a primitive on the backend, or on the CPU backend when the backend does not support
    /// its family: the referenced buffers are copied to host memory, the primitive runs there,
    /// and the buffers listed in `outputs` are copied back. Warns once per family.
    package func run(_ op: OpKind, _ refs: [BufRef], outputs: Set<Int>,
             _ body: (any Backend, [BufRef]) throws -> Void) throws {
        guard profiling else { return try dispatch(op, refs, outputs: outputs, body) }
        try backend.synchronize()
        let t0 = DispatchTime.now().uptimeNanoseconds
        try dispatch(op, refs, outputs: outputs, body)
        try backend.synchronize()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let old = profile[op] ?? (0, 0)
        profile[op] = (old.count + 1, old.seconds + dt)
    }

    private func dispatch(_ op: OpKind, _ refs: [BufRef], outputs: Set<Int>,
                          _ body: (any Backend, [BufRef]) throws -> Void) throws {
        if backend.supports(op) {
            try body(backend, refs)
            return
        }
        if !warned.contains(op) {
            warned.insert(op)
            warn("op '\(op.rawValue)' is not supported by \(backend.info.id) (\(backend.info.name)); running it on the CPU backend")
        }
        var hostCopies: [ObjectIdentifier: CPUBuffer] = [:]
        var cpuRefs: [BufRef] = []
        for r in refs {
            let id = ObjectIdentifier(r.buffer)
            let host: CPUBuffer
            if let h = hostCopies[id] {
                host = h
            } else {
                host = try CPUBuffer(count: r.buffer.count)
                try backend.download(BufRef(r.buffer), into: UnsafeMutableBufferPointer(start: host.pointer, count: host.count))
                hostCopies[id] = host
            }
            cpuRefs.append(BufRef(host, r.offset))
        }
        try body(cpu, cpuRefs)
        var written: Set<ObjectIdentifier> = []
        for i in outputs.sorted() {
            let id = ObjectIdentifier(refs[i].buffer)
            guard !written.contains(id), let h = hostCopies[id] else { continue }
            written.insert(id)
            try backend.upload(UnsafeBufferPointer(start: h.pointer, count: h.count), to: BufRef(refs[i].buffer))
        }
    }
}
