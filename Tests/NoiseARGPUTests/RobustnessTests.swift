import Foundation
import NoiseARGPU
import Testing

/// Careless and hostile inputs: outputs are never lost or replaced by the wrong kind of file,
/// and every bad input is one line on standard error with a non-zero exit, never a signal.
@Suite(.serialized) struct RobustnessTests {
    static func scratch(_ name: String) throws -> URL { try scratchDirectory("robust-" + name) }

    /// A failed command: non-zero exit (not a signal), exactly one line on standard error.
    static func expectOneLineFailure(_ r: CLIResult, containing text: String? = nil,
                                     sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0, "exit 0; stdout \(r.stdout)", sourceLocation: sourceLocation)
        #expect(r.status < 128, "killed by a signal (\(r.status)): \(r.stderr)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        #expect(lines.count == 1, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("noisear-gpu: error: "), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(!r.stderr.unicodeScalars.contains { $0.value == 0x1B }, "raw escape on stderr", sourceLocation: sourceLocation)
        if let text { #expect(r.stderr.contains(text), "stderr: \(r.stderr)", sourceLocation: sourceLocation) }
    }

    // MARK: outputs

    @Test func outputIsWrittenIntoAFIFONotReplaced() throws {
        let dir = try Self.scratch("fifo")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("out.png").path
        #expect(mkfifo(fifo, 0o644) == 0)
        // A reader, as `cat fifo` would be, on a thread of its own (opening a FIFO blocks).
        let reader = BlockingReader(path: fifo)
        guard let r = try runCLI(["render", "--prompt", "a red circle", "--out", fifo]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        let bytes = reader.wait()
        var st = stat()
        #expect(lstat(fifo, &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO, "the FIFO was replaced")
        let png = try PNGImage.decode(bytes, source: "fifo")
        #expect(png.width == 32 && png.height == 32)
    }

    @Test func symlinkPermissionsAndFolders() throws {
        let dir = try Self.scratch("links")
        defer { try? FileManager.default.removeItem(at: dir) }
        let real = dir.appendingPathComponent("real.png").path
        let link = dir.appendingPathComponent("link.png").path
        try Data("old".utf8).write(to: URL(fileURLWithPath: real))
        #expect(chmod(real, 0o640) == 0)
        #expect(symlink("real.png", link) == 0)
        guard let r = try runCLI(["render", "--prompt", "a blue square", "--out", link]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        var st = stat()
        #expect(lstat(link, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "the link was replaced")
        #expect(stat(real, &st) == 0 && (st.st_mode & 0o777) == 0o640, "permissions lost: \(String(st.st_mode & 0o777, radix: 8))")
        #expect(try PNGImage.read(from: URL(fileURLWithPath: real)).width == 32)
        // A folder is refused up front, with the name as the user typed it.
        guard let d = try runCLI(["render", "--prompt", "a blue square", "--out", dir.path + "/sub.png/"]) else { return }
        Self.expectOneLineFailure(d)
        try FileManager.default.createDirectory(atPath: dir.path + "/f.png", withIntermediateDirectories: false)
        guard let f = try runCLI(["render", "--prompt", "a blue square", "--out", dir.path + "/f.png"]) else { return }
        Self.expectOneLineFailure(f, containing: "folder")
        // Library level: a device-like target (FIFO) and a missing folder.
        #expect(throws: NoiseError.self) { try OutputFile.checkWritable(URL(fileURLWithPath: dir.path + "/no/such/x.png")) }
        #expect(throws: NoiseError.self) { try OutputFile.write(Data([1]), to: URL(fileURLWithPath: dir.path + "/f.png")) }
    }

    /// A failing `sample` leaves an existing output exactly as it was.
    @Test func failedSampleKeepsTheOldImage() throws {
        let dir = try Self.scratch("keep")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("keep.png")
        let old = Data("the user's previous image".utf8)
        try old.write(to: out)
        let base = ["sample", "--prompt", "a red circle", "--steps", "2", "--out", out.path]
        for extra in [["--device", "nosuch"], ["--prior", "noisear", "--prior-weights", dir.appendingPathComponent("missing.safetensors").path],
                      ["--model", dir.path]] {
            guard let r = try runCLI(base + extra) else { return }
            Self.expectOneLineFailure(r)
            #expect(try Data(contentsOf: out) == old, "\(extra) replaced the output")
        }
        // --individual outputs are checked before any work too.
        try FileManager.default.createDirectory(atPath: dir.path + "/keep-1.png", withIntermediateDirectories: false)
        guard let r = try runCLI(base + ["--batch", "2", "--individual", "--device", "cpu"]) else { return }
        Self.expectOneLineFailure(r, containing: "keep-1.png")
        #expect(try Data(contentsOf: out) == old)
    }

    @Test func outputExtensions() throws {
        let dir = try Self.scratch("ext")
        defer { try? FileManager.default.removeItem(at: dir) }
        for args in [["sample", "--prompt", "a red circle", "--out", dir.path + "/x.jpg"],
                     ["render", "--prompt", "a red circle", "--out", dir.path + "/x.jpeg"],
                     ["noise", "--embeds", "e.npy", "--out", dir.path + "/x.txt"],
                     ["score", "--embeds", "e.npy", "--noise", "n.npy", "--out", dir.path + "/x.npy"]] {
            guard let r = try runCLI(args) else { return }
            Self.expectOneLineFailure(r, containing: "must end in")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/x.jpg"))
    }

    // MARK: inputs

    static func npyHeader(_ dict: String) -> Data {
        var header = dict
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var d = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        d.append(contentsOf: [UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)])
        d.append(contentsOf: Array(header.utf8))
        return d
    }

    @Test func npyShapesThatOverflowAreErrors() {
        for shape in ["(4294967296, 4294967296, 0)", "(9223372036854775807, 2)", "(3037000500, 3037000500)",
                      "(99999999999999999999,)", "(-1, 3)", "(2305843009213693952,)"] {
            let d = Self.npyHeader("{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }") + Data(count: 16)
            #expect(throws: NoiseError.self, "shape \(shape)") { try NPY.parse(d, source: "hostile.npy") }
        }
    }

    @Test func npyFortranOrderIsTransposed() throws {
        // numpy.asfortranarray([[1, 2, 3], [4, 5, 6]]) stores 1 4 2 5 3 6.
        var d = Self.npyHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }")
        for v: Float in [1, 4, 2, 5, 3, 6] { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        let t = try NPY.parse(d, source: "f.npy")
        #expect(t.shape == [2, 3] && t.data == [1, 2, 3, 4, 5, 6])
        // Three dimensions: element (i, j, k) at i + 2 j + 6 k in Fortran order.
        var d3 = Self.npyHeader("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 4), }")
        for f in 0..<24 {
            let i = f % 2, j = (f / 2) % 3, k = f / 6
            let v = Double(100 * i + 10 * j + k)
            withUnsafeBytes(of: v.bitPattern.littleEndian) { d3.append(contentsOf: $0) }
        }
        let t3 = try NPY.parse(d3, source: "f3.npy")
        for c in 0..<24 {
            let i = c / 12, j = (c / 4) % 3, k = c % 4
            #expect(t3.data[c] == Float(100 * i + 10 * j + k))
        }
    }

    /// Mutations of a valid .npy never crash the reader: an error or a tensor of the declared size.
    @Test func npyFuzz() {
        var rng = TestRNG(9)
        let valid = NPY.serialized(HostTensor(shape: [2, 3, 5], data: rng.values(30)))
        for _ in 0..<3000 {
            var b = [UInt8](valid)
            switch rng.below(4) {
            case 0:
                for _ in 0...rng.below(4) { b[rng.below(b.count)] = rng.byte() }
            case 1:
                b = Array(b.prefix(rng.below(b.count)))
            case 2:
                // Digits and punctuation in the header, where the shape and dtype live.
                let alphabet = Array("0123456789(),' :-TrueFalsf<>=f48".utf8)
                for _ in 0...rng.below(3) { b[10 + rng.below(60)] = alphabet[rng.below(alphabet.count)] }
            default:
                b[8] = rng.byte(); b[9] = rng.byte()
            }
            if let t = try? NPY.parse(Data(b), source: "fuzz") {
                #expect(t.data.count == t.shape.reduce(1, *))
            }
        }
    }

    @Test func nonFiniteInputsAreNamed() throws {
        let dir = try Self.scratch("nan")
        defer { try? FileManager.default.removeItem(at: dir) }
        guard let fixtures = fixturesDirectory() else { return }
        let fx = try SafeTensorsFile.read(fixtures.appendingPathComponent("noisear/noisear_tiny.safetensors"))
        var embeds = try fx.tensor("input.text_emb")
        embeds.data[5] = .nan
        let embedsFile = dir.appendingPathComponent("embeds.npy")
        try NPY.write(embeds, to: embedsFile)
        let weights = dir.appendingPathComponent("w.safetensors")
        var wt: [String: HostTensor] = [:]
        for (k, v) in fx.tensors where k.hasPrefix("weights.") { wt[k] = v }
        try SafeTensorsFile(tensors: wt, metadata: fx.metadata).write(to: weights)
        let out = dir.appendingPathComponent("n.npy").path
        guard let r = try runCLI(["noise", "--weights", weights.path, "--embeds", embedsFile.path, "--out", out,
                                  "--device", "cpu", "--seed", "1"]) else { return }
        Self.expectOneLineFailure(r, containing: "nan at flat index 5")
        #expect(!FileManager.default.fileExists(atPath: out))
        embeds.data[5] = 1
        embeds.data[7] = -.infinity
        try SafeTensorsFile(tensors: ["prompt_embeds": embeds]).write(to: dir.appendingPathComponent("e.safetensors"))
        guard let r2 = try runCLI(["noise", "--weights", weights.path, "--embeds", dir.path + "/e.safetensors", "--out", out,
                                   "--device", "cpu"]) else { return }
        Self.expectOneLineFailure(r2, containing: "-inf at flat index 7")
        #expect(r2.stderr.contains("prompt_embeds"))
        // Library: the multi-index is given too.
        let t = HostTensor(shape: [2, 3], data: [0, 1, 2, 3, .infinity, 5])
        #expect(throws: NoiseError.invalidArgument("x holds inf at flat index 4 (index [1, 1] of shape [2, 3])")) {
            try t.requireFinite("x")
        }
    }

    @Test func unreadableInputsInWords() throws {
        let dir = try Self.scratch("inputs")
        defer { try? FileManager.default.removeItem(at: dir) }
        guard let r = try runCLI(["noise", "--embeds", dir.path, "--out", dir.path + "/o.npy"]) else { return }
        Self.expectOneLineFailure(r)
        #expect(!r.stderr.contains("NSCocoaErrorDomain") && !r.stderr.contains("Code="), "\(r.stderr)")
        #expect(throws: NoiseError.io("cannot read \(dir.path): it is a folder, not a file")) {
            _ = try InputFile.contents(of: dir)
        }
    }

