import NoiseARCore
import NoiseARModels
import CBLAS
import Foundation

/// One benchmark measurement.
public struct BenchResult: Codable, Sendable {
    public var op: String
    /// Which implementation: "openblas" (direct reference call), a device id, or a variant.
    public var backend: String
    public var variant: String
    public var shape: String
    public var medianMs: Double
    public var minMs: Double
    public var repeats: Int
    /// GFLOP/s for compute-bound ops, else nil.
    public var gflops: Double?
    /// GB/s of compulsory traffic for memory-bound ops, else nil.
    public var gbps: Double?
    /// Primitive ops per run (the sampler step), else nil.
    public var ops: Int? = nil
    /// Kernel launches per run on an OpenCL or Vulkan device (the sampler step), else nil.
    public var launches: Int? = nil
    /// The sampler step's set-up (prompt encoding, noise): primitive ops and kernel launches of
    /// a one-step run besides its step.
    public var setupOps: Int? = nil
    public var setupLaunches: Int? = nil
}

/// Benchmarks of single ops: warm-up runs, then `repeats` timed runs (each waits for the
/// device), reporting the median.
public struct Bench {
    public var warmup: Int
    public var repeats: Int
    public init(warmup: Int = 2, repeats: Int = 10) {
        self.warmup = warmup
        self.repeats = repeats
    }

    /// Times `body` (which must leave the device idle when it returns); returns (median, min) in ms.
    public func time(_ body: () throws -> Void) throws -> (Double, Double) {
        for _ in 0..<warmup { try body() }
        var ms: [Double] = []
        for _ in 0..<max(repeats, 1) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            ms.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        ms.sort()
        return (ms[ms.count / 2], ms[0])
    }

    func result(_ op: String, _ backend: String, _ variant: String, _ shape: String, _ t: (Double, Double),
                flops: Double? = nil, bytes: Double? = nil) -> BenchResult {
        BenchResult(op: op, backend: backend, variant: variant, shape: shape, medianMs: t.0, minMs: t.1,
                    repeats: repeats, gflops: flops.map { $0 / (t.0 * 1e6) },
                    gbps: bytes.map { $0 / (t.0 * 1e6) })
    }

    static func random(_ shape: [Int], _ seed: UInt64, on device: Device) throws -> Tensor {
        try Tensor.randn(shape, seed: seed, on: device)
    }

