import Foundation
import NoiseARGPU
import Testing

/// Deterministic test randomness (SplitMix64).
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
    /// Random values away from zero: magnitude in [0.1, 1], random sign.
    mutating func values(_ n: Int, lo: Float = 0.1, hi: Float = 1) -> [Float] {
        (0..<n).map { _ in
            let m = lo + (hi - lo) * unit()
            return next() & 1 == 0 ? m : -m
        }
    }
    /// Positive values in [lo, hi].
    mutating func positive(_ n: Int, lo: Float = 0.2, hi: Float = 2) -> [Float] {
        (0..<n).map { _ in lo + (hi - lo) * unit() }
    }
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// Uniform in 0..<n (n > 0).
    mutating func below(_ n: Int) -> Int { int(n) }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

/// Normalised mean squared error of `a` against reference `b`; infinite when either has a NaN.
func nmse(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count else { return .infinity }
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        let d = Double(x) - Double(y)
        num += d * d
        den += Double(y) * Double(y)
    }
    if den == 0 { return num == 0 ? 0 : .infinity }
    return num / den
}

/// Where the reference fixtures are, or nil (with a printed reason) when absent.
func fixturesDirectory() -> URL? {
    let env = ProcessInfo.processInfo.environment["NOISEAR_FIXTURES"]
    let url = env.map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/fixtures")
    if FileManager.default.fileExists(atPath: url.path) { return url }
    // CI always has the fixtures: there a missing one fails the test instead of skipping it.
    if ProcessInfo.processInfo.environment["CI"] == "true" {
        Issue.record("reference fixtures not found at \(url.path) (CI must provide them; set NOISEAR_FIXTURES)")
    }
    print("skipping: reference fixtures not found at \(url.path) (set NOISEAR_FIXTURES)")
    return nil
}

/// A private kernel cache folder per test process.
let testKernelCache: String = {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("noisear-test-cache-\(ProcessInfo.processInfo.processIdentifier)")
    return dir.path
}()

/// Environment for OpenCL backends in tests (private kernel cache).
func testEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["NOISEAR_KERNEL_CACHE"] = testKernelCache
    env["NOISEAR_DISABLE_OPS"] = nil
    env["NOISEAR_KERNEL_DEFINES"] = nil
    env["NOISEAR_KERNEL_PROFILE"] = nil
    for (k, v) in extra { env[k] = v }
    return env
}

/// OpenCL backends to test against the CPU: device 0 with its CPU-style parameter set and
/// with the GPU-style set. Empty (with a printed reason) when no OpenCL device exists; fails
/// when NOISEAR_REQUIRE_OPENCL=1 (CI) and none exists.
func openCLBackends() throws -> [OpenCLBackend] {
    guard let first = Device.list().devices.first(where: { $0.backend == "opencl" }) else {
        if ProcessInfo.processInfo.environment["NOISEAR_REQUIRE_OPENCL"] == "1" {
            throw NoiseError.device("NOISEAR_REQUIRE_OPENCL=1 but no OpenCL device was found")
        }
        print("skipping OpenCL: no OpenCL device found")
        return []
    }
    _ = first
    return try KernelParams.Profile.allCases.map {
        try OpenCLBackend(index: 0, params: KernelParams(profile: $0), environment: testEnvironment())
    }
}

/// One shared set of OpenCL backends per test process (program builds are the slow part),
/// used under a lock: OpenCL tests run one at a time, CPU-only tests in parallel.
nonisolated(unsafe) private var sharedCL: [OpenCLBackend]? = nil
private let sharedCLLock = NSLock()
func withCL(_ body: ([OpenCLBackend]) throws -> Void) throws {
    sharedCLLock.lock()
    defer { sharedCLLock.unlock() }
    if sharedCL == nil { sharedCL = try openCLBackends() }
    try body(sharedCL ?? [])
}

/// Vulkan backends to test against the CPU: device 0 with the GPU parameter set and with the
/// CPU set's row and attention values (one item per row, several queries per item, K/V from
/// global memory). Empty (with a printed reason) when no Vulkan device exists; fails when
/// NOISEAR_REQUIRE_VULKAN=1 (CI, where Mesa's lavapipe is installed) and none exists.
func vulkanBackends() throws -> [VulkanBackend] {
    let (devices, notes) = Device.list()
    guard devices.contains(where: { $0.backend == "vulkan" }) else {
        let why = notes.first { $0.hasPrefix("Vulkan") } ?? "no Vulkan device found"
        if ProcessInfo.processInfo.environment["NOISEAR_REQUIRE_VULKAN"] == "1" {
            throw NoiseError.device("NOISEAR_REQUIRE_VULKAN=1 but \(why)")
        }
        print("skipping Vulkan: \(why)")
        return []
    }
    return [try VulkanBackend(index: 0, environment: testEnvironment()),
            try VulkanBackend(index: 0, environment: testEnvironment(["NOISEAR_KERNEL_PROFILE": "cpu"]))]
}

nonisolated(unsafe) private var sharedVK: [VulkanBackend]? = nil

/// Every kernel backend (OpenCL parameter sets, then Vulkan ones), under the same lock as
/// `withCL`: the differential and parity tests run each of them against the CPU backend.
func withBackends(_ body: ([any KernelBackend]) throws -> Void) throws {
    try withCL { cl in
        if sharedVK == nil { sharedVK = try vulkanBackends() }
        try body(cl.map { $0 as any KernelBackend } + (sharedVK ?? []).map { $0 as any KernelBackend })
    }
}

extension KernelBackend {
    /// "opencl:0/cpu", "vulkan:0/gpu": the device and the parameter set, for messages.
    var label: String { "\(info.id)/\(params.profile)" }
}

/// A fresh temporary folder for one test (removed first if a killed run left it).
func scratchDirectory(_ name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-\(name)-\(getpid())")
    try? FileManager.default.removeItem(at: dir)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}
