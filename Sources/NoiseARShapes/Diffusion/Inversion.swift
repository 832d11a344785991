import Foundation
import NoiseARCore
import NoiseARModels

/// DDIM inversion of clean images to the noise that leads back to them: the NoiseAR training
/// data that carries information (an inverted noise is a preimage of a correct image, where a
/// kept Gaussian start carries at most -ln(keep rate) nats).
public enum Inversion {
    /// x_T for clean images `images` [B, 3, 32, 32] (values in [-1, 1]) with `steps` DDIM
    /// inversion steps of the model's schedule at guidance `cfg` (1: conditional prediction only,
    /// the usual choice; the model is evaluated at the next timestep, as in diffusers).
    ///
    /// `start` in [0, 1) is the share of the schedule skipped by forward diffusion: the images are
    /// first noised to the timestep where inversion step round(start * steps) begins, with image
    /// i's standard normals from Philox stream seeds[i], and inverted from there. 0 inverts the
    /// clean image all the way; a perfect rendering inverted all the way gives a narrow,
    /// heavy-tailed noise (flat regions map to near zero), a partly noised one keeps the layout
    /// in its low frequencies and the rest Gaussian.
    public static func invert(model: TextToImageModel, images: Tensor, prompts: [String], steps: Int,
                              cfg: Double, start: Double = 0, seeds: [UInt64] = []) throws -> Tensor {
        try require(steps >= 2, "inversion steps must be at least 2, got \(steps)")
        try require(cfg.isFinite && cfg >= 0, "inversion guidance must be a non-negative number, got \(cfg)")
        try require(start >= 0 && start < 1, "the inversion's start must be in [0, 1), got \(start)")
        try requireShape(images.shape.count == 4 && images.shape[0] > 0, "inversion takes images [B, C, H, W], got \(images.shape)")
        let b = images.shape[0]
        try require(prompts.count == b, "\(prompts.count) prompts for \(b) images")
        var inverse = try DDIMInverseScheduler(config: model.schedulerConfig(karras: false), steps: steps)
        let first = Int((start * Double(steps)).rounded())
        return try model.device.noGrad {
            var x = images
            if first > 0 {
                try require(seeds.count == b, "partly noised inversion needs a seed per image (\(seeds.count) for \(b))")
                let a = inverse.alphasCumprod[Int(inverse.timesteps[first - 1])]
                let shape = Array(images.shape.dropFirst())
                let parts = try seeds.map { try DiffusionSampler.gaussianNoise(count: 1, shape: shape, seed: $0, on: model.device) }
                let noise = parts.count == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
                x = try images.scaled(Float(a.squareRoot())) + noise.scaled(Float((1 - a).squareRoot()))
            }
            let context = try DiffusionSampler.guidanceContext(model: model, prompts: prompts, cfg: cfg)
            for i in first..<inverse.timesteps.count {
                let out = try DiffusionSampler.guidedPrediction(model: model, x, t: inverse.timesteps[i], context: context, cfg: cfg)
                x = try inverse.step(modelOutput: out, stepIndex: i, sample: x, noise: nil)
            }
            return x
        }
    }

    /// Each sample [C, H, W] of `x` [B, C, H, W] scaled about its own mean to standard
    /// deviation 1 over its elements. The mean is kept: x_T holds sqrt(alpha-bar_T) x_0, so its
    /// mean is the image's background level, which the sampler uses. A constant sample stays.
    public static func rescaled(_ x: HostTensor) -> HostTensor {
        let b = x.shape.first ?? 0
        guard b > 0 else { return x }
        let per = x.data.count / b
        var out = x
        for i in 0..<b {
            let s = NoiseStatistics.moments(x.data[i * per..<(i + 1) * per])
            let scale = s.std > 1e-12 ? 1 / s.std : 1
            for j in i * per..<(i + 1) * per { out.data[j] = Float(s.mean + (Double(x.data[j]) - s.mean) * scale) }
        }
        return out
    }
}

