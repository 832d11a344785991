import Foundation

/// Kernel tuning parameters, passed to the OpenCL compiler as `-D NAME=VALUE` defines.
///
/// Two sets are kept as data, chosen by device type (never by vendor name):
/// - `cpu`: for CPU devices such as PoCL: register-blocked packed GEMM with float16 vectors, one
///   work item per row for row-wise kernels, several queries per attention work item.
/// - `gpu`: for GPUs and accelerators: local-memory GEMM tiles with coalesced loads and a 4x4
///   block per item, work-group reductions, K/V staged in local memory for attention.
/// `NOISEAR_KERNEL_PROFILE=cpu|gpu` forces a set; `NOISEAR_KERNEL_DEFINES="A=1,B=2"` overrides
/// single values (for tuning).
public struct KernelParams: Sendable, Equatable {
    public enum Profile: String, Sendable, CaseIterable { case cpu, gpu }
    public var profile: Profile
    public var values: [String: Int]

    public static let cpuDefaults: [String: Int] = [
        "GEMM_VARIANT": 0, "GEMM_MR": 8, "GEMM_NV": 2, "GEMM_UNROLL": 2,
        "ROW_WG": 1,
        "ATT_QB": 4, "ATT_KB": 16, "ATT_WG": 1, "ATT_LOCAL": 0,
    ]
    public static let gpuDefaults: [String: Int] = [
        "GEMM_VARIANT": 1, "GEMM_TSM": 64, "GEMM_TSN": 64, "GEMM_TSK": 16,
        "GEMM_WPTM": 4, "GEMM_WPTN": 4,
        "ROW_WG": 64,
        "ATT_QB": 1, "ATT_KB": 32, "ATT_WG": 64, "ATT_LOCAL": 1,
    ]

    public init(profile: Profile, overrides: [String: Int] = [:]) {
        self.profile = profile
        values = (profile == .cpu ? Self.cpuDefaults : Self.gpuDefaults)
            .merging(overrides) { _, new in new }
    }

    /// The set for a device kind, with the environment's overrides applied.
    public static func forDevice(_ kind: DeviceInfo.Kind,
                                 environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> KernelParams
    {
        var profile: Profile = kind == .cpu ? .cpu : .gpu
        if let forced = environment["NOISEAR_KERNEL_PROFILE"], !forced.isEmpty {
            guard let p = Profile(rawValue: forced) else {
                throw NoiseError.invalidArgument(
                    "NOISEAR_KERNEL_PROFILE=\(forced): expected cpu or gpu")
            }
            profile = p
        }
        var overrides: [String: Int] = [:]
        if let text = environment["NOISEAR_KERNEL_DEFINES"], !text.isEmpty {
            for item in text.split(separator: ",") {
                let kv = item.split(separator: "=", maxSplits: 1).map {
                    $0.trimmingCharacters(in: .whitespaces)
                }
                guard kv.count == 2, let v = Int(kv[1]), !kv[0].isEmpty else {
                    throw NoiseError.invalidArgument(
                        "NOISEAR_KERNEL_DEFINES entry '\(item)': expected NAME=INTEGER")
                }
                overrides[kv[0]] = v
            }
        }
        return KernelParams(profile: profile, overrides: overrides)
    }

    public subscript(_ name: String) -> Int { values[name] ?? 0 }

    /// Compiler options for these parameters plus extra defines, in a stable order.
    public func options(extra: [String: Int] = [:]) -> String {
        let all = values.merging(extra) { _, new in new }
        return (["-cl-std=CL1.2"] + all.keys.sorted().map { "-D \($0)=\(all[$0] ?? 0)" })
            .joined(separator: " ")
    }
}
