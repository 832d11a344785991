import CCrypto
import Foundation
import NoiseARGPU
import Testing

// Never crash on input: kernel parameters, the kernel disk cache and
// NOISEAR_DISABLE_OPS. Every OpenCL backend here is opened inside `withCL` (one test at a time
// uses the OpenCL runtime) with a private kernel cache folder.

/// Runs `op` on a backend: uploads `inputs`, runs, returns the contents of `outputs` buffers
/// of the given sizes (pre-filled with a non-zero value).
private func runOp(_ be: any Backend, inputs: [[Float]], outputs: [Int],
                   _ op: (any Backend, [BufRef], [BufRef]) throws -> Void) throws -> [[Float]] {
    let ins = try inputs.map { values -> BufRef in
        let r = BufRef(try be.allocate(values.count))
        try values.withUnsafeBufferPointer { try be.upload($0, to: r) }
        return r
    }
    let outs = try outputs.map { n -> BufRef in
        let r = BufRef(try be.allocate(n))
        try be.fill(r, count: n, value: 0.5)
        return r
    }
    try op(be, ins, outs)
    try be.synchronize()
    return try zip(outs, outputs).map { r, n in
        var host = [Float](repeating: 0, count: n)
        try host.withUnsafeMutableBufferPointer { try be.download(r, into: $0) }
        return host
    }
}

/// A small softmax and GEMM on `be`, checked against the CPU backend.
private func checkSoftmaxAndGemm(_ be: any Backend, _ tag: String) throws {
    var rng = TestRNG(90)
    let x = rng.values(5 * 37)
    let sm: (any Backend, [BufRef], [BufRef]) throws -> Void = { b, i, o in
        try b.softmax(rows: 5, cols: 37, log: false, x: i[0], y: o[0])
    }
    let got = try runOp(be, inputs: [x], outputs: [5 * 37], sm)
    let want = try runOp(CPUBackend(), inputs: [x], outputs: [5 * 37], sm)
    #expect(nmse(got[0], want[0]) < 1e-10, "\(tag): softmax differs from the CPU")
    for (m, n, k) in [(3, 19, 21), (21, 35, 13)] {  // skinny and regular
        let a = rng.values(m * k), b = rng.values(k * n)
        let mm: (any Backend, [BufRef], [BufRef]) throws -> Void = { be, i, o in
            try be.gemm(GemmDesc(m: m, n: n, k: k), a: i[0], b: i[1], c: o[0])
        }
        let g = try runOp(be, inputs: [a, b], outputs: [m * n], mm)
        let w = try runOp(CPUBackend(), inputs: [a, b], outputs: [m * n], mm)
        #expect(nmse(g[0], w[0]) < 1e-10, "\(tag): gemm \(m)x\(n)x\(k) differs from the CPU")
    }
}

/// Whether an OpenCL device exists (asked under the OpenCL test lock).
private func hasOpenCL() throws -> Bool {
    var found = false
    try withCL { found = !$0.isEmpty }
    return found
}

/// The message of the `invalidArgument` error `body` throws, or nil (recording an issue).
private func invalidArgumentMessage(_ what: String, _ body: () throws -> Void) -> String? {
    do {
        try body()
        Issue.record("\(what): accepted, expected an invalid-argument error")
    } catch NoiseError.invalidArgument(let message) {
        return message
    } catch {
        Issue.record("\(what): \(error), expected an invalid-argument error")
    }
    return nil
}

