import Foundation

/// The device side of the up-front memory checks (the counting is in Core/MemoryBudget.swift).
extension MemoryBudget {
    /// The memory a device can give one job: its global memory (OpenCL) or the host's
    /// physical memory (CPU backend).
    public static func capacity(of device: Device) -> UInt64 {
        let host = ProcessInfo.processInfo.physicalMemory
        return device.isCPU ? host : device.info.memoryBytes
    }

    /// Throws when `bytes` (nil: too large to count) exceed the device's capacity. `what` names
    /// the request in the message, e.g. "sample --batch 100000".
    public static func check(_ bytes: UInt64?, on device: Device, what: String) throws {
        let cap = capacity(of: device)
        let place = device.isCPU ? "host memory" : "\(device.info.id) (\(device.info.name))"
        guard let bytes else {
            throw NoiseError.outOfMemory("\(what) needs more memory than can be counted; \(place) has \(describe(Double(cap)))")
        }
        if bytes > cap {
            throw NoiseError.outOfMemory(
                "\(what) needs about \(describe(Double(bytes))) but \(place) has \(describe(Double(cap))): use a smaller size or batch")
        }
        // Host-side copies (inputs, outputs, reference runs) also live in host memory.
        if !device.isCPU && bytes > ProcessInfo.processInfo.physicalMemory {
            throw NoiseError.outOfMemory(
                "\(what) needs about \(describe(Double(bytes))) of host memory for its copies but the host has \(describe(Double(ProcessInfo.processInfo.physicalMemory)))")
        }
    }
}