    // MARK: sizes, seeds, messages

    @Test func oversizedRequestsAreRefusedUpFront() throws {
        guard let g = try runCLI(["bench", "gemm", "--size", "100000", "--device", "cpu"]) else { return }
        Self.expectOneLineFailure(g, containing: "needs about")
        guard let g2 = try runCLI(["bench", "gemm", "--m", "4611686018427387904", "--device", "cpu"]) else { return }
        Self.expectOneLineFailure(g2)
        guard let s = try runCLI(["sample", "--prompt", "a red circle", "--batch", "100000", "--device", "cpu",
                                  "--out", FileManager.default.temporaryDirectory.path + "/never-\(getpid()).png"]) else { return }
        Self.expectOneLineFailure(s, containing: "sample --batch 100000 needs about")
        // Training is refused up front too (it used to run until the kernel killed it).
        guard let t = try runCLI(["train", "diffusion", "--batch", "4096", "--steps", "1", "--device", "cpu",
                                  "--checkpoint", FileManager.default.temporaryDirectory.path + "/never-\(getpid()).safetensors"]) else { return }
        Self.expectOneLineFailure(t, containing: "train diffusion --batch 4096 needs about")
        let perTrainingImage = try #require(UNetConfig().estimatedTrainingBytes(batch: 1))
        #expect(perTrainingImage > 32 << 20 && perTrainingImage < 128 << 20, "\(perTrainingImage)")
        #expect(UNetConfig().estimatedTrainingBytes(batch: Int.max / 2) == nil)
        // The estimate is an upper bound of what one image takes, not absurdly above it.
        let perImage = try #require(UNetConfig().estimatedSamplingBytes(batch: 1))
        #expect(perImage > 8 << 20 && perImage < 64 << 20, "\(perImage)")
        #expect(UNetConfig().estimatedSamplingBytes(batch: Int.max) == nil)
    }

