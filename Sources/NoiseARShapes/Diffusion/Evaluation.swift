import Foundation
import NoiseARCore
import NoiseARModels

/// Prompt-fidelity statistics of a set of samples, scored with the exact shapes-world reward.
public struct FidelityReport: Codable, Sendable {
    public var samples = 0
    /// Mean fraction of facts that hold.
    public var meanScore = 0.0
    /// Fraction of samples where every fact holds.
    public var fullFidelity = 0.0
    /// Per fact kind (color, shape, relation, count): fraction of such facts that hold.
    public var perKind: [String: Double] = [:]
    /// Single-object prompts: mean score, and the fraction with both color and shape right.
    public var singleMeanScore = 0.0
    public var singleColorAndShape = 0.0
    /// Two-object prompts: mean score.
    public var pairMeanScore = 0.0

    public init(results: [RewardResult]) {
        samples = results.count
        guard !results.isEmpty else { return }
        meanScore = results.map(\.score).reduce(0, +) / Double(results.count)
        fullFidelity = Double(results.filter(\.allHold).count) / Double(results.count)
        var held: [String: (Int, Int)] = [:]
        for r in results {
            for f in r.facts {
                let old = held[f.kind.rawValue] ?? (0, 0)
                held[f.kind.rawValue] = (old.0 + (f.holds ? 1 : 0), old.1 + 1)
            }
        }
        perKind = held.mapValues { Double($0.0) / Double(max($0.1, 1)) }
        let singles = results.filter { !$0.facts.contains { $0.kind == .relation } }
        let pairs = results.filter { $0.facts.contains { $0.kind == .relation } }
        if !singles.isEmpty {
            singleMeanScore = singles.map(\.score).reduce(0, +) / Double(singles.count)
            singleColorAndShape = Double(singles.filter { r in
                r.facts.filter { $0.kind == .color || $0.kind == .shape }.allSatisfy(\.holds)
            }.count) / Double(singles.count)
        }
        if !pairs.isEmpty { pairMeanScore = pairs.map(\.score).reduce(0, +) / Double(pairs.count) }
    }
}

/// A paired comparison of two noise sources on the same prompts and seeds.
public struct PairedComparison: Codable, Sendable {
    public var pairs = 0
    /// Mean of (prior score - baseline score) and its standard error.
    public var meanDifference = 0.0, standardError = 0.0
    public var wins = 0, losses = 0, ties = 0
    /// Fraction of samples with every fact right: prior, baseline.
    public var fullFidelityPrior = 0.0, fullFidelityBaseline = 0.0

    public init(prior: [RewardResult], baseline: [RewardResult]) {
        let d = zip(prior, baseline).map { $0.score - $1.score }
        pairs = d.count
        guard pairs > 0 else { return }
        meanDifference = d.reduce(0, +) / Double(pairs)
        let variance = d.reduce(0) { $0 + ($1 - meanDifference) * ($1 - meanDifference) } / Double(max(pairs - 1, 1))
        standardError = (variance / Double(pairs)).squareRoot()
        wins = d.filter { $0 > 1e-9 }.count
        losses = d.filter { $0 < -1e-9 }.count
        ties = pairs - wins - losses
        fullFidelityPrior = Double(prior.filter { $0.score >= 1 }.count) / Double(pairs)
        fullFidelityBaseline = Double(baseline.filter { $0.score >= 1 }.count) / Double(pairs)
    }
}

/// Sampling and scoring the held-out (or train) prompts from a noise source: Gaussian noise by
/// default; the learned priors plug in as `NoiseSource`s.
public enum Evaluation {
    /// Gaussian noise: image i from Philox stream seeds[i].
    public static func gaussian(on device: Device, rng: GaussianSource = .philox) -> NoiseSource {
        { _, seeds in try consecutiveRuns(seeds) { start, count in
            try rng.standardNormal(count: count, shape: [3, Scene.size, Scene.size], seed: start, on: device)
        } }
    }

    /// `draw(first seed, count)` for every run of consecutive seeds, concatenated in order: a
    /// Philox draw is per image anyway; PyTorch's generator draws a run as one batch from its
    /// first seed (what a diffusers user's seed gives for the batch).
    public static func consecutiveRuns(_ seeds: [UInt64], _ draw: (UInt64, Int) throws -> Tensor) throws -> Tensor {
        var parts: [Tensor] = []
        var start = 0
        while start < seeds.count {
            var end = start + 1
            while end < seeds.count && seeds[end] == seeds[end - 1] &+ 1 { end += 1 }
            parts.append(try draw(seeds[start], end - start))
            start = end
        }
        try require(!parts.isEmpty, "no seeds")
        return parts.count == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
    }

    /// Samples every (prompt, seed) pair in batches and scores each with the reward.
    public static func run(model: TextToImageModel, prompts: [String], seeds: [UInt64], settings: SamplingSettings,
                           batch: Int, noise: NoiseSource? = nil,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> [RewardResult] {
        var timing = Timing()
        return try run(model: model, prompts: prompts, seeds: seeds, settings: settings, batch: batch, noise: noise,
                       timing: &timing, progress: progress)
    }

    /// Seconds spent drawing initial noise (the prior) and sampling images from it.
    public struct Timing: Codable, Sendable, Equatable {
        public var noiseSeconds = 0.0
        public var samplingSeconds = 0.0
        public init() {}
        /// The prior's share of the whole time.
        public var noiseShare: Double { noiseSeconds / max(noiseSeconds + samplingSeconds, 1e-12) }
    }

    /// `run`, adding the time spent in the noise source and in the sampler to `timing`.
    public static func run(model: TextToImageModel, prompts: [String], seeds: [UInt64], settings: SamplingSettings,
                           batch: Int, noise: NoiseSource? = nil, timing: inout Timing,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> [RewardResult] {
        try require(batch >= 1, "batch must be at least 1")
        let source = noise ?? gaussian(on: model.device)
        let jobs = prompts.flatMap { p in seeds.map { (p, $0) } }
        var results: [RewardResult] = []
        var start = 0
        while start < jobs.count {
            let chunk = Array(jobs[start..<min(start + batch, jobs.count)])
            let ps = chunk.map(\.0), ss = chunk.map(\.1)
            var t0 = DispatchTime.now().uptimeNanoseconds
            let x = try source(ps, ss)
            try x.device.backend.synchronize()  // the prior's work is finished before the clock stops
            timing.noiseSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            t0 = DispatchTime.now().uptimeNanoseconds
            // Per-image step noise continues each image's own stream (as `sample` does).
            var images: [Tensor] = []
            if chunk.count == 1 || !needsPerImageStreams(settings) {
                images = [try DiffusionSampler.sample(model: model, prompts: ps, noise: x, seed: ss[0], settings: settings)]
            } else {
                for i in 0..<chunk.count {
                    images.append(try DiffusionSampler.sample(model: model, prompts: [ps[i]], noise: x.slice(axis: 0, i, i + 1),
                                                              seed: ss[i], settings: settings))
                }
            }
            let rgbs = try images.flatMap { try DiffusionSampler.rgb($0) }
            timing.samplingSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            for (rgb, p) in zip(rgbs, ps) { results.append(try Reward.evaluate(image: rgb, prompt: p)) }
            start += chunk.count
            progress(start, jobs.count)
        }
        return results
    }

    /// Stochastic samplers draw step noise from each image's own seed; batching images with
    /// unrelated seeds would change their streams, so those run one image at a time.
    static func needsPerImageStreams(_ s: SamplingSettings) -> Bool { s.sampler == .eulerA || s.sampler == .ddpm }
}