    /// C = A B for M x K by K x N, through the device layer; on the CPU backend also a direct
    /// cblas_sgemm call on preallocated buffers as the reference, with OpenBLAS's own threads
    /// (one per core) for that row only: the backend runs OpenBLAS single-threaded and splits
    /// the product over the cores itself.
    public func gemm(m: Int, n: Int, k: Int, device: Device) throws -> [BenchResult] {
        let shape = "\(m)x\(n)x\(k)"
        let flops = 2.0 * Double(m) * Double(n) * Double(k)
        var out: [BenchResult] = []
        if device.isCPU {
            let a = Philox.normal(count: m * k, seed: 1), b = Philox.normal(count: k * n, seed: 2)
            var c = [Float](repeating: 0, count: m * n)
            openblas_set_num_threads(Int32(ProcessInfo.processInfo.activeProcessorCount))
            defer { openblas_set_num_threads(1) }
            let t = try time {
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
                                        pa.baseAddress, Int32(k), pb.baseAddress, Int32(n), 0, pc.baseAddress, Int32(n))
                        }
                    }
                }
            }
            out.append(result("gemm", "openblas", "cblas_sgemm", shape, t, flops: flops))
        }
        let a = try Self.random([m, k], 1, on: device), b = try Self.random([k, n], 2, on: device)
        let t = try time {
            _ = try Tensor.matmul(a, b)
            try device.backend.synchronize()
        }
        out.append(result("gemm", device.info.id, variantName(device, "gemm"), shape, t, flops: flops))
        return out
    }

    func variantName(_ device: Device, _ op: String) -> String {
        guard let cl = device.backend as? any KernelBackend else { return "cpu" }
        switch op {
        case "gemm": return cl.params["GEMM_VARIANT"] == 1 ? "tiled(\(cl.params.profile))" : "packed(\(cl.params.profile))"
        default: return "\(cl.params.profile)-params"
        }
    }

    /// Fused attention against the same computation as separate GEMM + softmax + GEMM kernels.
    public func attention(batch: Int, heads: Int, tq: Int, tk: Int, dim: Int, device: Device) throws -> [BenchResult] {
        let q = try Self.random([batch, heads, tq, dim], 1, on: device)
        let k = try Self.random([batch, heads, tk, dim], 2, on: device)
        let v = try Self.random([batch, heads, tk, dim], 3, on: device)
        let shape = "B\(batch) H\(heads) Tq\(tq) Tk\(tk) D\(dim)"
        let flops = 4.0 * Double(batch * heads) * Double(tq) * Double(tk) * Double(dim)
        let fused = try time {
            _ = try Tensor.attention(q: q, k: k, v: v)
            try device.backend.synchronize()
        }
        let separate = try time {
            _ = try Tensor.attentionSeparate(q: q, k: k, v: v)
            try device.backend.synchronize()
        }
        return [result("attention", device.info.id, "fused", shape, fused, flops: flops),
                result("attention", device.info.id, "gemm+softmax+gemm", shape, separate, flops: flops)]
    }

    public func conv2d(batch: Int, channels: Int, outChannels: Int, size: Int, kernel: Int, device: Device) throws -> [BenchResult] {
        let x = try Self.random([batch, channels, size, size], 1, on: device)
        let w = try Self.random([outChannels, channels, kernel, kernel], 2, on: device)
        let t = try time {
            _ = try Tensor.conv2d(x, weight: w, padding: kernel / 2)
            try device.backend.synchronize()
        }
        let flops = 2.0 * Double(batch * outChannels * size * size) * Double(channels * kernel * kernel)
        // Which path `Tensor.conv2d` took: the direct kernel where the backend takes the call.
        let g = ConvGeometry(channels: channels, height: size, width: size, kernelH: kernel, kernelW: kernel,
                             padding: kernel / 2)
        let probe = try Tensor.empty([batch, outChannels, g.outH, g.outW], on: device)
        let direct = !device.isCPU && device.backend.supports(
            Op.Conv2d(g, batch: batch, outChannels: outChannels, x: x.ref, weight: w.ref, bias: nil, out: probe.ref))
        let variant = direct ? "direct(\((device.backend as? any KernelBackend)?.params.profile.rawValue ?? "-"))"
            : variantName(device, "gemm")
        return [result("conv2d", device.info.id, variant,
                       "N\(batch) C\(channels)->\(outChannels) \(size)x\(size) k\(kernel)", t, flops: flops)]
    }

    public func layerNorm(rows: Int, cols: Int, device: Device) throws -> [BenchResult] {
        let x = try Self.random([rows, cols], 1, on: device)
        let g = try Self.random([cols], 2, on: device), b = try Self.random([cols], 3, on: device)
        let t = try time {
            _ = try x.layerNorm(gamma: g, beta: b)
            try device.backend.synchronize()
        }
        return [result("layernorm", device.info.id, variantName(device, "layernorm"), "\(rows)x\(cols)", t,
                       bytes: 2.0 * Double(rows * cols) * 4)]
    }

    public func softmax(rows: Int, cols: Int, device: Device) throws -> [BenchResult] {
        let x = try Self.random([rows, cols], 1, on: device)
        let t = try time {
            _ = try x.softmax()
            try device.backend.synchronize()
        }
        return [result("softmax", device.info.id, variantName(device, "softmax"), "\(rows)x\(cols)", t,
                       bytes: 2.0 * Double(rows * cols) * 4)]
    }
}

extension Tensor {
    /// Attention as three separate kernels (GEMM, softmax, GEMM): the unfused reference the
    /// benchmarks compare the fused kernel with. Not recorded on the tape.
    public static func attentionSeparate(q: Tensor, k: Tensor, v: Tensor) throws -> Tensor {
        try requireShape(q.rank == 4 && k.rank == 4 && v.rank == 4, "attention expects [B,H,T,D] tensors")
        let d = AttentionDesc(batch: q.shape[0], heads: q.shape[1], tq: q.shape[2], tk: k.shape[2],
                              headDim: q.shape[3], valueDim: v.shape[3])
        let p = try attentionProbs(d, q, k, nil)
        let out = try Tensor.empty([d.batch, d.heads, d.tq, d.valueDim], on: q.device)
        try attentionGemm(d, p, false, v, d.vStrides, false, into: out, d.oStrides, m: d.tq, n: d.valueDim,
                          kdim: d.tk, scale: 1)
        return out
    }
}