    @Test func seedsOfABatchStayInRange() throws {
        guard let r = try runCLI(["sample", "--prompt", "a red circle", "--seed", "18446744073709551615", "--batch", "2"]) else { return }
        Self.expectOneLineFailure(r, containing: "18446744073709551614")
        guard let e = try runCLI(["evaluate", "--seed", "18446744073709551615", "--seeds", "2"]) else { return }
        Self.expectOneLineFailure(e)
        guard let c = try runCLI(["collect", "--out", "/tmp/never", "--candidates", "9223372036854775807"]) else { return }
        Self.expectOneLineFailure(c)
        #expect(try Seeds.consecutive(from: UInt64.max - 1, count: 2) == [UInt64.max - 1, UInt64.max])
        #expect(throws: NoiseError.self) { try Seeds.check(UInt64.max, count: 2) }
    }

    @Test func messagesAreOneLineWithoutRawControlCharacters() throws {
        let hostile = String(repeating: "a red \u{1B}[31mcircle\n", count: 50)
        guard let r = try runCLI(["sample", "--prompt", hostile]) else { return }
        Self.expectOneLineFailure(r, containing: "\\u{1B}")
        #expect(r.stderr.count < 600, "\(r.stderr.count) characters")
        #expect(Text.quoted("a\tb\u{7}c") == "\"a\\tb\\u{7}c\"")
        #expect(Text.quoted(String(repeating: "x", count: 100), limit: 5) == "\"xxxxx...\" (100 characters)")
        guard let inv = try runCLI(["sample", "--prompt", "a red circle", "--sampler", "ddim-inverse"]) else { return }
        Self.expectOneLineFailure(inv, containing: "ddim-inverse")
    }