/// How a set of noises [B, C, H, W] differs from N(0, I): a standard normal has mean 0, standard
/// deviation 1, neighbour correlation 0 and kurtosis 3.
public struct NoiseStatistics: Codable, Sendable, Equatable {
    public var count: Int
    public var mean: Double
    public var std: Double
    /// Correlation of horizontally and vertically adjacent elements of the same channel (spatial
    /// smoothness: what a plain Gaussian never has).
    public var neighbourCorrelation: Double
    /// Fourth standardised moment.
    public var kurtosis: Double
    /// Mean over samples of each sample's own standard deviation (a per-sample scale).
    public var meanSampleStd: Double

    public init(count: Int, mean: Double, std: Double, neighbourCorrelation: Double, kurtosis: Double, meanSampleStd: Double) {
        self.count = count
        self.mean = mean
        self.std = std
        self.neighbourCorrelation = neighbourCorrelation
        self.kurtosis = kurtosis
        self.meanSampleStd = meanSampleStd
    }

    public static func moments(_ v: ArraySlice<Float>) -> (mean: Double, std: Double) {
        guard !v.isEmpty else { return (0, 0) }
        var s = 0.0, s2 = 0.0
        for x in v { s += Double(x); s2 += Double(x) * Double(x) }
        let n = Double(v.count), m = s / n
        return (m, max(s2 / n - m * m, 0).squareRoot())
    }

    /// The statistics of `x` [B, C, H, W].
    public static func of(_ x: HostTensor) throws -> NoiseStatistics {
        try requireShape(x.shape.count == 4 && x.shape.allSatisfy { $0 > 0 }, "noise statistics need [B, C, H, W], got \(x.shape)")
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (mean, std) = moments(x.data[...])
        var m4 = 0.0, pairs = 0.0, cross = 0.0, sampleStd = 0.0
        for v in x.data { let d = Double(v) - mean; m4 += d * d * d * d }
        for i in 0..<b {
            sampleStd += moments(x.data[i * c * h * w..<(i + 1) * c * h * w]).std
            for ch in 0..<c {
                let base = (i * c + ch) * h * w
                for y in 0..<h {
                    for xx in 0..<w {
                        let a = Double(x.data[base + y * w + xx]) - mean
                        if xx + 1 < w { cross += a * (Double(x.data[base + y * w + xx + 1]) - mean); pairs += 1 }
                        if y + 1 < h { cross += a * (Double(x.data[base + (y + 1) * w + xx]) - mean); pairs += 1 }
                    }
                }
            }
        }
        let variance = std * std, n = Double(x.data.count)
        return NoiseStatistics(count: b, mean: mean, std: std,
                               neighbourCorrelation: variance > 0 && pairs > 0 ? cross / pairs / variance : 0,
                               kurtosis: variance > 0 ? m4 / n / (variance * variance) : 0,
                               meanSampleStd: sampleStd / Double(b))
    }

    /// The count-weighted combination of statistics of disjoint sets (exact for mean and std,
    /// count-weighted for the others).
    public static func combined(_ parts: [NoiseStatistics]) -> NoiseStatistics? {
        let total = parts.reduce(0) { $0 + $1.count }
        guard total > 0 else { return nil }
        func avg(_ f: (NoiseStatistics) -> Double) -> Double {
            parts.reduce(0.0) { $0 + f($1) * Double($1.count) } / Double(total)
        }
        let mean = avg(\.mean)
        let second = avg { $0.std * $0.std + $0.mean * $0.mean }
        return NoiseStatistics(count: total, mean: mean, std: max(second - mean * mean, 0).squareRoot(),
                               neighbourCorrelation: avg(\.neighbourCorrelation), kurtosis: avg(\.kurtosis),
                               meanSampleStd: avg(\.meanSampleStd))
    }

    /// The shard metadata key of the raw inverted noises' statistics (`collect --method inversion`).
    public static let metadataKey = "raw_noise_statistics"

    /// The combined raw statistics recorded in the shards of a collection folder (or one shard),
    /// nil when none has them.
    public static func recorded(in url: URL) throws -> NoiseStatistics? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { return nil }
        let files = isDir.boolValue
            ? try FileManager.default.contentsOfDirectory(atPath: url.path).filter { $0.hasSuffix(".safetensors") }.sorted()
                .map { url.appendingPathComponent($0) }
            : [url]
        let parts = try files.compactMap { f -> NoiseStatistics? in
            guard let json = try SafeTensorsFile.read(f).metadata[metadataKey] else { return nil }
            return try? JSONDecoder().decode(NoiseStatistics.self, from: Data(json.utf8))
        }
        return combined(parts)
    }

    public var summary: String {
        String(format: "mean %+.3f, std %.3f (per sample %.3f), neighbour correlation %+.3f, kurtosis %.2f over %d noises (N(0, I): 0, 1, 0, 3)",
               mean, std, meanSampleStd, neighbourCorrelation, kurtosis, count)
    }
}