extension Bench {
    /// One guided step of the shapes-world model with random weights of the shipped
    /// configuration: the timed part is what the PyTorch side times, the UNet on 2 x batch
    /// inputs and the guidance combination, with the prompts encoded beforehand. Also returns
    /// each op family's share of a one-step `sample` run (prompt encoding, the step and its
    /// DPM-Solver++ update; each kernel waited for) and its ops and launches per guided step.
    public func samplerStep(batch: Int, device: Device) throws -> (BenchResult, [(String, Double)]) {
        let model = try TextToImageModel(config: DiffusionModelConfig(), device: device, seed: 1)
        let prompts = [String](repeating: "a red circle to the left of a blue square", count: batch)
        let noise = try DiffusionSampler.gaussianNoise(count: batch, shape: [3, Scene.size, Scene.size], seed: 1, on: device)
        let settings = SamplingSettings(sampler: .dpmpp2m, steps: 1, cfg: 5)
        // Without a tape, as the sampler runs it.
        let context = try device.noGrad {
            try DiffusionSampler.guidanceContext(model: model, prompts: prompts, cfg: settings.cfg)
        }
        let t = try time {
            try device.noGrad {
                _ = try DiffusionSampler.guidedPrediction(model: model, noise, t: 961, context: context, cfg: settings.cfg)
            }
            try device.backend.synchronize()
        }
        let run = {
            _ = try DiffusionSampler.sample(model: model, prompts: prompts, noise: noise, seed: 1, settings: settings)
            try device.backend.synchronize()
        }
        let kernels = device.backend as? any KernelBackend
        let launchesBefore = kernels?.launches ?? 0
        let shares = try profiledShares(device, run)
        let launches1 = kernels.map { $0.launches - launchesBefore }
        let ops1 = device.profile.values.reduce(0) { $0 + $1.count }
        device.profiling = true
        defer { device.profiling = false }
        // A guided step's own ops and launches: a two-step run's count less the one-step run's
        // (which also encodes the prompts and draws the noise: the set-up).
        var two = settings
        two.steps = 2
        let before2 = kernels?.launches ?? 0
        device.resetProfile()
        _ = try DiffusionSampler.sample(model: model, prompts: prompts, noise: noise, seed: 1, settings: two)
        try device.backend.synchronize()
        let ops = device.profile.values.reduce(0) { $0 + $1.count } - ops1
        let launches = kernels.map { $0.launches - before2 - (launches1 ?? 0) }
        var r = result("sampler-step", device.info.id, "cfg5: UNet x2B + CFG", "batch \(batch) 3x32x32", t)
        r.ops = ops
        r.launches = launches
        r.setupOps = ops1 - ops
        r.setupLaunches = launches1.flatMap { l1 in launches.map { l1 - $0 } }
        return (r, shares)
    }

    /// One `train diffusion` step at `batch` (the batch rendered, text encoder and UNet forward,
    /// loss, backward, AdamW, EMA) of a freshly initialised model of the shipped configuration;
    /// each timed run is the trainer's next step.
    public func trainStep(batch: Int, device: Device) throws -> BenchResult {
        try require(batch >= 1, "bench train needs --batch of at least 1")
        let model = try TextToImageModel(config: DiffusionModelConfig(), device: device, seed: 1)
        var settings = DiffusionTrainingSettings()
        settings.batch = batch
        let trainer = try DiffusionTrainer(model: model, settings: settings)
        let t = try time {
            _ = try trainer.trainStep()
            try device.backend.synchronize()
        }
        return result("train-step", device.info.id, "v-pred AdamW EMA", "batch \(batch) 3x32x32", t)
    }