    /// Every command, given a bad value for one of its options, fails with one line and no signal.
    @Test func badOptionValuesFailCleanly() throws {
        let tmp = FileManager.default.temporaryDirectory.path + "/noisear-bad-\(getpid())"
        let commands: [(args: [String], options: [(String, [String])])] = [
            (["sample", "--prompt", "a red circle", "--out", tmp + ".png"],
             [("--steps", ["0", "-3", "x", "1.5"]), ("--batch", ["0", "-1", "many"]), ("--cfg", ["nan", "-1", "inf"]),
              ("--seed", ["-2", "x", "99999999999999999999"]), ("--scale", ["0", "33"]), ("--prior", ["bogus", ""]),
              ("--temperature", ["-1", "nan"]), ("--strength", ["2", "-0.1"]), ("--sampler", ["heun", ""]),
              ("--device", ["tpu", "opencl:99", "opencl:-1"]), ("--model", ["/nonexistent.safetensors"])]),
            (["render", "--prompt", "a red circle", "--out", tmp + ".png"], [("--scale", ["0", "x"]), ("--seed", ["-1", "y"]), ("--prompt", ["a purple circle", ""])]),
            (["reward", "--prompt", "a red circle", "--image", "/nonexistent.png"], [("--prompt", ["", "a red"]), ("--image", ["/", "/dev/null"])]),
            (["noise", "--embeds", "/nonexistent.npy", "--out", tmp + ".npy"],
             [("--temperature", ["-1", "nan"]), ("--strength", ["3"]), ("--seed", ["-5"]), ("--prior", ["x"]), ("--heads", ["0"]),
              ("--out", [tmp + ".bin", "/nonexistent/dir/x.npy"]), ("--embeds", ["/", "/nonexistent.safetensors"])]),
            (["score", "--embeds", "/nonexistent.npy", "--noise", "/nonexistent.npy", "--out", tmp + ".safetensors"],
             [("--temperature", ["0", "-1"]), ("--prior", ["npnet"]), ("--out", [tmp + ".npy"])]),
            (["collect", "--out", tmp + "-collect"],
             [("--shard", ["3/2", "a/b", "1"]), ("--candidates", ["0"]), ("--threshold", ["2"]), ("--sampler", ["euler-a", "x"]),
              ("--method", ["magic"]), ("--inversion-steps", ["1"]), ("--batch", ["0"])]),
            (["evaluate"], [("--seeds", ["0"]), ("--prior", ["x"]), ("--split", ["test"]), ("--batch", ["-1"]), ("--sampler", ["x"])]),
            (["train", "diffusion", "--checkpoint", tmp + "-d.ckpt"], [("--steps", ["0"]), ("--lr", ["0", "nan"]), ("--prediction", ["x"]), ("--prompt-dropout", ["1"])]),
            (["train", "prior", "--data", "/nonexistent", "--checkpoint", tmp + "-p.ckpt"], [("--heads", ["3"]), ("--patch", ["5"]), ("--dropout", ["1"]), ("--data", ["/nonexistent"])]),
            (["train", "npnet", "--data", "/nonexistent", "--checkpoint", tmp + "-n.ckpt"], [("--embed", ["0"]), ("--lr", ["-1"]), ("--data", ["/"])]),
            (["bench", "gemm"], [("--size", ["0", "-4", "x"]), ("--repeats", ["0"]), ("--warmup", ["-1"]), ("--device", ["gpu7"])]),
            (["devices"], [("--device", ["nope"])]),
        ]
        var rng = TestRNG(41)
        var cases: [[String]] = []
        for c in commands {
            for (option, values) in c.options {
                // One value per option at random, and the first always.
                let picks = Set([values[0], values[rng.below(values.count)]])
                for v in picks.sorted() { cases.append(c.args + [option, v]) }
            }
        }
        for args in cases {
            guard let r = try runCLI(args) else { return }
            Self.expectOneLineFailure(r)
            if r.status == 0 || r.stderr.split(separator: "\n").count != 1 { print("case: \(args)") }
        }
    }

