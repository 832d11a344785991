import Foundation
import NoiseARGPU
import Testing

/// The Vulkan backend's own machinery (the kernels themselves are in the differential and
/// parity tests, which run every Vulkan parameter set): listing, launches folded over the
/// work-group count limit, sub-allocation, fallback for buffers above the binding range, the
/// pipeline cache, and the CLI's errors without a loader.
@Suite(.serialized) struct VulkanTests {
    /// The first Vulkan backend, opened with `extra` in the environment (nil: no Vulkan here;
    /// a failure under NOISEAR_REQUIRE_VULKAN=1).
    static func backend(_ extra: [String: String] = [:]) throws -> VulkanBackend? {
        var found = false
        try withBackends { found = $0.contains { $0 is VulkanBackend } }
        guard found else { return nil }
        return try VulkanBackend(index: 0, environment: testEnvironment(extra))
    }

    @Test func listingShowsLimits() throws {
        guard try Self.backend() != nil else { return }
        let vk = Device.list().devices.filter { $0.backend == "vulkan" }
        #expect(!vk.isEmpty)
        for d in vk {
            #expect(d.id.hasPrefix("vulkan:"))
            #expect((d.limits["maxComputeWorkGroupInvocations"] ?? 0) >= 128, "\(d.limits)")
            #expect((d.limits["maxStorageBufferRange"] ?? 0) >= 1 << 27, "\(d.limits)")
        }
    }

    @Test func foldedLaunchesAndSubAllocation() throws {
        guard let be = try Self.backend() else { return }
        let dev = Device(backend: be)
        // More work groups of 64 than maxComputeWorkGroupCount.x (65,535 on most devices): the
        // 1-D launch is folded over x and y; every element is written exactly once.
        let groupsX = be.info.limits["maxComputeWorkGroupCount.x"] ?? 65535
        let n = min(groupsX, 1 << 20) * 64 + 37
        let t = try Tensor.full([n], 0.625, on: dev)
        let v = try t.toArray()
        #expect(v.count == n && v.allSatisfy { $0 == 0.625 }, "folded fill wrote \(v.filter { $0 != 0.625 }.count) wrong values")
        // Many small tensors share a few device allocations.
        let before = be.memoryBlocks
        let many = try (0..<500).map { try Tensor.full([17 + $0], Float($0), on: dev) }
        #expect(be.memoryBlocks <= before + 1, "\(be.memoryBlocks) blocks for 500 small tensors")
        #expect(try many[499].toArray().allSatisfy { $0 == 499 })
        #expect(be.dispatches > 500 && be.submissions < be.dispatches)
    }

    @Test func bufferAboveTheBindingRangeFallsBack() throws {
        guard let be = try Self.backend() else { return }
        let range = be.info.limits["maxStorageBufferRange"] ?? 0
        guard range > 0 && range <= 1 << 28 else { return }  // (a GPU with a 4 GiB range: too big to test)
        let dev = Device(backend: be)
        var warnings: [String] = []
        dev.warn = { warnings.append($0) }
        let n = range / 4 + 1000
        let t = try Tensor.full([n], -1.5, on: dev)
        #expect(warnings.count == 1 && warnings[0].contains("'fill'"), "\(warnings)")
        let v = try t.toArray()
        #expect(v.first == -1.5 && v.last == -1.5 && v[n / 2] == -1.5)
    }

    @Test func pipelineCacheIsWrittenAndACorruptOneIgnored() throws {
        let dir = try scratchDirectory("vkcache")
        defer { try? FileManager.default.removeItem(at: dir) }
        guard let be = try Self.backend(["NOISEAR_KERNEL_CACHE": dir.path]) else { return }
        let dev = Device(backend: be)
        let want = try (Tensor.randn([3, 50], seed: 4, on: Device.cpuDevice()).softmax()).toArray()
        #expect(nmse(try Tensor.randn([3, 50], seed: 4, on: dev).softmax().toArray(), want) < 1e-12)
        let url = try #require(be.pipelineCacheURL)
        let stored = try Data(contentsOf: url)
        #expect(stored.count > 100)
        // Flip bytes in the middle: the next backend starts with an empty cache and works.
        var bad = stored
        for i in stride(from: bad.count / 2, to: min(bad.count, bad.count / 2 + 64), by: 1) { bad[i] ^= 0x5A }
        try bad.write(to: url)
        guard let again = try Self.backend(["NOISEAR_KERNEL_CACHE": dir.path]) else { return }
        let got = try Tensor.randn([3, 50], seed: 4, on: Device(backend: again)).softmax().toArray()
        #expect(nmse(got, want) < 1e-12)
        try again.synchronize()
        #expect(try Data(contentsOf: url) != bad, "the corrupt entry was not rewritten")
    }

    @Test func cliErrorsAndAutoWithoutALoader() throws {
        let dir = try scratchDirectory("vkcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("n.safetensors").path
        guard let r = try runCLI(["devices"]) else { return }
        #expect(r.status == 0)
        let noLoader = ["NOISEAR_VULKAN_LIBRARY": "/nonexistent/libvulkan.so.1"]
        guard let e = try runCLI(["noise", "--prompt", "a red circle", "--device", "vulkan", "--out", out],
                                 environment: noLoader) else { return }
        #expect(e.status != 0 && !e.signaled)
        let lines = e.stderr.split(separator: "\n")
        #expect(lines.count == 1 && e.stderr.contains("no Vulkan loader"), "\(e.stderr)")
        guard let a = try runCLI(["noise", "--prompt", "a red circle", "--device", "auto", "--out", out],
                                 environment: noLoader) else { return }
        #expect(a.status == 0, "\(a.stderr)")
        guard try Self.backend() != nil else { return }
        #expect(r.stdout.contains("vulkan:0") && r.stdout.contains("maxStorageBufferRange"))
        guard let bad = try runCLI(["noise", "--prompt", "a red circle", "--device", "vulkan:99", "--out", out])
        else { return }
        #expect(bad.status != 0 && bad.stderr.contains("no Vulkan device 99"), "\(bad.stderr)")
        // The same noise on Vulkan as on the CPU backend.
        var outs: [[Float]] = []
        for d in ["cpu", "vulkan"] {
            let f = dir.appendingPathComponent("\(d).safetensors")
            guard let n = try runCLI(["noise", "--prompt", "a green triangle", "--seed", "5", "--device", d, "--out", f.path])
            else { return }
            #expect(n.status == 0, "\(n.stderr)")
            outs.append(try SafeTensorsFile.read(f).tensor("noise").data)
        }
        #expect(outs[0].count == 3 * 32 * 32 && nmse(outs[1], outs[0]) < 1e-10)
    }
}
