import CVulkan
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The Vulkan loader and instance, shared by every Vulkan backend of the process.
///
/// libvulkan is opened with dlopen (never linked), so a binary runs where no Vulkan loader
/// exists: then `VK.instance()` throws a one-line error, `--device vulkan` reports it and
/// `auto` goes on to the next candidate.
final class VulkanInstance: @unchecked Sendable {
    let handle: VkInstance
    let apiVersion: UInt32
    let getDeviceProcAddr: PFN_vkGetDeviceProcAddr
    let enumeratePhysicalDevices: PFN_vkEnumeratePhysicalDevices
    let getProperties: PFN_vkGetPhysicalDeviceProperties
    let getFeatures: PFN_vkGetPhysicalDeviceFeatures
    let getMemoryProperties: PFN_vkGetPhysicalDeviceMemoryProperties
    let getQueueFamilies: PFN_vkGetPhysicalDeviceQueueFamilyProperties
    let createDevice: PFN_vkCreateDevice
    /// Physical devices in enumeration order (`vulkan:N` is number N).
    let physicalDevices: [VkPhysicalDevice]

    init(library: String?) throws {
        let names = library.map { [$0] } ?? ["libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"]
        var lib: UnsafeMutableRawPointer?
        for n in names where lib == nil { lib = dlopen(n, RTLD_NOW | RTLD_LOCAL) }
        guard let lib, let gipaRaw = dlsym(lib, "vkGetInstanceProcAddr") else {
            throw NoiseError.device("no Vulkan loader found (\(names[0])): install the Vulkan loader (Debian: libvulkan1) and a driver (mesa-vulkan-drivers or the GPU vendor's)")
        }
        let gipa = unsafeBitCast(gipaRaw, to: PFN_vkGetInstanceProcAddr.self)
        func global<T>(_ name: String) throws -> T { try VK.function(name, from: "loader") { gipa(nil, $0) } }
        var version: UInt32 = VKVersion.make(1, 0, 0)
        if let f = gipa(nil, "vkEnumerateInstanceVersion") {
            let enumerate = unsafeBitCast(f, to: PFN_vkEnumerateInstanceVersion.self)
            _ = enumerate(&version)
        }
        guard version >= VKVersion.make(1, 1, 0) else {
            throw NoiseError.device("the Vulkan loader supports Vulkan \(VKVersion.string(version)); the backend needs 1.1")
        }
        apiVersion = version
        let create: PFN_vkCreateInstance = try global("vkCreateInstance")
        let appName = strdup("noisear-gpu"), engine = strdup("noisear-gpu")
        defer { free(appName); free(engine) }
        var app = VkApplicationInfo()
        app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
        app.pApplicationName = UnsafePointer(appName)
        app.pEngineName = UnsafePointer(engine)
        app.apiVersion = VKVersion.make(1, 1, 0)
        var instance: VkInstance?
        let result = withUnsafePointer(to: &app) { appPtr -> VkResult in
            var info = VkInstanceCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
            info.pApplicationInfo = appPtr
            return create(&info, nil, &instance)
        }
        if result == VK_ERROR_INCOMPATIBLE_DRIVER {
            throw NoiseError.device("no Vulkan driver (ICD) found: install one (mesa-vulkan-drivers, or the GPU vendor's driver)")
        }
        try VK.check(result, "vkCreateInstance")
        guard let instance else { throw NoiseError.device("vkCreateInstance returned no instance") }
        handle = instance
        func load<T>(_ name: String) throws -> T { try VK.function(name, from: "instance") { gipa(instance, $0) } }
        getDeviceProcAddr = try load("vkGetDeviceProcAddr")
        enumeratePhysicalDevices = try load("vkEnumeratePhysicalDevices")
        getProperties = try load("vkGetPhysicalDeviceProperties")
        getFeatures = try load("vkGetPhysicalDeviceFeatures")
        getMemoryProperties = try load("vkGetPhysicalDeviceMemoryProperties")
        getQueueFamilies = try load("vkGetPhysicalDeviceQueueFamilyProperties")
        createDevice = try load("vkCreateDevice")
        var count: UInt32 = 0
        try VK.check(enumeratePhysicalDevices(instance, &count, nil), "vkEnumeratePhysicalDevices")
        var list = [VkPhysicalDevice?](repeating: nil, count: Int(count))
        if count > 0 {
            try VK.check(enumeratePhysicalDevices(instance, &count, &list), "vkEnumeratePhysicalDevices")
        }
        physicalDevices = list.prefix(Int(count)).compactMap { $0 }
    }

    func properties(_ pd: VkPhysicalDevice) -> VkPhysicalDeviceProperties {
        var p = VkPhysicalDeviceProperties()
        getProperties(pd, &p)
        return p
    }

    func features(_ pd: VkPhysicalDevice) -> VkPhysicalDeviceFeatures {
        var f = VkPhysicalDeviceFeatures()
        getFeatures(pd, &f)
        return f
    }

    func memoryProperties(_ pd: VkPhysicalDevice) -> VkPhysicalDeviceMemoryProperties {
        var m = VkPhysicalDeviceMemoryProperties()
        getMemoryProperties(pd, &m)
        return m
    }

