import CVulkan
import Foundation


/// A compute device as the rest of the library sees it: one backend, the CPU backend as the
/// fallback for calls the backend does not support, and the autograd switch.
///
/// Select with `Device.open("auto" | "cpu" | "opencl" | "opencl:N" | "vulkan" | "vulkan:N")`
/// or from the environment (`NOISEAR_DEVICE`). `auto` takes, in this order: a discrete GPU
/// (an OpenCL GPU or accelerator without host-unified memory, else a Vulkan discrete GPU); an
/// integrated GPU (any other OpenCL GPU or accelerator, else any other Vulkan GPU); the CPU
/// backend. Devices that are CPUs (PoCL, lavapipe) run only when named. A missing OpenCL or
/// Vulkan loader or driver only removes that API's candidates.
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

    /// Every device: the CPU backend first, then each OpenCL device, then each Vulkan device;
    /// with a line for each API that has none (no loader, no driver, no device).
    public static func list(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> (devices: [DeviceInfo], notes: [String])
    {
        var out = [CPUBackend().info]
        var notes: [String] = []
        if let c = BLASCore.correction { notes.append("CPU: \(c)") }
        do {
            let all = try CL.allDevices()
            for (i, pd) in all.enumerated() { out.append(CL.info(pd.device, platform: pd.platform, index: i)) }
            if all.isEmpty { notes.append("OpenCL: no OpenCL platform found") }
        } catch {
            notes.append("OpenCL: \(error)")
        }
        let vk = VK.allDevices(environment: environment)
        out += vk.devices
        if let e = vk.error { notes.append("Vulkan: \(e)") }
        return (out, notes)
    }

    /// Opens a device by specification. `notice` receives the one-line notice when `auto`
    /// falls back to the CPU backend.
    public static func open(_ spec: String? = nil,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            notice: (String) -> Void = { _ in }) throws -> Device {
        let s = (spec ?? environment["NOISEAR_DEVICE"] ?? "auto").lowercased()
        switch s {
        case "", "auto":
            return try openAuto(environment: environment, notice: notice)
        case "cpu":
            return cpuDevice()
        case "opencl":
            return Device(backend: try OpenCLBackend(index: 0, environment: environment))
        case "vulkan":
            return Device(backend: try VulkanBackend(index: 0, environment: environment))
        default:
            if s.hasPrefix("opencl:"), let n = Int(s.dropFirst("opencl:".count)) {
                return Device(backend: try OpenCLBackend(index: n, environment: environment))
            }
            if s.hasPrefix("vulkan:"), let n = Int(s.dropFirst("vulkan:".count)) {
                return Device(backend: try VulkanBackend(index: n, environment: environment))
            }
            throw NoiseError.device("unknown device \(Text.quoted(s, limit: 40)): expected auto, cpu, opencl, opencl:N, vulkan or vulkan:N")
        }
    }

    /// The `auto` rule (see the type's documentation).
    static func openAuto(environment: [String: String], notice: (String) -> Void) throws -> Device {
        let cl = (try? CL.allDevices()) ?? []
        var clGPUs: [(index: Int, discrete: Bool)] = []
        for (i, pd) in cl.enumerated() {
            let info = CL.info(pd.device, platform: pd.platform, index: i)
            if info.kind == .gpu || info.kind == .accelerator {
                clGPUs.append((i, !CL.hostUnifiedMemory(pd.device)))
            }
        }
        var missing: [String] = []
        if cl.isEmpty { missing.append("no OpenCL platform found") }
        var vkGPUs: [(index: Int, discrete: Bool)] = []
        let inst = try? VulkanInstance.shared(environment: environment)
        if inst == nil { missing.append("no Vulkan loader or driver found") }
        if let inst, !EmbeddedKernels.spirv.isEmpty {
            for (i, pd) in inst.physicalDevices.enumerated() {
                let p = inst.properties(pd)
                switch p.deviceType {
                case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: vkGPUs.append((i, true))
                case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU, VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: vkGPUs.append((i, false))
                default: break
                }
            }
        }
        var candidates: [() throws -> Device] = []
        for discrete in [true, false] {
            for c in clGPUs where c.discrete == discrete {
                candidates.append { Device(backend: try OpenCLBackend(index: c.index, environment: environment)) }
            }
            for v in vkGPUs where v.discrete == discrete {
                candidates.append { Device(backend: try VulkanBackend(index: v.index, environment: environment)) }
            }
        }
        for open in candidates {
            if let d = try? open() { return d }
        }
        // Said only when something is missing or broken (a machine whose OpenCL and Vulkan
        // devices are all CPUs is the CPU backend's, silently).
        if !candidates.isEmpty {
            notice("no GPU device could be opened; using the CPU backend")
        } else if !missing.isEmpty {
            notice(missing.joined(separator: ", ") + "; using the CPU backend")
        }
        return cpuDevice()
    }

    // MARK: dispatch with fallback

    /// Runs one primitive on the backend, or on the CPU backend when the backend does not
    /// support this call (`Backend.supports` sees the whole descriptor): the buffers the op
    /// names are copied to host memory, the op runs there, and the buffers it writes are
    /// copied back. Warns once per family.
    @discardableResult
    package func run<O: PrimitiveOp>(_ op: O) throws -> O.Result {
        guard profiling else { return try dispatch(op) }
        try backend.synchronize()
        let t0 = DispatchTime.now().uptimeNanoseconds
        let result = try dispatch(op)
        try backend.synchronize()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let old = profile[O.kind] ?? (0, 0)
        profile[O.kind] = (old.count + 1, old.seconds + dt)
        return result
    }

    private func dispatch<O: PrimitiveOp>(_ op: O) throws -> O.Result {
        if backend.supports(op) { return try op.execute(on: backend) }
        if !warned.contains(O.kind) {
            warned.insert(O.kind)
            warn("op '\(O.kind.rawValue)' is not supported by \(backend.info.id) (\(backend.info.name)) for this call; running it on the CPU backend")
        }
        var hostCopies: [ObjectIdentifier: CPUBuffer] = [:]
        let moved = try op.rebased { r in
            let id = ObjectIdentifier(r.buffer)
            if let h = hostCopies[id] { return BufRef(h, r.offset) }
            let host = try CPUBuffer(count: r.buffer.count)
            try backend.download(BufRef(r.buffer), into: UnsafeMutableBufferPointer(start: host.pointer, count: host.count))
            hostCopies[id] = host
            return BufRef(host, r.offset)
        }
        let result = try moved.execute(on: cpu)
        var written: Set<ObjectIdentifier> = []
        for r in op.writes {
            let id = ObjectIdentifier(r.buffer)
            guard written.insert(id).inserted, let h = hostCopies[id] else { continue }
            try backend.upload(UnsafeBufferPointer(start: h.pointer, count: h.count), to: BufRef(r.buffer))
        }
        return result
    }
}