    @Test func setupScriptIsWhatREADMEAndCIRun() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let ci = try String(contentsOf: root.appendingPathComponent(".ci/run"), encoding: .utf8)
        let setup = try String(contentsOf: root.appendingPathComponent("tools/setup.sh"), encoding: .utf8)
        #expect(readme.contains("tools/setup.sh && swift build -c release"))
        #expect(!readme.contains("sudo apt-get"))
        #expect(ci.contains("tools/setup.sh"))
        #expect(setup.contains("id -u") && setup.contains("sudo"))
    }

    /// The PyTorch comparison needs torch only where it is run: without it, one clear line.
    @Test func benchVsPyTorchExplainsWhatItNeeds() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [root.appendingPathComponent("tools/bench-vs-pytorch.sh").path, "/usr/bin/false"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 1 && text.hasPrefix("bench-vs-pytorch: ") && text.split(separator: "\n").count == 1, "\(text)")
    }
}

/// Reads a file to its end on a thread of its own.
final class BlockingReader: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(path: String) {
        let thread = Thread { [self] in
            let fd = open(path, O_RDONLY)
            var buf = [UInt8](repeating: 0, count: 4096)
            while fd >= 0 {
                let n = read(fd, &buf, buf.count)
                if n <= 0 { break }
                data.append(contentsOf: buf[0..<n])
            }
            if fd >= 0 { close(fd) }
            done.signal()
        }
        thread.start()
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}

