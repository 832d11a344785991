import Foundation
import NoiseARGPU
import Testing

/// The C API as a C host uses it: Tests/capi/test_capi.c is compiled with `cc` against
/// include/noisear.h and linked with libnoisear.so (built by `swift build`), exercises every
/// function and error path, and writes its outputs, which are compared here with the reference
/// fixtures (the authors' .pth files in, the PyTorch outputs as the reference).
@Suite(.serialized) struct CAPITests {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// libnoisear.so next to the test bundle; nil (printed) when absent, a failure under CI.
    static func library() throws -> URL? {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let url = dir.appendingPathComponent("libnoisear.so")
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            throw NoiseError.io("libnoisear.so not found next to \(bundleDir.path): run `swift build -c release` before `swift test -c release`")
        }
        print("skipping the C API test: libnoisear.so not found next to \(bundleDir.path) (run swift build first)")
        return nil
    }

    static func run(_ exe: String, _ args: [String], environment: [String: String]? = nil) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let environment { p.environment = environment }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self))
    }

    static func writeFloats(_ t: HostTensor, _ url: URL) throws {
        try t.data.withUnsafeBytes { try Data($0).write(to: url) }
    }

    static func readFloats(_ url: URL) throws -> [Float] {
        let d = try Data(contentsOf: url)
        return d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// max |a - b| / max |b|.
    static func relErr(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count, !b.isEmpty else { return .infinity }
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) {
            if x.isNaN { return .infinity }
            num = max(num, abs(Double(x) - Double(y)))
            den = max(den, abs(Double(y)))
        }
        return num / max(den, 1e-30)
    }

    @Test func cProgramAgainstTheFixtures() throws {
        guard let lib = try Self.library() else { return }
        let fixtures = try #require(fixturesDirectory(), "reference fixtures are missing")
        let work = try scratchDirectory("capi")
        defer { try? FileManager.default.removeItem(at: work) }

        let nf = try SafeTensorsFile.read(fixtures.appendingPathComponent("noisear/noisear_tiny.safetensors"))
        let pf = try SafeTensorsFile.read(fixtures.appendingPathComponent("npnet/npnet_tiny.safetensors"), skippingUnsupported: true)
        let text = try nf.tensor("input.text_emb"), pText = try pf.tensor("input.prompt_embeds")
        try Self.writeFloats(text, work.appendingPathComponent("noisear_embeds.f32"))
        try Self.writeFloats(try nf.tensor("input.sample_eps"), work.appendingPathComponent("noisear_eps.f32"))
        try Self.writeFloats(try nf.tensor("input.noise"), work.appendingPathComponent("noisear_noise.f32"))
        try Self.writeFloats(try pf.tensor("input.noise"), work.appendingPathComponent("npnet_noise.f32"))
        try Self.writeFloats(pText, work.appendingPathComponent("npnet_embeds.f32"))
        let dims = (text.shape + pText.shape).map(String.init).joined(separator: " ")
        try Data(dims.utf8).write(to: work.appendingPathComponent("dims.txt"))
        // A 4-head NoiseAR whose file does not say so (its weights without the config), once
        // alone and once in a folder with a config.json that does.
        let h4 = try SafeTensorsFile.read(fixtures.appendingPathComponent("noisear/noisear_heads4_layers2.safetensors"))
        var bare = SafeTensorsFile()
        for (name, t) in h4.tensors where name.hasPrefix("weights.") { bare.tensors[String(name.dropFirst(8))] = t }
        try bare.write(to: work.appendingPathComponent("heads4.safetensors"))
        let h4dir = work.appendingPathComponent("heads4_dir")
        try FileManager.default.createDirectory(at: h4dir, withIntermediateDirectories: true)
        try bare.write(to: h4dir.appendingPathComponent("model.safetensors"))
        try Data(#"{"n_heads": 4, "note": "other keys are ignored"}"#.utf8).write(to: h4dir.appendingPathComponent("config.json"))
        let h4text = try h4.tensor("input.text_emb"), h4eps = try h4.tensor("input.sample_eps")
        try Self.writeFloats(h4text, work.appendingPathComponent("heads4_embeds.f32"))
        try Self.writeFloats(h4eps, work.appendingPathComponent("heads4_eps.f32"))
        try Data((h4text.shape + [h4eps.shape[1], h4eps.shape[2]]).map(String.init).joined(separator: " ").utf8)
            .write(to: work.appendingPathComponent("heads4_dims.txt"))

        // Compile as a C host would: the header, the library, nothing else.
        let exe = work.appendingPathComponent("test_capi").path
        let libDir = lib.deletingLastPathComponent().path
        let (cc, ccOut) = try Self.run("/usr/bin/env", [
            "cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I", Self.repositoryRoot.appendingPathComponent("include").path,
            Self.repositoryRoot.appendingPathComponent("Tests/capi/test_capi.c").path, "-o", exe,
            "-L", libDir, "-lnoisear", "-lpthread", "-lm", "-Wl,-rpath," + libDir])
        #expect(cc == 0, "cc failed: \(ccOut)")
        guard cc == 0 else { return }
        var env = testEnvironment()
        env["NOISEAR_DEVICE"] = nil
        let (status, output) = try Self.run(exe, [fixtures.appendingPathComponent("pth").path, work.path], environment: env)
        #expect(status == 0, "test_capi: \(output)")
        #expect(output.contains(" passed, 0 failed"), "\(output)")

        // The same program under AddressSanitizer and UndefinedBehaviorSanitizer (the library is
        // not instrumented, but its allocations go through the sanitizer's malloc, so a use after
        // free of a string it returned is caught). Leak checks are off: the Swift runtime keeps
        // its metadata for the life of the process.
        let asan = work.appendingPathComponent("test_capi_asan").path
        let (ccA, ccAOut) = try Self.run("/usr/bin/env", [
            "cc", "-std=c11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
            "-I", Self.repositoryRoot.appendingPathComponent("include").path,
            Self.repositoryRoot.appendingPathComponent("Tests/capi/test_capi.c").path, "-o", asan,
            "-L", libDir, "-lnoisear", "-lpthread", "-lm", "-Wl,-rpath," + libDir])
        #expect(ccA == 0, "cc -fsanitize=address,undefined failed: \(ccAOut)")
        if ccA == 0 {
            var asanEnv = env
            asanEnv["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=86"
            let (s, o) = try Self.run(asan, [fixtures.appendingPathComponent("pth").path, work.path], environment: asanEnv)
            #expect(s == 0 && o.contains(" passed, 0 failed") && !o.contains("Sanitizer"), "test_capi under ASan/UBSan (\(s)): \(o.suffix(4000))")
        }

        // The 4-head prior: the reference with heads given or from config.json, not without.
        let h4sample = try h4.tensor("output.sample").data
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_heads4_given.f32")), h4sample) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_heads4_config.f32")), h4sample) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_heads4_default.f32")), h4sample) > 1e-2)

        // Outputs against the PyTorch reference (float64), as the Swift parity tests bound them.
        let sample = try nf.tensor("output.sample").data
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_sample_eps.f32")), sample) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_sample_wrapped.f32")), sample) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_sample_legacy.f32")), sample) < 1e-4)
        // Half-precision weights: the same network up to their rounding.
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_sample_f16.f32")), sample) < 2e-2)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_sample_bf16.f32")), sample) < 5e-2)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_mu.f32")), try nf.tensor("output.mu").data) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_logvar.f32")), try nf.tensor("output.logvar").data) < 1e-4)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_log_prob.f32")), try nf.tensor("output.log_prob").data) < 1e-4)
        let golden = try pf.tensor("output.golden_noise").data
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_golden.f32")), golden) < 1e-3)
        #expect(Self.relErr(try Self.readFloats(work.appendingPathComponent("c_golden_oldtimm.f32")), golden) < 1e-3)
        // The seeded sample equals the library's own.
        let dev = Device.cpuDevice()
        guard case .noiseAR(let net) = try NoisePrior.load(fixtures.appendingPathComponent("pth/noisear_tiny.pth"), device: dev) else {
            Issue.record("not a NoiseAR prior")
            return
        }
        let mine = try NoisePriors.noiseAR(net, text: Tensor(text, on: dev), seed: 42).toArray()
        #expect(try Self.readFloats(work.appendingPathComponent("c_sample_seed42.f32")) == mine)
        // The shapes-world images equal `sample`'s.
        let model = try TextToImageModel.load(try #require(ShippedModels.locate(ShippedModels.diffusionFile)), device: dev)
        let r = try ShapesSampling.sample(ShapesSampleRequest(prompt: "a red circle to the left of a blue square", seed: 7, batch: 2,
                                                              settings: SamplingSettings(steps: 4)), model: model)
        let rgb = try Data(contentsOf: work.appendingPathComponent("c_shapes.rgb"))
        #expect([UInt8](rgb) == r.images.flatMap { $0 })
    }
}