@Suite(.serialized) struct KernelParamsValidationTests {
    /// Each bad define is rejected when the backend opens, in one line naming the parameter.
    @Test func badDefinesAreRejectedByName() throws {
        try withCL { backends in
            guard let limits = backends.first?.limits else { return }
            let maxWG = limits.maxWorkGroupSize
            let cases: [(define: String, name: String)] = [
                ("GEMM_MR=0", "GEMM_MR"), ("GEMM_NV=0", "GEMM_NV"), ("ATT_WG=0", "ATT_WG"),
                ("ATT_QB=0", "ATT_QB"), ("GEMM_MR=1000000", "GEMM_MR"), ("ROW_WG=0", "ROW_WG"),
                ("GEMM_NV=3", "GEMM_NV"), ("GEMM_VARIANT=2", "GEMM_VARIANT"),
                ("GEMM_UNROLL=0", "GEMM_UNROLL"), ("ATT_KB=0", "ATT_KB"), ("ATT_KB=100000", "ATT_KB"),
                ("ATT_LOCAL=2", "ATT_LOCAL"), ("ATT_QB=-3", "ATT_QB"),
                // power of two where tree reductions need one
                ("ROW_WG=3", "ROW_WG"), ("ROW_WG=48", "ROW_WG"), ("SVD_WG=12", "SVD_WG"),
                // beyond the device's work-group size
                ("ROW_WG=\(2 * maxWG)", "ROW_WG"), ("ATT_WG=\(maxWG + 1)", "ATT_WG"),
                ("GEMM_LWG=\(maxWG + 1)", "GEMM_LWG"), ("SVD_WG=\(2 * maxWG)", "SVD_WG"),
                // tile shapes
                ("GEMM_TSM=62", "GEMM_TSM"), ("GEMM_TSN=30,GEMM_WPTN=4", "GEMM_TSN"),
                ("GEMM_TSK=0", "GEMM_TSK"), ("GEMM_WPTM=0", "GEMM_WPTM"),
                // unknown names, including build-time defines that are not tunable
                ("FOO=1", "FOO"), ("ATT_D=64", "ATT_D"), ("SKINNY_M=8", "SKINNY_M"),
            ]
            for profile in ["cpu", "gpu"] {
                for c in cases {
                    let env = testEnvironment(["NOISEAR_KERNEL_DEFINES": c.define, "NOISEAR_KERNEL_PROFILE": profile])
                    guard let message = invalidArgumentMessage("\(c.define) [\(profile)]", {
                        _ = try OpenCLBackend(index: 0, environment: env)
                    }) else { continue }
                    #expect(message.contains(c.name), "\(c.define): \(message)")
                    #expect(!message.contains("\n"), "\(c.define): one line expected: \(message)")
                    if c.define.hasPrefix("FOO") {
                        #expect(message.contains("ROW_WG") && message.contains("GEMM_MR"),
                                "unknown names should list the valid ones: \(message)")
                    }
                }
            }
        }
    }

    /// Parameters given programmatically are validated too, including tile geometry against
    /// the device's work-group size and local memory.
    @Test func programmaticParamsAreValidated() throws {
        try withCL { backends in
            guard let limits = backends.first?.limits else { return }
            let maxWG = limits.maxWorkGroupSize
            let bad: [(KernelParams, String)] = [
                (KernelParams(profile: .cpu, overrides: ["GEMM_NV": 0]), "GEMM_NV"),
                (KernelParams(profile: .gpu, overrides: ["ATT_QB": 0]), "ATT_QB"),
                (KernelParams(profile: .cpu, overrides: ["SKINNY_M": 8]), "SKINNY_M"),
                (KernelParams(profile: .gpu, overrides: ["ROW_WG": 2 * maxWG]), "ROW_WG"),
                // 1024 / 1 x 1024 / 1 work items per tile: more than any device allows in one group
                (KernelParams(profile: .gpu, overrides: ["GEMM_TSM": 1024, "GEMM_WPTM": 1,
                                                         "GEMM_TSN": 1024, "GEMM_WPTN": 1]), "GEMM_TSM"),
            ]
            for (params, name) in bad {
                guard let message = invalidArgumentMessage("\(params.values)", {
                    _ = try OpenCLBackend(index: 0, params: params, environment: testEnvironment())
                }) else { continue }
                #expect(message.contains(name), "\(message)")
            }
            var noTile = KernelParams(profile: .gpu)
            noTile.values["GEMM_TSM"] = nil  // falls back to the kernel's default, 64
            #expect(noTile["GEMM_TSM"] == 64)
            try noTile.validate(for: limits)
        }
    }

    /// Validation against made-up device limits (no device needed).
    @Test func limitsOfASmallDevice() throws {
        let small = KernelLimits(maxWorkGroupSize: 128, maxWorkItemSizes: [128, 128, 64],
                                 localMemoryBytes: 16384, fp64: false)
        try KernelParams(profile: .cpu).validate(for: small)
        // The GPU set's 16 x 16 tile needs 256 work items.
        let tiles = invalidArgumentMessage("gpu set on a 128-item device") {
            try KernelParams(profile: .gpu).validate(for: small)
        }
        #expect(tiles?.contains("GEMM_TSM") == true, "\(tiles ?? "")")
        try KernelParams(profile: .gpu, overrides: ["GEMM_TSM": 32, "GEMM_TSN": 32]).validate(for: small)
        // Local memory: TSK 64 x (TSM 64 + TSN 65) floats = 33 KB > 16 KB.
        let local = invalidArgumentMessage("tiles above local memory") {
            try KernelParams(profile: .gpu, overrides: ["GEMM_WPTM": 8, "GEMM_WPTN": 8, "GEMM_TSK": 64])
                .validate(for: small)
        }
        #expect(local?.contains("GEMM_TSK") == true && local?.contains("local memory") == true, "\(local ?? "")")
        let row = invalidArgumentMessage("ROW_WG above the device") {
            try KernelParams(profile: .cpu, overrides: ["ROW_WG": 256]).validate(for: small)
        }
        #expect(row?.contains("ROW_WG=256") == true, "\(row ?? "")")
        // A work-item limit in dimension 1 below the tile's column count.
        let narrow = KernelLimits(maxWorkGroupSize: 1024, maxWorkItemSizes: [1024, 8, 8],
                                  localMemoryBytes: 65536, fp64: true)
        let dim1 = invalidArgumentMessage("tile columns above dimension 1") {
            try KernelParams(profile: .gpu).validate(for: narrow)
        }
        #expect(dim1?.contains("GEMM_TSN") == true, "\(dim1 ?? "")")
        let typical = KernelLimits(maxWorkGroupSize: 1024, maxWorkItemSizes: [1024, 1024, 64],
                                   localMemoryBytes: 49152, fp64: true)
        try KernelParams(profile: .gpu).validate(for: typical)
        try KernelParams(profile: .cpu).validate(for: typical)
    }

    /// Legal tunings (other register blocks, small work-groups) still give the CPU's results.
    @Test func legalTuningsStillWork() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            for defines in ["GEMM_NV=1,GEMM_MR=3,GEMM_UNROLL=1,GEMM_LWG=2", "ROW_WG=4,ATT_QB=2,ATT_KB=8",
                            "GEMM_VARIANT=1,GEMM_TSM=16,GEMM_TSN=8,GEMM_TSK=4,GEMM_WPTM=2,GEMM_WPTN=1"] {
                let env = testEnvironment(["NOISEAR_KERNEL_DEFINES": defines, "NOISEAR_KERNEL_PROFILE": "cpu"])
                let be = try OpenCLBackend(index: 0, environment: env)
                try checkSoftmaxAndGemm(be, defines)
            }
        }
    }

    /// ATT_LOCAL=1 with a head dim whose K/V block does not fit in local memory falls back to
    /// global reads (correct results) instead of failing in the driver.
    @Test func attentionBeyondLocalMemoryFallsBack() throws {
        try withCL { backends in
            guard let limits = backends.first?.limits else { return }
            let kb = 128
            let dim = 16 * (limits.localMemoryBytes / (kb * 2 * 4 * 16) + 1)
            guard dim <= 8192 else {
                print("skipping: local memory of \(limits.localMemoryBytes) bytes needs head dim \(dim)")
                return
            }
            let params = KernelParams(profile: .gpu, overrides: ["ATT_KB": kb, "ATT_LOCAL": 1, "ATT_WG": 4])
            let be = try OpenCLBackend(index: 0, params: params, environment: testEnvironment())
            let d = AttentionDesc(batch: 1, heads: 1, tq: 3, tk: 5, headDim: dim)
            var rng = TestRNG(91)
            let q = rng.values(3 * dim), k = rng.values(5 * dim), v = rng.values(5 * dim)
            let op: (any Backend, [BufRef], [BufRef]) throws -> Void = { b, i, o in
                try b.attention(d, q: i[0], k: i[1], v: i[2], bias: nil, o: o[0])
            }
            let got = try runOp(be, inputs: [q, k, v], outputs: [3 * dim], op)
            let want = try runOp(CPUBackend(), inputs: [q, k, v], outputs: [3 * dim], op)
            #expect(nmse(got[0], want[0]) < 1e-8, "attention with head dim \(dim)")
        }
    }
}

