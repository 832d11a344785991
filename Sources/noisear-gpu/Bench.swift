import ArgumentParser
import Foundation
import NoiseARGPU

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time one op on the selected device, side by side with the CPU backend.",
        discussion: paragraphs("""
            OP is one of: gemm, attention, conv2d, layernorm, softmax, sampler, train, noisear, svd, npnet.

            `npnet` times one NPNet forward at the authors' SDXL size (4x128x128 latent, swin_tiny,
            77x2048 prompt embeddings; random weights); --batch (default 1 here), --size for the latent side;
            --weights FILE times that network instead (its own configuration, e.g. the shipped shapes-world
            NPNet), on random inputs. It prints each op family's share of one forward.

            `noisear` times one NoiseAR sample at the authors' SDXL size (4x128x128 latent, 32x32-pixel patches,
            d_model 2048, d_ff 4096, 1 layer, 1 head, 77x2048 prompt embeddings; random weights), with
            the key/value cache and without, after its bandwidth floor (weight bytes x patches at the
            device's bandwidth, measured by a 256 MiB copy: the last column is then floor / time);
            --batch (default 1 here), --size for the latent side.

            `svd` times the batched Jacobi SVD of --batch random --size x --size matrices (default 256),
            QR-preconditioned (--plain-jacobi: without), and reports ms per matrix, matrices per second
            and the sweeps used.

            `sampler` times one guided step of the shapes-world model (random weights of the shipped
            configuration) at --batch as the PyTorch comparison does (the UNet on 2 x --batch inputs and the
            guidance combination; the prompts encoded beforehand) and prints each op family's share of a
            one-step sample run (with its op count), the
            primitive ops per guided step and, on OpenCL and Vulkan, its kernel launches (a two-step
            run less a one-step run; the set-up, prompt encoding and noise, is counted apart).

            `train` times one `train diffusion` step (render the batch, text encoder and UNet forward,
            v-prediction loss, backward, AdamW, EMA) of a freshly initialised model of the shipped
            configuration at --batch (default 16 here).

            GEMM reports GFLOP/s against OpenBLAS (cblas_sgemm called directly) and the CPU backend;
            attention reports the fused kernel and the same computation as GEMM + softmax + GEMM.
            Figures are medians of --repeats timed runs after --warmup runs.
            """))

    enum Op: String, ExpressibleByArgument, CaseIterable {
        case gemm, attention, conv2d, layernorm, softmax, sampler, train, noisear, svd, npnet
    }

    @Argument(help: "gemm | attention | conv2d | layernorm | softmax | sampler | train | noisear | svd | npnet")
    var op: Op

    @OptionGroup var options: DeviceOptions

    @Option(help: "Square size for gemm (M = N = K) and layernorm/softmax columns.")
    var size: Int?
    @Option(help: "GEMM rows (M).") var m: Int?
    @Option(help: "GEMM columns (N).") var n: Int?
    @Option(help: "GEMM inner size (K).") var k: Int?
    @Option(name: .customLong("batch"), help: "Batch (attention, conv2d, sampler, svd: default 4; train: 16; noisear, npnet: 1).")
    var batchOption: Int?
    /// The batch of the ops whose default is 4.
    var batch: Int { batchOption ?? 4 }
    @Option(help: "Attention heads.") var heads: Int = 8
    @Option(help: "Attention queries.") var tq: Int = 256
    @Option(help: "Attention keys.") var tk: Int = 256
    @Option(help: "Attention head dim.") var dim: Int = 64
    @Option(help: "Rows for layernorm/softmax.") var rows: Int = 4096
    @Option(help: "conv2d input channels.") var channels: Int = 64
    @Option(help: "conv2d output channels.") var outChannels: Int = 64
    @Option(help: "conv2d kernel size.") var kernel: Int = 3
    @Flag(help: "svd: the plain Jacobi, without the QR preconditioning (for comparison).") var plainJacobi = false
    @Option(help: "npnet: time this network file (its own configuration) instead of the SDXL-size one.")
    var weights: String?
    @Option(help: "Untimed runs first.") var warmup: Int = 2
    @Option(help: "Timed runs.") var repeats: Int = 10
    @Option(help: ArgumentHelp("More devices to time in the same run, comma-separated (e.g. opencl:0,vulkan:0).",
                               valueName: "devices"))
    var also: String?
    @Flag(help: "Only the selected device (skip the CPU backend / OpenBLAS reference rows).")
    var noReference = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        for (name, v) in [("size", size), ("m", m), ("n", n), ("k", k)] {
            if let v, v < 1 { throw CLIError("--\(name) must be at least 1") }
        }
        for (name, v) in [("batch", batch), ("heads", heads), ("tq", tq), ("tk", tk), ("dim", dim), ("rows", rows),
                          ("channels", channels), ("out-channels", outChannels), ("kernel", kernel), ("repeats", repeats)]
        where v < 1 {
            throw CLIError("--\(name) must be at least 1")
        }
        if warmup < 0 { throw CLIError("--warmup must be at least 0") }
        if weights != nil && op != .npnet { throw CLIError("--weights applies to bench npnet only") }
        if weights != nil && size != nil { throw CLIError("--weights takes the network's own size; leave out --size") }
    }

    func run() throws {
        try runReportingErrors {
            // The CPU reference runs first, before an OpenCL runtime (whose worker threads share
            // the cores) is started.
            let wantsCPUOnly = (options.device ?? ProcessInfo.processInfo.environment["NOISEAR_DEVICE"]) == "cpu"
            let bench = Bench(warmup: warmup, repeats: repeats)
            var results: [BenchResult] = []
            var shares: [(device: String, what: String, [(String, Double)])] = []
            var svdResults: [SVDBenchResult] = []
            var devices: [() throws -> Device] = []
            if !noReference && !wantsCPUOnly { devices.append { Device.cpuDevice() } }
            devices.append { try options.open() }
            for spec in (also ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) })
            where !spec.isEmpty {
                devices.append { try Device.open(spec) }
            }
            var seen: Set<String> = []
            for open in devices {
                let d = try open()
                if seen.contains(d.info.id) { continue }
                seen.insert(d.info.id)
                try MemoryBudget.check(estimatedBytes(), on: d, what: "bench \(op.rawValue) at this size")
                switch op {
                case .gemm:
                    let s = size ?? 1024
                    results += try bench.gemm(m: m ?? s, n: n ?? s, k: k ?? s, device: d)
                case .attention:
                    results += try bench.attention(batch: batch, heads: heads, tq: tq, tk: tk, dim: dim, device: d)
                case .conv2d:
                    results += try bench.conv2d(batch: batch, channels: channels, outChannels: outChannels,
                                                size: size ?? 32, kernel: kernel, device: d)
                case .layernorm:
                    results += try bench.layerNorm(rows: rows, cols: size ?? 1024, device: d)
                case .softmax:
                    results += try bench.softmax(rows: rows, cols: size ?? 1024, device: d)
                case .npnet:
                    var c = NPNetConfig()
                    if let size { c.latentSize = size }
                    let (r, s) = try bench.npnet(config: c, weights: weights.map { URL(fileURLWithPath: $0) },
                                                 batch: batchOption ?? 1, device: d)
                    results.append(r)
                    shares.append((d.info.id, "one forward", s))
                case .noisear:
                    var c = NoiseARConfig()
                    if let size { c.latentSize = size }
                    results += try bench.noiseAR(config: c, batch: batchOption ?? 1, device: d)
                case .sampler:
                    let (r, s) = try bench.samplerStep(batch: batch, device: d)
                    results.append(r)
                    shares.append((d.info.id, "one step", s))
                case .train:
                    results.append(try bench.trainStep(batch: batchOption ?? 16, device: d))
                case .svd:
                    svdResults.append(try bench.svd(size: size ?? 256, batch: batch, precondition: !plainJacobi, device: d))
                }
            }
            if op == .svd {
                try printSVD(svdResults)
                return
            }
            if json {
                try printJSON(results)
                return
            }
            let ref = results.first
            print("op         backend     variant               shape                        median ms   rate        vs first")
            for r in results {
                let rate = r.gflops.map { String(format: "%8.1f GFLOP/s", $0) }
                    ?? r.gbps.map { String(format: "%8.2f GB/s", $0) } ?? ""
                let ratio = ref.map { String(format: "%6.2fx", $0.medianMs / r.medianMs) } ?? ""
                print([r.op.padding(toLength: 10, withPad: " ", startingAt: 0),
                       r.backend.padding(toLength: 11, withPad: " ", startingAt: 0),
                       r.variant.padding(toLength: 21, withPad: " ", startingAt: 0),
                       r.shape.padding(toLength: 28, withPad: " ", startingAt: 0),
                       String(format: "%9.3f", r.medianMs), rate, ratio].joined(separator: " "))
            }
            for (id, what, s) in shares {
                print("share of \(what) on \(id): " + s.map { String(format: "%@ %.0f%%", $0.0, 100 * $0.1) }.joined(separator: ", "))
            }
            for r in results {
                if let ops = r.ops {
                    print("per guided step on \(r.backend): \(ops) primitive ops" + (r.launches.map { ", \($0) kernel launches" } ?? "")
                          + (r.setupOps.map { "; set-up (prompt encoding, noise): \($0) ops" } ?? "")
                          + (r.setupLaunches.map { ", \($0) launches" } ?? ""))
                }
            }
        }
    }

    /// The op's working set (float32): inputs, outputs and the intermediates the reference
    /// rows keep (host copies, im2col, attention scores), generously; nil when it overflows.
    func estimatedBytes() -> UInt64? {
        let p = MemoryBudget.product
        let cols = size ?? 1024
        let counts: [Int?]
        switch op {
        case .gemm:
            let s = size ?? 1024, mm = m ?? s, nn = n ?? s, kk = k ?? s
            // A, B, C on the device, their host copies and the packed panels.
            counts = [p([3, mm, kk]), p([3, kk, nn]), p([3, mm, nn])]
        case .attention:
            counts = [p([4, batch, heads, tq, dim]), p([4, batch, heads, tk, dim]), p([3, batch, heads, tq, tk])]
        case .conv2d:
            let s = size ?? 32
            counts = [p([3, batch, channels, s, s]), p([2, batch, channels, kernel, kernel, s, s]),
                      p([3, batch, outChannels, s, s]), p([outChannels, channels, kernel, kernel])]
        case .layernorm, .softmax:
            counts = [p([4, rows, cols])]
        case .svd:
            let s = size ?? 256
            counts = [p([6, batch, s, s])]
        case .sampler:
            return UNetConfig().estimatedSamplingBytes(batch: batch)
        case .train:
            // The recorded activations of a training step: a few times a sampling step's.
            return UNetConfig().estimatedSamplingBytes(batch: batchOption ?? 16).map { $0.multipliedReportingOverflow(by: 8) }
                .flatMap { $0.overflow ? nil : $0.partialValue }
        case .noisear, .npnet:
            // The authors' SDXL sizes: weights and activations are dominated by the fixed model;
            // noisear also copies 256 MiB for its bandwidth floor.
            let s = size ?? 128
            counts = [p([64, batchOption ?? 1, 4, s, s]), p([160_000_000]), op == .noisear ? p([2, 64 << 20]) : 0]
        }
        var ints: [Int] = []
        for c in counts {
            guard let c else { return nil }
            ints.append(c)
        }
        return MemoryBudget.floatBytes(ints)
    }

    func printSVD(_ results: [SVDBenchResult]) throws {
        if json {
            try printJSON(results)
            return
        }
        let ref = results.first
        print("op   backend     variant          shape            sweeps  median ms   ms/matrix   matrices/s  vs first")
        for r in results {
            let ratio = ref.map { String(format: "%6.2fx", $0.medianMs / r.medianMs) } ?? ""
            print(["svd ", r.backend.padding(toLength: 11, withPad: " ", startingAt: 0),
                   r.variant.padding(toLength: 16, withPad: " ", startingAt: 0),
                   "\(r.batch)x\(r.size)x\(r.size)".padding(toLength: 16, withPad: " ", startingAt: 0),
                   String(format: "%6d %10.3f %11.3f %12.1f", r.sweeps, r.medianMs, r.msPerMatrix, r.matricesPerSecond),
                   ratio].joined(separator: " "))
        }
    }
}