    /// The authors' SDXL-size NoiseAR (4x128x128 latent, P 32, d_model 2048, d_ff 4096, 1 layer,
    /// 1 head, 77x2048 prompt embeddings; random weights) unless `config` says otherwise: one
    /// batch-`batch` sample with the key/value cache and without it.
    public func noiseAR(config: NoiseARConfig = NoiseARConfig(), textTokens: Int = 77, batch: Int = 1,
                        device: Device) throws -> [BenchResult] {
        let net = try NoiseARNet(config: config, device: device, seed: 1)
        let text = try Tensor.randn([batch, textTokens, config.contextDim], seed: 2, on: device)
        let c = config
        let shape = "b\(batch) \(c.latentChannels)x\(c.latentSize)^2 P\(c.patchSize) d\(c.dModel) L\(c.nLayers)"
        let weightBytes = Double(net.params.count) * 4
        var out: [BenchResult] = []
        for cached in [true, false] {
            let t = try time {
                _ = try net.sample(text: text, temperature: 0.5, seed: 3, cached: cached)
                try device.backend.synchronize()
            }
            // Compulsory traffic: every weight once per patch (the prefix re-runs read them
            // once per patch too), so GB/s is weights x patches / time.
            out.append(result("noisear", device.info.id, cached ? "kv-cached" : "uncached", shape, t,
                              bytes: weightBytes * Double(c.patches)))
        }
        // The floor: the same compulsory traffic at the device's measured bandwidth (a 256 MiB
        // copy, beyond every cache; read plus written bytes, as STREAM counts them). It goes
        // first, so the last column of the other rows is floor / time.
        let count = 64 << 20
        // (both written first: the timed copies never fault in fresh pages, even without warm-up)
        let src = try Tensor.zeros([count], on: device), dst = try Tensor.zeros([count], on: device)
        let copy = try time {
            try device.run(Op.Copy(shape: [count], src: Strided(src.ref, strides: [1]), dst: Strided(dst.ref, strides: [1])))
            try device.backend.synchronize()
        }
        let copyBytes = Double(count) * 8
        let floorMs = weightBytes * Double(c.patches) / (copyBytes / copy.0)
        out.insert(result("noisear", device.info.id, "bandwidth floor", shape, (floorMs, floorMs),
                          bytes: weightBytes * Double(c.patches)), at: 0)
        out.append(result("memory", device.info.id, "copy 256 MiB", "64M floats", copy, bytes: copyBytes))
        return out
    }

    /// NPNet at the authors' SDXL size unless `config` says otherwise (4x128x128 latent,
    /// swin_tiny: embed 96, depths 2,2,6,2, heads 3,6,12,24; 77x2048 prompt embeddings; random
    /// weights): one batch-`batch` forward (SVD branch with our SVD, text injection, Swin branch).
    /// One NPNet forward at `batch` on random inputs: a freshly initialised network of `config`,
    /// or the network in `weights` (its own configuration); with each op family's share of one
    /// profiled forward.
    public func npnet(config: NPNetConfig = NPNetConfig(), weights: URL? = nil, batch: Int = 1,
                      device: Device) throws -> (BenchResult, shares: [(String, Double)]) {
        let net = try weights.map { try NPNet.load($0, device: device) } ?? NPNet(config: config, device: device, seed: 1)
        let c = net.config
        let x = try Tensor.randn([batch] + c.latentShape, seed: 2, on: device)
        let text = try Tensor.randn([batch, c.textTokens, c.textDim], seed: 3, on: device)
        let shape = "b\(batch) \(c.latentChannels)x\(c.latentSize)^2 swin\(c.swin.embedDim)"
        let run = {
            _ = try device.noGrad { try net(noise: x, promptEmbeds: text).golden }
            try device.backend.synchronize()
        }
        let t = try time(run)
        return (result("npnet", device.info.id, "forward", shape, t), try profiledShares(device, run))
    }

    /// Each op family's share of the time of one run of `body` (with its op count), largest
    /// first; the device's profile is left holding that run.
    func profiledShares(_ device: Device, _ body: () throws -> Void) throws -> [(String, Double)] {
        device.resetProfile()
        device.profiling = true
        defer { device.profiling = false }
        try body()
        let total = device.profile.values.reduce(0) { $0 + $1.seconds }
        return device.profile.map { kind, v in ("\(kind.rawValue) (\(v.count))", v.seconds / max(total, 1e-12)) }
            .sorted { $0.1 > $1.1 }
    }
}
