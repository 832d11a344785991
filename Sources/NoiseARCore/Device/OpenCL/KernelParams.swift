import Foundation

/// The limits of an OpenCL device that bound the kernel parameters (queried when an
/// `OpenCLBackend` opens the device).
public struct KernelLimits: Sendable, Equatable {
    /// CL_DEVICE_MAX_WORK_GROUP_SIZE.
    public var maxWorkGroupSize: Int
    /// CL_DEVICE_MAX_WORK_ITEM_SIZES (one entry per dimension).
    public var maxWorkItemSizes: [Int]
    /// CL_DEVICE_LOCAL_MEM_SIZE in bytes.
    public var localMemoryBytes: Int
    /// Whether the device has cl_khr_fp64 (the SVD kernels then reduce in double).
    public var fp64: Bool

    public init(maxWorkGroupSize: Int, maxWorkItemSizes: [Int], localMemoryBytes: Int, fp64: Bool) {
        self.maxWorkGroupSize = maxWorkGroupSize
        self.maxWorkItemSizes = maxWorkItemSizes
        self.localMemoryBytes = localMemoryBytes
        self.fp64 = fp64
    }

    /// The largest local size along dimension `dim` (work-group and work-item limits).
    func maxLocal(_ dim: Int) -> Int {
        let item = dim < maxWorkItemSizes.count ? maxWorkItemSizes[dim] : maxWorkGroupSize
        return max(1, min(maxWorkGroupSize, item))
    }
}

/// Kernel tuning parameters, passed to the OpenCL compiler as `-D NAME=VALUE` defines.
///
/// Two sets are kept as data, chosen by device type (never by vendor name):
/// - `cpu`: for CPU devices such as PoCL: register-blocked packed GEMM with float16 vectors, one
///   work item per row for row-wise kernels, several queries per attention work item, direct
///   convolution tiles with one item per row of 64 pixels (float16 accumulators).
/// - `gpu`: for GPUs and accelerators: local-memory GEMM tiles with coalesced loads and a 4x4
///   block per item, work-group reductions, K/V staged in local memory for attention, direct
///   convolution tiles of 32 channels x 64 pixels at 4x4 per item.
/// `NOISEAR_KERNEL_PROFILE=cpu|gpu` forces a set; `NOISEAR_KERNEL_DEFINES="A=1,B=2"` overrides
/// single values (for tuning). `validate(for:)` checks every value against what the kernels
/// and the device allow; `OpenCLBackend` calls it before building any program.
public struct KernelParams: Sendable, Equatable {
    public enum Profile: String, Sendable, CaseIterable { case cpu, gpu }
    public var profile: Profile
    public var values: [String: Int]

    public static let cpuDefaults: [String: Int] = [
        "GEMM_VARIANT": 0, "GEMM_MR": 8, "GEMM_NV": 2, "GEMM_UNROLL": 2,
        "ROW_WG": 1,
        "ATT_QB": 4, "ATT_KB": 16, "ATT_WG": 1, "ATT_LOCAL": 0,
        // one item per row of 64 pixels, 8 channels each (float16 accumulators, as gemm_packed)
        "CONV_TSM": 64, "CONV_TSN": 64, "CONV_TSK": 16, "CONV_WPTM": 8, "CONV_WPTN": 64,
    ]
    public static let gpuDefaults: [String: Int] = [
        "GEMM_VARIANT": 1, "GEMM_TSM": 64, "GEMM_TSN": 64, "GEMM_TSK": 16,
        "GEMM_WPTM": 4, "GEMM_WPTN": 4,
        "ROW_WG": 64,
        "ATT_QB": 1, "ATT_KB": 32, "ATT_WG": 64, "ATT_LOCAL": 1,
        // 16 x 8 = 128 items and 7.6 KB of local memory: within every Vulkan device's minimums
        "CONV_TSM": 32, "CONV_TSN": 64, "CONV_TSK": 16, "CONV_WPTM": 4, "CONV_WPTN": 4,
    ]