extension NoiseCollection {
    /// Inversion collection: for each prompt and layout seed, the renderer draws a correct scene
    /// (positions and sizes from the seed), DDIM inversion turns it into x_T, which is rescaled to
    /// unit standard deviation per sample when `normalize`; with `threshold` set, x_T is sampled again with `settings` and
    /// kept only when that image scores at least `threshold` (its score is stored), else every
    /// x_T is kept with the rendered scene's score (1). Returns the kept items, the number of
    /// scenes inverted and the statistics of the raw inverted noises (before rescaling).
    public static func inversion(model: TextToImageModel, prompts: [(Int, String)], candidates: Int, baseSeed: UInt64,
                                 settings: SamplingSettings, batch: Int, inversionSteps: Int, inversionCFG: Double,
                                 inversionStart: Double = 0, normalize: Bool, threshold: Double?,
                                 progress: (Int) -> Void = { _ in }) throws -> (NoiseDataset, Int, NoiseStatistics?) {
        try require(candidates >= 1, "candidates must be at least 1")
        let jobs = prompts.flatMap { p in (0..<candidates).map { (p.1, seed(base: baseSeed, prompt: p.0, candidate: $0, candidates: candidates)) } }
        let dev = model.device
        var noiseV: [Float] = [], embedV: [Float] = [], scores: [Float] = []
        var kept: [(String, UInt64)] = []
        var raw: [NoiseStatistics] = []
        var start = 0
        while start < jobs.count {
            let chunk = Array(jobs[start..<min(start + batch, jobs.count)])
            let ps = chunk.map(\.0), ss = chunk.map(\.1)
            var pixels: [Float] = []
            for (p, s) in chunk { pixels += try Scene.sample(prompt: p, seed: s).renderTensor().data }
            let images = try Tensor(pixels, shape: [chunk.count, 3, Scene.size, Scene.size], on: dev)
            let inverted = try Inversion.invert(model: model, images: images, prompts: ps, steps: inversionSteps, cfg: inversionCFG,
                                                start: inversionStart, seeds: ss).toHost()
            try inverted.requireFinite("DDIM-inverted noise", because: "the model diverged on a rendered scene")
            raw.append(try NoiseStatistics.of(inverted))
            let xT = normalize ? Inversion.rescaled(inverted) : inverted
            var chunkScores = [Float](repeating: 1, count: chunk.count)
            if let threshold {
                let images = try DiffusionSampler.sample(model: model, prompts: ps, noise: try Tensor(xT, on: dev), seed: ss[0], settings: settings)
                for (i, rgb) in try DiffusionSampler.rgb(images).enumerated() {
                    let r = try Reward.evaluate(image: rgb, prompt: ps[i]).score
                    chunkScores[i] = r >= threshold ? Float(r) : -1
                }
            }
            let embeds = try dev.noGrad { try model.encode(ps) }.toArray()
            let perN = xT.data.count / chunk.count, perE = embeds.count / chunk.count
            for i in 0..<chunk.count where chunkScores[i] >= 0 {
                noiseV += xT.data[i * perN..<(i + 1) * perN]
                embedV += embeds[i * perE..<(i + 1) * perE]
                scores.append(chunkScores[i])
                kept.append((ps[i], ss[i]))
            }
            start += chunk.count
            progress(start)
        }
        let k = kept.count
        let ds = NoiseDataset(noise: HostTensor(shape: [k, 3, Scene.size, Scene.size], data: noiseV),
                              promptEmbeds: HostTensor(shape: [k, model.config.text.maxLength, model.config.text.hiddenSize], data: embedV),
                              scores: scores, prompts: kept.map(\.0), seeds: kept.map(\.1))
        return (ds, jobs.count, NoiseStatistics.combined(raw))
    }
}