// MARK: kernel disk cache

private func sha256(_ data: Data) -> String {
    var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
    data.withUnsafeBytes { raw in
        _ = SHA256(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &digest)
    }
    return digest.map { String(format: "%02x", $0) }.joined()
}

/// Cache entry layout (KernelCache.swift): magic (16), key (64), size (16 hex), checksum (64), binary.
private let headerLength = 16 + 64 + 16 + 64

/// An entry with the given fields and a checksum computed over header and binary.
private func entry(magic: String = "NOISEAR-CLBIN-2\n", key: String, size: Int, binary: Data) -> Data {
    var head = Data(magic.utf8)
    head.append(Data(key.utf8))
    head.append(Data(String(format: "%016llx", UInt64(size)).utf8))
    var blob = head
    blob.append(Data(sha256(head + binary).utf8))
    blob.append(binary)
    return blob
}

@Suite(.serialized) struct KernelCacheHardeningTests {
    /// A private cache folder for one test.
    private func cacheDir(_ name: String) -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("noisear-cache-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        return dir
    }

    private func entries(_ dir: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "bin" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// Opens a backend on `dir`, runs fill (elementwise.cl) and, when asked, softmax
    /// (softmax.cl) with results checked; returns the number of source builds.
    private func run(_ dir: URL, softmax: Bool) throws -> Int {
        let be = try OpenCLBackend(index: 0, params: KernelParams(profile: .cpu),
                                   environment: testEnvironment(["NOISEAR_KERNEL_CACHE": dir.path]))
        let filled = try runOp(be, inputs: [], outputs: [6]) { b, _, o in try b.fill(o[0], count: 6, value: 3) }
        #expect(filled[0] == [Float](repeating: 3, count: 6))
        if softmax {
            let x: [Float] = [1, 2, 3, 4, -1, 0.5]
            let op: (any Backend, [BufRef], [BufRef]) throws -> Void = { b, i, o in
                try b.softmax(rows: 2, cols: 3, log: true, x: i[0], y: o[0])
            }
            let got = try runOp(be, inputs: [x], outputs: [6], op)
            let want = try runOp(CPUBackend(), inputs: [x], outputs: [6], op)
            #expect(nmse(got[0], want[0]) < 1e-10, "softmax after a cache load")
        }
        return be.sourceBuilds
    }

    /// Builds the fill program once, returning its entry.
    private func firstEntry(_ dir: URL) throws -> URL? {
        #expect(try run(dir, softmax: false) == 1)
        let files = try entries(dir)
        #expect(files.count == 1)
        #expect(try run(dir, softmax: false) == 0, "the second open should load the cached binary")
        return files.first
    }

    @Test func truncatedEntriesWithRecomputedChecksumsAreRebuilt() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let dir = cacheDir("truncated")
            defer { try? FileManager.default.removeItem(at: dir) }
            guard let file = try firstEntry(dir) else { return }
            let good = try Data(contentsOf: file)
            let key = file.deletingPathExtension().lastPathComponent
            let binary = good.suffix(from: headerLength)
            let half = Data(binary.prefix(binary.count / 2))
            // Old format (checksum of the binary only), truncated, checksum recomputed.
            var old = Data("NOISEAR-CLBIN-1\n".utf8)
            old.append(Data(sha256(half).utf8))
            old.append(half)
            try old.write(to: file)
            #expect(try run(dir, softmax: false) == 1)
            let rewritten = try Data(contentsOf: file)
            #expect(rewritten.prefix(16) == good.prefix(16) && rewritten.count > headerLength,
                    "the entry should be rewritten in the current format")
            // New format, truncated, checksum recomputed over header and the shorter binary.
            try entry(key: key, size: binary.count, binary: half).write(to: file)
            #expect(try run(dir, softmax: false) == 1)
            // ... and with a size field that says zero bytes.
            try entry(key: key, size: 0, binary: Data()).write(to: file)
            #expect(try run(dir, softmax: false) == 1)
            #expect(try run(dir, softmax: false) == 0)
        }
    }

    @Test func entriesSwappedBetweenKeysAreRebuilt() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let dir = cacheDir("swapped")
            defer { try? FileManager.default.removeItem(at: dir) }
            guard let fillFile = try firstEntry(dir) else { return }
            #expect(try run(dir, softmax: true) == 1)
            guard let softmaxFile = try entries(dir).first(where: { $0 != fillFile }) else {
                Issue.record("no softmax entry written")
                return
            }
            let fillEntry = try Data(contentsOf: fillFile)
            // The fill program's entry copied over the softmax program's file.
            try fillEntry.write(to: softmaxFile)
            #expect(try run(dir, softmax: true) == 1)
            #expect(try run(dir, softmax: true) == 0)
            // The fill binary relabelled as the softmax entry (key and checksum made to match):
            // it loads and builds, has no softmax kernel, and is rebuilt from source.
            let softmaxKey = softmaxFile.deletingPathExtension().lastPathComponent
            let fillBinary = Data(fillEntry.suffix(from: headerLength))
            try entry(key: softmaxKey, size: fillBinary.count, binary: fillBinary).write(to: softmaxFile)
            #expect(try run(dir, softmax: true) == 1)
            #expect(try run(dir, softmax: true) == 0)
        }
    }

    @Test func garbageEntriesAreRebuilt() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let dir = cacheDir("garbage")
            defer { try? FileManager.default.removeItem(at: dir) }
            guard let file = try firstEntry(dir) else { return }
            let size = try Data(contentsOf: file).count
            var rng = TestRNG(92)
            let garbage: [Data] = [
                Data(),
                Data((0..<size).map { _ in rng.byte() }),
                Data("NOISEAR-CLBIN-2\n".utf8) + Data((0..<(size - 16)).map { _ in rng.byte() }),
                Data("NOISEAR-CLBIN-2\n".utf8) + Data(repeating: 0x30, count: 64 + 16 + 64),
            ]
            for g in garbage {
                try g.write(to: file)
                #expect(try run(dir, softmax: false) == 1, "garbage of \(g.count) bytes")
            }
            #expect(try run(dir, softmax: false) == 0)
        }
    }
}

