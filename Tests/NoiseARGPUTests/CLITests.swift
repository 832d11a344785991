import Foundation
import NoiseARGPU
import Testing

/// The `noisear-gpu` executable, run as a user would (it is built next to the test bundle).
func cliPath() -> URL? {
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for dir in [bundleDir, bundleDir.deletingLastPathComponent()] {
        let url = dir.appendingPathComponent("noisear-gpu")
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    print("skipping: noisear-gpu executable not found next to \(bundleDir.path)")
    return nil
}

struct CLIResult {
    var status: Int32
    var stdout: String
    var stderr: String
    /// True when the process was killed by a signal (`status` is then the signal number).
    var signaled = false
}

func runCLI(_ args: [String], environment extra: [String: String] = [:]) throws -> CLIResult? {
    guard let exe = cliPath() else { return nil }
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    p.environment = testEnvironment(extra)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CLIResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                     stderr: String(decoding: e, as: UTF8.self),
                     signaled: p.terminationReason == .uncaughtSignal)
}

@Suite(.serialized) struct CLITests {
    @Test func devicesListsCPUAndJSON() throws {
        guard let r = try runCLI(["devices"]) else { return }
        #expect(r.status == 0)
        #expect(r.stdout.contains("cpu"))
        guard let j = try runCLI(["devices", "--json"]) else { return }
        let list = try JSONDecoder().decode([DeviceInfo].self, from: Data(j.stdout.utf8))
        #expect(list.first?.id == "cpu")
    }

    @Test func noOpenCLPlatform() throws {
        // An ICD folder with no vendor file: the loader finds no platform (-1001).
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-no-icd-\(getpid())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let env = ["OCL_ICD_VENDORS": empty.path, "OPENCL_VENDOR_PATH": empty.path]
        guard let auto = try runCLI(["devices", "--device", "auto"], environment: env) else { return }
        #expect(auto.status == 0)
        #expect(auto.stderr.contains("no OpenCL platform"), "stderr: \(auto.stderr)")
        #expect(auto.stdout.contains("selected: cpu"))
        guard let cl = try runCLI(["devices", "--device", "opencl"], environment: env) else { return }
        #expect(cl.status != 0)
        #expect(cl.stderr.contains("error:") && cl.stderr.contains("OpenCL"), "stderr: \(cl.stderr)")
        #expect(cl.stderr.split(separator: "\n").count == 1, "one-line error expected: \(cl.stderr)")
    }

    @Test func unknownDeviceIsAOneLineError() throws {
        guard let r = try runCLI(["bench", "softmax", "--device", "tpu", "--rows", "4", "--size", "8"]) else { return }
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown device \"tpu\""))
    }

    @Test func benchJSON() throws {
        guard let r = try runCLI(["bench", "gemm", "--device", "cpu", "--size", "64", "--warmup", "0",
                                  "--repeats", "2", "--json"]) else { return }
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let results = try JSONDecoder().decode([BenchResult].self, from: Data(r.stdout.utf8))
        #expect(results.map(\.backend) == ["openblas", "cpu"])
        #expect(results.allSatisfy { ($0.gflops ?? 0) > 0 })
    }

    @Test func benchEveryOpOnOpenCL() throws {
        var hasOpenCL = false
        try withCL { hasOpenCL = !$0.isEmpty }  // (device queries stay under the OpenCL test lock)
        guard hasOpenCL else { return }
        let small: [String: [String]] = [
            "gemm": ["--size", "48"], "attention": ["--batch", "1", "--heads", "2", "--tq", "9", "--tk", "11", "--dim", "8"],
            "conv2d": ["--batch", "1", "--channels", "3", "--out-channels", "4", "--size", "9"],
            "layernorm": ["--rows", "5", "--size", "33"], "softmax": ["--rows", "5", "--size", "33"],
            "svd": ["--size", "9", "--batch", "2"],
        ]
        for (op, args) in small.sorted(by: { $0.key < $1.key }) {
            guard let r = try runCLI(["bench", op, "--device", "opencl", "--warmup", "0", "--repeats", "1"] + args)
            else { return }
            #expect(r.status == 0, "\(op): \(r.stderr)")
            #expect(r.stdout.contains("opencl:0"), "\(op): \(r.stdout)")
        }
    }

    @Test func badOptionsFail() throws {
        guard let r = try runCLI(["bench", "gemm", "--size", "0"]) else { return }
        #expect(r.status != 0)
        guard let h = try runCLI(["--help"]) else { return }
        #expect(h.stdout.contains("NOISEAR_KERNEL_CACHE"))
    }
}