/// Host hand-offs of the CLI: a noise made elsewhere into `sample`, shapes-world prompts into `noise`.
@Suite(.serialized) struct HostHandOffTests {
    @Test func sampleFromAGivenInitialNoise() throws {
        let dir = try scratchDirectory("init-noise")
        defer { try? FileManager.default.removeItem(at: dir) }
        // The Gaussian start of seed 5, written as a host would write it.
        let start = try DiffusionSampler.gaussianNoise(count: 2, shape: [3, 32, 32], seed: 5, on: Device.cpuDevice()).toHost()
        let npy = dir.appendingPathComponent("start.npy")
        try NPY.write(start, to: npy)
        let base = ["sample", "--prompt", "a red circle above a blue square", "--steps", "3", "--batch", "2", "--device", "cpu"]
        guard let given = try runCLI(base + ["--init-noise", npy.path, "--out", dir.path + "/given.png"]),
              let seeded = try runCLI(base + ["--seed", "5", "--out", dir.path + "/seeded.png"]) else { return }
        #expect(given.status == 0 && seeded.status == 0, "\(given.stderr) \(seeded.stderr)")
        let a = try PNGImage.read(from: dir.appendingPathComponent("given.png"))
        let b = try PNGImage.read(from: dir.appendingPathComponent("seeded.png"))
        #expect(a.pixels == b.pixels)
        // Wrong shape, and a prior at the same time, are one-line errors.
        guard let wrong = try runCLI(base.map { $0 == "2" ? "3" : $0 } + ["--init-noise", npy.path, "--out", dir.path + "/x.png"]),
              let both = try runCLI(base + ["--init-noise", npy.path, "--prior", "noisear", "--out", dir.path + "/x.png"]) else { return }
        RobustnessTests.expectOneLineFailure(wrong, containing: "does not match")
        RobustnessTests.expectOneLineFailure(both)
    }

    @Test func noiseFromShapesWorldPrompts() throws {
        let dir = try scratchDirectory("noise-prompt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["noise", "--prompt", "a red circle", "--prompt", "a blue square to the left of a green triangle",
                    "--seed", "3", "--device", "cpu", "--quiet"]
        guard let r1 = try runCLI(args + ["--out", dir.path + "/a.npy"]),
              let r2 = try runCLI(args + ["--out", dir.path + "/b.npy"]) else { return }
        #expect(r1.status == 0 && r2.status == 0, "\(r1.stderr)")
        let a = try NPY.read(dir.appendingPathComponent("a.npy")), b = try NPY.read(dir.appendingPathComponent("b.npy"))
        #expect(a.shape == [2, 3, 32, 32] && a == b)
        // The same as the library's shapes-world source for these prompts and seeds.
        let dev = Device.cpuDevice()
        let model = try TextToImageModel.load(try #require(ShippedModels.locate(ShippedModels.diffusionFile)), device: dev)
        let source = try ShapesSampling.noiseSource(.noiseAR, path: nil, model: model)
        let mine = try source(["a red circle", "a blue square to the left of a green triangle"], [3, 4]).toArray()
        #expect(nmse(a.data, mine) < 1e-10)
        guard let both = try runCLI(args + ["--embeds", "x.npy", "--out", dir.path + "/c.npy"]),
              let bad = try runCLI(["noise", "--prompt", "a purple circle", "--out", dir.path + "/c.npy"]) else { return }
        RobustnessTests.expectOneLineFailure(both, containing: "either --embeds")
        RobustnessTests.expectOneLineFailure(bad, containing: "purple")
    }
}

/// The evaluation harness: paired statistics, shards and merge, the grid.
@Suite(.serialized) struct PriorComparisonTests {
    @Test func bootstrapIntervals() {
        let (lo, hi) = PriorComparison.bootstrapInterval([0.25, 0.25, 0.25], resamples: 500, seed: 1)
        #expect(lo == 0.25 && hi == 0.25)
        // Mean 0.5 with spread: the interval holds the mean, is reproducible and narrows with n.
        let values = (0..<40).map { Double($0 % 2) }
        let a = PriorComparison.bootstrapInterval(values, resamples: 2000, seed: 7)
        let b = PriorComparison.bootstrapInterval(values, resamples: 2000, seed: 7)
        #expect(a == b && a.0 < 0.5 && a.1 > 0.5 && a.1 - a.0 < 0.4)
        let wide = PriorComparison.bootstrapInterval(Array(values.prefix(6)), resamples: 2000, seed: 7)
        #expect(wide.1 - wide.0 > a.1 - a.0)
    }