    /// The values the kernels fall back to (`#ifndef` in Kernels/*.cl) when a set lacks a name;
    /// the host reads the same through the subscript, so launch geometry and kernel agree.
    static let kernelDefaults: [String: Int] = [
        "GEMM_MR": 8, "GEMM_NV": 2, "GEMM_TSM": 64, "GEMM_TSN": 64, "GEMM_TSK": 16,
        "GEMM_WPTM": 4, "GEMM_WPTN": 4, "ROW_WG": 64,
        "ATT_QB": 1, "ATT_KB": 16, "ATT_WG": 1, "ATT_LOCAL": 0,
        "CONV_TSM": 64, "CONV_TSN": 64, "CONV_TSK": 16, "CONV_WPTM": 4, "CONV_WPTN": 4,
    ]

    /// Every parameter a set may hold (the kernels' defines and the host-side GEMM_VARIANT,
    /// GEMM_LWG and SVD_WG).
    public static let names: [String] = [
        "ATT_KB", "ATT_LOCAL", "ATT_QB", "ATT_WG",
        "CONV_TSK", "CONV_TSM", "CONV_TSN", "CONV_WPTM", "CONV_WPTN",
        "GEMM_LWG", "GEMM_MR", "GEMM_NV", "GEMM_TSK", "GEMM_TSM", "GEMM_TSN", "GEMM_UNROLL",
        "GEMM_VARIANT", "GEMM_WPTM", "GEMM_WPTN",
        "ROW_WG", "SVD_WG",
    ]

