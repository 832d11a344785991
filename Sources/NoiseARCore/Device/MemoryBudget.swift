import Foundation

/// Up-front memory checks: a request whose working set cannot fit on the device (or, for the
/// CPU backend, in host memory) is refused with its estimate before anything is allocated,
/// instead of growing until the system kills the process.
public enum MemoryBudget {
    /// Bytes of float32 tensors with these element counts; nil when the sum overflows.
    public static func floatBytes(_ counts: [Int]) -> UInt64? {
        var total: UInt64 = 0
        for c in counts {
            guard c >= 0 else { return nil }
            let (b, o1) = UInt64(c).multipliedReportingOverflow(by: 4)
            let (t, o2) = total.addingReportingOverflow(b)
            if o1 || o2 { return nil }
            total = t
        }
        return total
    }

    /// Product of sizes, nil on overflow or a negative size.
    public static func product(_ sizes: [Int]) -> Int? { checkedProduct(sizes) }

    /// "1.5 GiB" style.
    public static func describe(_ bytes: Double) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var v = bytes, u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(Int(v)) bytes" : String(format: "%.1f %@", v, units[u])
    }

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