    /// Runs built from known rewards: a renders every prompt right, b gets one prompt wrong.
    @Test func tableAndMerge() throws {
        let prompts = ["a red circle", "a blue square", "a green triangle above a red circle"]
        let seeds: [UInt64] = [1, 2]
        func results(_ wrong: Set<String>) throws -> [RewardResult] {
            try prompts.flatMap { p in
                try seeds.map { s in
                    let scene = try Scene.sample(prompt: wrong.contains(p) ? "a yellow square" : p, seed: s)
                    return try Reward.evaluate(image: scene.render(), prompt: p)
                }
            }
        }
        let a = PriorComparison.Run(label: "a", prompts: prompts, seeds: seeds, results: try results([]), timing: .init())
        let b = PriorComparison.Run(label: "b", prompts: prompts, seeds: seeds, results: try results(["a blue square"]), timing: .init())
        let t = try PriorComparison.table([a, b], resamples: 400)
        #expect(t.priors.map(\.label) == ["a", "b"] && t.priors[0].report.meanScore == 1)
        let pair = try #require(t.pairs.first)
        let lost = 1 - (b.results[2].score + b.results[3].score) / 2
        #expect(abs(pair.meanDifference - lost / 3) < 1e-12)
        #expect(pair.wins == 2 && pair.losses == 0 && pair.ties == 4)
        #expect(pair.ci95Low >= 0 && pair.ci95High <= lost + 1e-12)
        // Two shards of the prompts merge into the same statistics.
        func part(_ r: PriorComparison.Run, _ idx: [Int]) -> PriorComparison.Run {
            PriorComparison.Run(label: r.label, prompts: idx.map { prompts[$0] }, seeds: seeds,
                                results: idx.flatMap { Array(r.results[($0 * 2)..<($0 * 2 + 2)]) }, timing: r.timing)
        }
        let merged = try PriorComparison.merge([[part(a, [0, 2]), part(b, [0, 2])], [part(a, [1]), part(b, [1])]])
        let m = try PriorComparison.table(merged, resamples: 400)
        #expect(abs(m.pairs[0].meanDifference - pair.meanDifference) < 1e-12 && m.pairs[0].wins == 2)
        #expect(throws: NoiseError.self) { try PriorComparison.merge([[a, b], [a, b]]) }  // the same prompts twice
        // A comparison of other priors on the same prompts and seeds (its prompts in another order,
        // sharded) joins, paired: b and c against a, with a's rewards equal in both.
        let c = PriorComparison.Run(label: "c", prompts: prompts, seeds: seeds, results: try results(["a red circle"]), timing: .init())
        let joined = try PriorComparison.merge([[a, b], [part(c, [2, 0]), part(a, [2, 0])], [part(c, [1]), part(a, [1])]])
        #expect(joined.map(\.label) == ["a", "b", "c"] && joined[2].prompts == prompts)
        let j = try PriorComparison.table(joined, resamples: 400)
        let ac = try #require(j.pairs.first { $0.a == "a" && $0.b == "c" })
        let direct = try #require(try PriorComparison.table([a, c], resamples: 400).pairs.first)
        #expect(ac.meanDifference == direct.meanDifference && ac.wins == direct.wins && j.pairs.count == 3)
        // A prior whose rewards differ between the files, or other seeds, is refused.
        #expect(throws: NoiseError.self) { try PriorComparison.merge([[a, b], [PriorComparison.Run(label: "a", prompts: prompts, seeds: seeds, results: b.results, timing: .init())]]) }
        #expect(throws: NoiseError.self) { try PriorComparison.merge([[a, b], [PriorComparison.Run(label: "c", prompts: prompts, seeds: [1, 3], results: c.results, timing: .init())]]) }
        #expect(throws: NoiseError.self) { try PriorComparison.table([a, part(b, [0])]) }
    }