// MARK: NOISEAR_DISABLE_OPS

@Suite(.serialized) struct DisableOpsWarningTests {
    @Test func unknownOpNamesWarnOnce() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let env = testEnvironment(["NOISEAR_DISABLE_OPS": "gemm, notAnOpA,,softmax,notAnOpB"])
            var messages: [String] = []
            let be = try OpenCLBackend(index: 0, environment: env, warn: { messages.append($0) })
            #expect(!be.enables(.gemm) && !be.enables(.softmax) && be.enables(.fill))
            #expect(messages.count == 1, "\(messages)")
            let m = messages.first ?? ""
            #expect(m.contains("notAnOpA") && m.contains("notAnOpB"), "\(m)")
            #expect(m.contains("valid names") && m.contains("attention") && m.contains("layerNorm"), "\(m)")
            #expect(!m.contains("\n"), "\(m)")
            _ = try OpenCLBackend(index: 0, environment: env, warn: { messages.append($0) })
            #expect(messages.count == 1, "the same warning twice: \(messages)")
            // Known names only: no warning.
            _ = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_DISABLE_OPS": "svd"]),
                                  warn: { messages.append($0) })
            #expect(messages.count == 1, "\(messages)")
        }
    }
}

// MARK: through the command line

@Suite(.serialized) struct KernelDefinesCLITests {
    /// Bad defines end the CLI with one error line and a non-zero status, never a signal.
    @Test func badDefinesGiveOneErrorLine() throws {
        guard try hasOpenCL() else { return }
        let runs: [(String, [String])] = [
            ("ROW_WG=0", ["bench", "softmax", "--rows", "8", "--size", "8"]),
            ("GEMM_MR=1000000", ["bench", "gemm", "--size", "16"]),
            ("ATT_QB=0", ["bench", "attention", "--batch", "1", "--heads", "1", "--tq", "4", "--tk", "4", "--dim", "8"]),
        ]
        for (define, args) in runs {
            guard let r = try runCLI(args + ["--device", "opencl", "--repeats", "1", "--warmup", "0"],
                                     environment: ["NOISEAR_KERNEL_DEFINES": define])
            else { return }
            #expect(!r.signaled, "\(define): killed by signal \(r.status)")
            #expect(r.status != 0, "\(define): exit status 0")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(define): one line expected: \(r.stderr)")
            #expect(r.stderr.contains(define.split(separator: "=")[0]), "\(define): \(r.stderr)")
        }
    }

    @Test func unknownDisabledOpsWarn() throws {
        guard try hasOpenCL() else { return }
        guard let r = try runCLI(["bench", "softmax", "--device", "opencl", "--repeats", "1", "--warmup", "0",
                                  "--rows", "4", "--size", "8"],
                                 environment: ["NOISEAR_DISABLE_OPS": "sofmax"]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("warning:") && r.stderr.contains("sofmax") && r.stderr.contains("softmax"),
                "stderr: \(r.stderr)")
    }
}