    /// The first queue family with compute.
    func computeQueueFamily(_ pd: VkPhysicalDevice) -> UInt32? {
        var count: UInt32 = 0
        getQueueFamilies(pd, &count, nil)
        var fams = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(count))
        getQueueFamilies(pd, &count, &fams)
        for (i, f) in fams.prefix(Int(count)).enumerated()
        where f.queueFlags & UInt32(VK_QUEUE_COMPUTE_BIT.rawValue) != 0 && f.queueCount > 0 {
            return UInt32(i)
        }
        return nil
    }

    /// What `devices` lists for physical device `index`.
    func info(_ index: Int) -> DeviceInfo {
        let pd = physicalDevices[index]
        let p = properties(pd)
        let kind: DeviceInfo.Kind
        switch p.deviceType {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU,
            VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
            kind = .gpu
        case VK_PHYSICAL_DEVICE_TYPE_CPU: kind = .cpu
        default: kind = .other
        }
        let mem = memoryProperties(pd)
        var localBytes: UInt64 = 0
        withUnsafeBytes(of: mem.memoryHeaps) { raw in
            let heaps = raw.bindMemory(to: VkMemoryHeap.self)
            for h in heaps.prefix(Int(mem.memoryHeapCount))
            where h.flags & UInt32(VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue) != 0 {
                localBytes += h.size
            }
        }
        let name = withUnsafeBytes(of: p.deviceName) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let l = p.limits
        let size = VK.ints(l.maxComputeWorkGroupSize), count = VK.ints(l.maxComputeWorkGroupCount)
        let limits: [String: Int] = [
            "maxComputeWorkGroupInvocations": Int(l.maxComputeWorkGroupInvocations),
            "maxComputeWorkGroupSize.x": size[0],
            "maxComputeWorkGroupCount.x": count[0],
            "maxComputeSharedMemorySize": Int(l.maxComputeSharedMemorySize),
            "maxStorageBufferRange": Int(l.maxStorageBufferRange),
            "maxPushConstantsSize": Int(l.maxPushConstantsSize),
            "maxMemoryAllocationCount": Int(l.maxMemoryAllocationCount),
        ]
        return DeviceInfo(
            id: "vulkan:\(index)", backend: "vulkan", name: name,
            vendor: VK.vendorName(p.vendorID), kind: kind,
            platform: "Vulkan \(VKVersion.string(p.apiVersion))" + (VK.isDiscrete(p) ? " (discrete)" : ""),
            memoryBytes: localBytes, computeUnits: 0, openCLCVersion: "",
            driverVersion: "\(p.driverVersion)", fp16: false, fp64: features(pd).shaderFloat64 != 0,
            limits: limits)
    }

    // MARK: process-wide instance

    private static let lock = NSLock()
    nonisolated(unsafe) private static var opened: [String: Result<VulkanInstance, NoiseError>] = [:]

    /// The process's instance for `NOISEAR_VULKAN_LIBRARY` (default: the system loader),
    /// created on first use; the error (no loader, no driver) is remembered too.
    static func shared(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> VulkanInstance {
        let library = environment["NOISEAR_VULKAN_LIBRARY"].flatMap { $0.isEmpty ? nil : $0 }
        lock.lock()
        defer { lock.unlock() }
        if let r = opened[library ?? ""] { return try r.get() }
        let r: Result<VulkanInstance, NoiseError>
        do {
            r = .success(try VulkanInstance(library: library))
        } catch let e as NoiseError {
            r = .failure(e)
        } catch {
            r = .failure(.device("\(error)"))
        }
        opened[library ?? ""] = r
        return try r.get()
    }
}

enum VKVersion {
    static func make(_ major: UInt32, _ minor: UInt32, _ patch: UInt32) -> UInt32 {
        (major << 22) | (minor << 12) | patch
    }
    static func string(_ v: UInt32) -> String { "\((v >> 22) & 0x7f).\((v >> 12) & 0x3ff).\(v & 0xfff)" }
}

enum VK {
    /// Vulkan function `name` as its PFN type, looked up by `lookup` (vkGet*ProcAddr).
    static func function<T>(_ name: String, from what: String, _ lookup: (String) -> PFN_vkVoidFunction?) throws -> T {
        guard let f = lookup(name) else { throw NoiseError.device("Vulkan \(what) lacks \(name)") }
        return unsafeBitCast(f, to: T.self)
    }

    /// A limit given per dimension (x, y, z) as an array.
    static func ints(_ t: (UInt32, UInt32, UInt32)) -> [Int] { [Int(t.0), Int(t.1), Int(t.2)] }

    static func check(_ r: VkResult, _ call: String) throws {
        guard r == VK_SUCCESS else { throw NoiseError.device("Vulkan \(call) failed: \(name(r))") }
    }

    static func name(_ r: VkResult) -> String {
        switch r {
        case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY"
        case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY (device memory exhausted)"
        case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED"
        case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST"
        case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS"
        case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT"
        case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER"
        case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY"
        case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL"
        case VK_TIMEOUT: return "VK_TIMEOUT"
        default: return "VkResult \(r.rawValue)"
        }
    }

    /// PCI vendor ids for display only (no code path depends on the vendor).
    static func vendorName(_ id: UInt32) -> String {
        switch id {
        case 0x10DE: return "NVIDIA"
        case 0x1002: return "AMD"
        case 0x8086: return "Intel"
        case 0x13B5: return "ARM"
        case 0x5143: return "Qualcomm"
        case 0x106B: return "Apple"
        case 0x10005: return "Mesa"
        default: return String(format: "vendor 0x%04x", id)
        }
    }

    static func isDiscrete(_ p: VkPhysicalDeviceProperties) -> Bool {
        p.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
    }

    /// Every Vulkan device, or the reason there is none.
    static func allDevices(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> (devices: [DeviceInfo], error: String?)
    {
        do {
            let inst = try VulkanInstance.shared(environment: environment)
            let infos = inst.physicalDevices.indices.map { inst.info($0) }
            return (infos, infos.isEmpty ? "no Vulkan device found" : nil)
        } catch {
            return ([], "\(error)")
        }
    }
}