    @Test func compareCommandShardsAndGrid() throws {
        let dir = try scratchDirectory("compare")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = ["evaluate", "--compare", "gaussian,noisear", "--limit", "2", "--seeds", "1", "--steps", "2",
                    "--device", "cpu", "--quiet", "--resamples", "200"]
        guard let whole = try runCLI(base + ["--json", "--grid", dir.path + "/g.png", "--grid-prompts", "2"]) else { return }
        #expect(whole.status == 0, "\(whole.stderr)")
        let table = try JSONDecoder().decode(PriorComparison.Table.self, from: Data(whole.stdout.utf8))
        #expect(table.priors.map(\.label) == ["gaussian", "noisear"] && table.pairs.count == 1 && table.prompts == 2)
        let grid = try PNGImage.read(from: dir.appendingPathComponent("g.png"))
        #expect(grid.width > 2 * 96 && grid.height > 2 * 96 && grid.text["columns"] == "gaussian, noisear")
        // Shards 0/2 and 1/2 (two prompts each), merged.
        for i in 0..<2 {
            guard let r = try runCLI(base + ["--shard", "\(i)/2", "--save", dir.path + "/s\(i).json"]) else { return }
            #expect(r.status == 0, "\(r.stderr)")
        }
        guard let merged = try runCLI(["evaluate", "--merge", dir.path + "/s0.json," + dir.path + "/s1.json", "--json"]) else { return }
        #expect(merged.status == 0, "\(merged.stderr)")
        let mt = try JSONDecoder().decode(PriorComparison.Table.self, from: Data(merged.stdout.utf8))
        #expect(mt.prompts == 4 && mt.priors.count == 2)
        guard let bad = try runCLI(["evaluate", "--compare", "gaussian", "--shard", "0/2"]) else { return }
        RobustnessTests.expectOneLineFailure(bad, containing: "--save")
        // ITEM@T: a NoiseAR column at its own temperature; a label wider than its column wraps.
        let tempered = ["evaluate", "--compare", "gaussian,noisear@1", "--limit", "1", "--seeds", "1", "--steps", "2",
                        "--device", "cpu", "--quiet", "--resamples", "100"]
        guard let t = try runCLI(tempered + ["--json", "--grid", dir.path + "/t.png", "--grid-prompts", "1"]),
              let badT = try runCLI(tempered + ["--compare", "noisear@hot"]) else { return }
        #expect(t.status == 0, "\(t.stderr)")
        let tt = try JSONDecoder().decode(PriorComparison.Table.self, from: Data(t.stdout.utf8))
        #expect(tt.priors.map(\.label) == ["gaussian", "noisear@1.0"])
        // Scale 3: one row of 32 * 3 + 6 + 6 pixels under two label lines of 7 * 3 (11 characters, 8 per line).
        let tg = try PNGImage.read(from: dir.appendingPathComponent("t.png"))
        #expect(tg.height == 2 * 21 + 108, "grid height \(tg.height)")
        RobustnessTests.expectOneLineFailure(badT, containing: "ITEM@TEMPERATURE")
    }
}

@Suite(.serialized) struct PriorKindDetectionTests {
    /// `noise --weights` takes either kind of prior; the kind comes from the file's keys.
    @Test func noiseDetectsTheKindFromTheWeights() throws {
        let dir = try scratchDirectory("detect")
        defer { try? FileManager.default.removeItem(at: dir) }
        guard let fixtures = fixturesDirectory() else { return }
        let fx = try SafeTensorsFile.read(fixtures.appendingPathComponent("npnet/npnet_tiny.safetensors"), skippingUnsupported: true)
        try NPY.write(try fx.tensor("input.prompt_embeds"), to: dir.appendingPathComponent("e.npy"))
        let pth = fixtures.appendingPathComponent("pth/npnet_tiny.pth").path
        guard let r = try runCLI(["noise", "--weights", pth, "--embeds", dir.path + "/e.npy", "--seed", "2",
                                  "--device", "cpu", "--out", dir.path + "/g.npy"]) else { return }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try NPY.read(dir.appendingPathComponent("g.npy")).shape == [2, 4, 32, 32])
        guard let wrong = try runCLI(["noise", "--prior", "noisear", "--weights", pth, "--embeds", dir.path + "/e.npy",
                                      "--device", "cpu", "--out", dir.path + "/h.npy"]),
              let eps = try runCLI(["noise", "--weights", pth, "--embeds", dir.path + "/e.npy", "--eps", dir.path + "/e.npy",
                                    "--device", "cpu", "--out", dir.path + "/h.npy"]) else { return }
        RobustnessTests.expectOneLineFailure(wrong, containing: "holds a npnet prior")
        RobustnessTests.expectOneLineFailure(eps, containing: "--eps")
    }
}
