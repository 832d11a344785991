import Foundation

/// Up-front memory checks (their counting; the checks against a device are in
/// Device/DeviceMemoryBudget.swift): a request whose working set cannot fit on the device (or, for the
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
}