    /// Upper bounds of the register-blocked sizes (private arrays in the kernels).
    static let maxGemmMR = 32, maxUnroll = 32, maxTile = 1024, maxTileK = 256, maxWorkPerItem = 16
    static let maxAttQB = 16, maxAttKB = 128
    /// Pixels per item of the direct convolution: up to four float16 accumulators per row.
    static let maxConvPixelsPerItem = 64

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
                guard names.contains(kv[0]) else {
                    throw NoiseError.invalidArgument(
                        "NOISEAR_KERNEL_DEFINES: unknown parameter \(kv[0]); valid names: \(names.joined(separator: ", "))")
                }
                overrides[kv[0]] = v
            }
        }
        return KernelParams(profile: profile, overrides: overrides)
    }

    /// A parameter's value: the set's, else the kernels' default, else 0.
    public subscript(_ name: String) -> Int { values[name] ?? Self.kernelDefaults[name] ?? 0 }

    /// Compiler options for these parameters plus extra defines, in a stable order.
    public func options(extra: [String: Int] = [:]) -> String {
        let all = values.merging(extra) { _, new in new }
        return (["-cl-std=CL1.2"] + all.keys.sorted().map { "-D \($0)=\(all[$0] ?? 0)" })
            .joined(separator: " ")
    }

    // MARK: validation

    /// Checks every parameter against the kernels' constraints and the device's limits; throws
    /// `NoiseError.invalidArgument` naming the first parameter at fault, its value and the
    /// legal range. Unknown names are rejected with the list of valid ones.
    public func validate(for limits: KernelLimits) throws {
        if let name = values.keys.filter({ !Self.names.contains($0) }).sorted().first {
            throw NoiseError.invalidArgument(
                "unknown kernel parameter \(name)=\(values[name] ?? 0); valid names: \(Self.names.joined(separator: ", "))")
        }
        let local0 = limits.maxLocal(0), local1 = limits.maxLocal(1)
        let localBytes = max(limits.localMemoryBytes, 0)

        try inRange("GEMM_VARIANT", 0...1, "0 (packed, register-blocked) or 1 (local-memory tiles)")
        try inRange("GEMM_MR", 1...Self.maxGemmMR, "1...\(Self.maxGemmMR) (rows per register block)")
        try inRange("GEMM_NV", 1...2, "1 or 2 (float16 accumulators per row)")
        if values["GEMM_UNROLL"] != nil {
            try inRange("GEMM_UNROLL", 1...Self.maxUnroll, "1...\(Self.maxUnroll)")
        }
        try inRange("GEMM_LWG", 0...local0,
                    "0 (default) to \(local0) (the device's work-group size limit)")

        // Row-wise kernels (softmax, norms, skinny GEMM): tree reductions over ROW_WG items,
        // the skinny GEMM holding SKINNY_M (4) floats per item in local memory.
        let rowMax = min(local0, localBytes / 16)
        try powerOfTwo("ROW_WG", 1, rowMax, "the device's work-group size and local memory limits")

        // SVD: tree reductions of three accumulators (double on fp64 devices) per item.
        let svdMax = min(local0, localBytes / (3 * (limits.fp64 ? 8 : 4)))
        if self["SVD_WG"] != 0 {
            try powerOfTwo("SVD_WG", 1, svdMax, "0 for automatic, else the device's work-group size and local memory limits")
        }

        try inRange("ATT_QB", 1...Self.maxAttQB, "1...\(Self.maxAttQB) (queries per work item)")
        try inRange("ATT_KB", 1...Self.maxAttKB, "1...\(Self.maxAttKB) (keys per block)")
        try inRange("ATT_WG", 1...local0, "1...\(local0) (the device's work-group size limit)")
        try inRange("ATT_LOCAL", 0...1, "0 (K/V read from global memory) or 1 (staged in local memory)")

        // Tiled GEMM: compiled into every gemm program, so its static shape is always checked;
        // the device limits only when it runs (GEMM_VARIANT 1) or its sizes were given.
        try inRange("GEMM_TSM", 1...Self.maxTile, "1...\(Self.maxTile)")
        try inRange("GEMM_TSN", 1...Self.maxTile, "1...\(Self.maxTile)")
        try inRange("GEMM_TSK", 1...Self.maxTileK, "1...\(Self.maxTileK)")
        try inRange("GEMM_WPTM", 1...Self.maxWorkPerItem, "1...\(Self.maxWorkPerItem)")
        try inRange("GEMM_WPTN", 1...Self.maxWorkPerItem, "1...\(Self.maxWorkPerItem)")
        let tsm = self["GEMM_TSM"], tsn = self["GEMM_TSN"], tsk = self["GEMM_TSK"]
        let wptm = self["GEMM_WPTM"], wptn = self["GEMM_WPTN"]
        try requireWholeItems("GEMM")
        let tiledNames = ["GEMM_TSM", "GEMM_TSN", "GEMM_TSK", "GEMM_WPTM", "GEMM_WPTN"]
        if self["GEMM_VARIANT"] == 1 || tiledNames.contains(where: { values[$0] != nil }) {
            let rtsm = tsm / wptm, rtsn = tsn / wptn
            try require(
                rtsm <= local0 && rtsn <= local1 && rtsm * rtsn <= limits.maxWorkGroupSize,
                "kernel parameters GEMM_TSM=\(tsm), GEMM_WPTM=\(wptm), GEMM_TSN=\(tsn), GEMM_WPTN=\(wptn): "
                    + "a tile needs (TSM/WPTM)x(TSN/WPTN) = \(rtsm)x\(rtsn) work items, expected at most "
                    + "\(limits.maxWorkGroupSize) in all (\(local0)x\(local1) per dimension) on this device")
            let bytes = 4 * tsk * (tsm + tsn + 1)
            try require(
                bytes <= localBytes,
                "kernel parameters GEMM_TSK=\(tsk), GEMM_TSM=\(tsm), GEMM_TSN=\(tsn): the tiles need "
                    + "4*TSK*(TSM+TSN+1) = \(bytes) bytes of local memory, expected at most \(localBytes) on this device")
        }

        // Direct convolution: compiled into every conv program, so its static shape is always
        // checked; the device limits when a value differs from the set's (given by the user).
        // The set's own tile on a device too small for it makes `supports` decline the op (the
        // convolution then takes im2col + GEMM).
        try inRange("CONV_TSM", 1...Self.maxTile, "1...\(Self.maxTile)")
        try inRange("CONV_TSN", 1...Self.maxTile, "1...\(Self.maxTile)")
        try inRange("CONV_TSK", 1...Self.maxTileK, "1...\(Self.maxTileK)")
        try inRange("CONV_WPTM", 1...Self.maxWorkPerItem, "1...\(Self.maxWorkPerItem)")
        try inRange("CONV_WPTN", 1...Self.maxConvPixelsPerItem,
                    "1...\(Self.maxConvPixelsPerItem) (pixels per item; a multiple of 16 for the vector form)")
        let ctsm = self["CONV_TSM"], ctsn = self["CONV_TSN"], ctsk = self["CONV_TSK"]
        let cwptm = self["CONV_WPTM"], cwptn = self["CONV_WPTN"]
        try requireWholeItems("CONV")
        let setValues = profile == .cpu ? Self.cpuDefaults : Self.gpuDefaults
        if Self.convNames.contains(where: { values[$0] != setValues[$0] }) && !convTileFits(limits) {
            let t = convTile
            throw NoiseError.invalidArgument(
                "kernel parameters CONV_TSM=\(ctsm), CONV_WPTM=\(cwptm), CONV_TSN=\(ctsn), CONV_WPTN=\(cwptn), CONV_TSK=\(ctsk): "
                    + "a tile needs (TSN/WPTN)x(TSM/WPTM) = \(t.pixels)x\(t.channels) work items and \(t.bytes) bytes of "
                    + "local memory, expected at most \(limits.maxWorkGroupSize) items (\(local0)x\(local1) per dimension) "
                    + "and \(localBytes) bytes on this device")
        }
    }

    /// The direct convolution's tile parameters (conv2d_direct in Kernels/conv.cl).
    static let convNames = ["CONV_TSM", "CONV_TSN", "CONV_TSK", "CONV_WPTM", "CONV_WPTN"]

    /// The direct convolution's work group: items along the pixels (dimension 0) and along the
    /// output channels (dimension 1), and the local memory of its tiles and tables in bytes.
    public var convTile: (pixels: Int, channels: Int, bytes: Int) {
        let tsm = self["CONV_TSM"], tsn = self["CONV_TSN"], tsk = self["CONV_TSK"]
        let pixels = tsn / max(self["CONV_WPTN"], 1), channels = tsm / max(self["CONV_WPTM"], 1)
        return (pixels, channels, 4 * (tsk * (tsm + 1) + tsk * tsn + 4 * tsn + 6 * tsk))
    }

    /// Whether the direct convolution's work group fits a device's work-group, work-item and
    /// local-memory limits (else the kernel backends decline `Op.Conv2d`).
    public func convTileFits(_ limits: KernelLimits) -> Bool {
        let t = convTile
        return t.pixels <= limits.maxLocal(0) && t.channels <= limits.maxLocal(1)
            && t.pixels * t.channels <= limits.maxWorkGroupSize && t.bytes <= limits.localMemoryBytes
    }

    /// PREFIX_TSM and PREFIX_TSN are whole multiples of the work per item (PREFIX_WPTM, PREFIX_WPTN).
    private func requireWholeItems(_ prefix: String) throws {
        for (tile, work) in [("TSM", "WPTM"), ("TSN", "WPTN")] {
            let t = self[prefix + "_" + tile], w = self[prefix + "_" + work]
            try require(t % w == 0, "kernel parameter \(prefix)_\(tile)=\(t): expected a multiple of \(prefix)_\(work)=\(w)")
        }
    }

    private func inRange(_ name: String, _ range: ClosedRange<Int>, _ expected: String) throws {
        let v = self[name]
        try require(range.contains(v), "kernel parameter \(name)=\(v): expected \(expected)")
    }

    private func powerOfTwo(_ name: String, _ lo: Int, _ hi: Int, _ why: String) throws {
        let v = self[name]
        try require(v >= lo && v <= hi && v & (v - 1) == 0,
                    "kernel parameter \(name)=\(v): expected a power of two in \(lo)...\(hi) (\(why))")
    }
}
