import Foundation
import NoiseARCore
import NoiseARModels

/// A sharded, resumable data collection over the train prompts (`noisear-gpu collect`, and any
/// host that wants the same files): prompts of shard i/n in blocks; each finished block is written
/// to `OUT/shard-I-of-N-block-K.safetensors` and recorded in `OUT/shard-I-of-N.progress.json`, so a
/// resumed run skips finished blocks (and redoes those whose shard file is gone or unreadable).
public struct CollectionJob: Sendable {
    public enum Method: Sendable, Equatable {
        /// Keep Gaussian starts whose image scores at least `threshold`.
        case bestOfN(threshold: Double)
        /// NPNet's re-denoise sampling: DDIM step at `highCFG`, inversion at `lowCFG`.
        case redenoise(highCFG: Double, lowCFG: Double, inversionSteps: Int, keepAll: Bool)
        /// DDIM inversion of rendered scenes (candidate c of a prompt: layout seed); `threshold`
        /// nil keeps every inverted noise, else only those whose resampled image reaches it.
        case inversion(steps: Int, cfg: Double, start: Double, normalize: Bool, threshold: Double?)
        /// NPNet targets from a NoiseAR prior (weights file): each Gaussian start x_T paired with
        /// the prior's draw at `temperature` from the same standard normals (no images sampled,
        /// so no scores: they are NaN).
        case priorSamples(weights: String, temperature: Float)
    }

    public var method: Method
    public var out: URL
    public var shard: (index: Int, count: Int)
    public var candidates: Int
    /// Candidate c of train prompt p uses seed + p * candidates + c.
    public var seed: UInt64
    public var settings: SamplingSettings
    public var batch: Int
    public var block: Int
    /// At most this many prompts of the shard (0 = all).
    public var limit: Int
    /// The model file's name, part of the settings a resumed run must match.
    public var modelName: String

    public init(method: Method, out: URL, shard: (index: Int, count: Int) = (0, 1), candidates: Int = 4, seed: UInt64 = 100_000,
                settings: SamplingSettings, batch: Int = 16, block: Int = 16, limit: Int = 0, modelName: String) {
        self.method = method
        self.out = out
        self.shard = shard
        self.candidates = candidates
        self.seed = seed
        self.settings = settings
        self.batch = batch
        self.block = block
        self.limit = limit
        self.modelName = modelName
    }

    /// What was collected so far (the progress file).
    public struct Progress: Codable, Sendable {
        public var settings: String
        public var finishedBlocks: [Int]
        public var sampled: Int
        public var kept: Int
        /// Starts kept per finished block (absent in progress files of earlier versions).
        public var keptPerBlock: [String: Int]?
        /// Blocks of the shard in all (absent in progress files of earlier versions).
        public var totalBlocks: Int?
    }

    /// Every value checked (the seeds of all candidates of the whole train split must fit).
    public func validate() throws {
        try require(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count,
                    "shard \(shard.index)/\(shard.count): expected 0 <= i < n")
        try require(candidates >= 1 && batch >= 1 && block >= 1 && limit >= 0,
                    "candidates, batch and block must be at least 1")
        try require(settings.steps >= 1, "steps must be at least 1")
        let (starts, overflow) = PromptSplit.train.count.multipliedReportingOverflow(by: candidates)
        try require(!overflow, "\(candidates) candidates per prompt is too many")
        try Seeds.check(seed, count: starts)
        switch method {
        case .bestOfN(let t): try require(t >= 0 && t <= 1, "threshold must be in [0, 1], got \(t)")
        case .redenoise(let high, let low, let steps, _):
            try require(high > low, "the DDIM step's guidance (\(high)) must be above the inversion's (\(low))")
            try require(steps >= 2, "inversion steps must be at least 2")
        case let .inversion(steps, cfg, start, _, threshold):
            try require(steps >= 2, "inversion steps must be at least 2")
            try require(start >= 0 && start < 1, "the inversion's start must be in [0, 1), got \(start)")
            try require(cfg.isFinite && cfg >= 0, "the inversion's guidance must be a non-negative number, got \(cfg)")
            if let t = threshold { try require(t >= 0 && t <= 1, "threshold must be in [0, 1], got \(t)") }
        case let .priorSamples(_, temperature):
            try require(temperature > 0 && temperature.isFinite, "the prior's temperature must be positive, got \(temperature)")
        }
        try require(settings.sampler != .eulerA && settings.sampler != .ddpm && settings.sampler != .ddimInverse,
                    "collection needs a deterministic sampler (ddim, dpmpp2m, euler), not \(settings.sampler.rawValue)")
    }

    /// The settings a resumed run must match.
    public var settingsKey: String {
        let m: String
        switch method {
        case .bestOfN(let t): m = "best-of-n threshold \(t)"
        case let .redenoise(high, low, steps, keepAll): m = "redenoise high \(high) low \(low) inversion-steps \(steps) keep-all \(keepAll)"
        case let .inversion(steps, cfg, start, normalize, threshold):
            m = "inversion steps \(steps) cfg \(cfg) start \(start) normalize \(normalize) threshold \(threshold.map { String($0) } ?? "none (keep all)")"
        case let .priorSamples(weights, temperature):
            m = "prior-samples weights \(URL(fileURLWithPath: weights).lastPathComponent) temperature \(temperature)"
        }
        return "\(m) candidates \(candidates) seed \(seed) \(settings.sampler.rawValue) steps \(settings.steps) cfg \(settings.cfg) model \(modelName)"
    }

    public var progressURL: URL { out.appendingPathComponent("shard-\(shard.index)-of-\(shard.count).progress.json") }

    public func blockURL(_ k: Int) -> URL {
        out.appendingPathComponent("shard-\(shard.index)-of-\(shard.count)-block-\(String(format: "%04d", k)).safetensors")
    }

    /// The shard's prompts (with their positions in the train split) in blocks.
    public func blocks() throws -> [[(Int, String)]] {
        var prompts = try NoiseCollection.shard(PromptSplit.train, index: shard.index, of: shard.count)
        if limit > 0 { prompts = Array(prompts.prefix(limit)) }
        return stride(from: 0, to: prompts.count, by: block).map { Array(prompts[$0..<min($0 + block, prompts.count)]) }
    }

    /// The progress of an earlier run: nil when there is none; an error when there is one and
    /// `resume` is false, or it is unreadable, or its settings differ.
    public func existingProgress(resume: Bool) throws -> Progress? {
        guard FileManager.default.fileExists(atPath: progressURL.path) else { return nil }
        guard resume else {
            throw NoiseError.invalidArgument("\(progressURL.relativePath) exists: pass --resume to continue that run, or use another --out")
        }
        guard let data = try? InputFile.contents(of: progressURL), let p = try? JSONDecoder().decode(Progress.self, from: data) else {
            throw NoiseError.io("\(progressURL.relativePath) is unreadable; delete it to start over")
        }
        guard p.settings == settingsKey else {
            throw NoiseError.invalidArgument("--resume with different settings: the run used \(Text.quoted(p.settings, limit: 200))")
        }
        return p
    }

    /// Keeps the blocks recorded as finished whose data is really there: a block that kept starts
    /// needs its shard file, readable and of the recorded size. The others are taken off the
    /// record (with their counts) so they are collected again; returns their numbers.
    public func verifyFinished(_ progress: inout Progress, blocks: [[(Int, String)]]) -> [Int] {
        var redo: [Int] = []
        var finished: [Int] = []
        var kept = 0, sampled = 0
        var perBlock: [String: Int] = [:]
        for k in progress.finishedBlocks where k >= 0 && k < blocks.count {
            let recorded = progress.keptPerBlock?[String(k)]
            let url = blockURL(k)
            let exists = FileManager.default.fileExists(atPath: url.path)
            let present: Int? = exists ? (try? NoiseDataset.read(url))?.count : nil
            let ok: Bool
            switch (recorded, present) {
            case (let r?, let p?): ok = r == p
            case (0?, nil): ok = !exists  // nothing kept, nothing written
            case (nil, _?): ok = true  // earlier progress format: the file is the record
            default: ok = false
            }
            if ok {
                let n = present ?? 0
                finished.append(k)
                kept += n
                perBlock[String(k)] = n
                sampled += blocks[k].count * candidates
            } else {
                redo.append(k)
            }
        }
        progress.finishedBlocks = finished
        progress.kept = kept
        progress.sampled = sampled
        progress.keptPerBlock = perBlock
        return redo
    }

    /// Events of a run, for a host's progress display.
    public enum Event {
        /// Blocks recorded as finished that are collected again (their files are gone).
        case redoing([Int])
        /// A resumed run: finished blocks of all, starts kept so far.
        case resuming(done: Int, of: Int, kept: Int)
        /// Samples drawn so far of the total, starts kept so far.
        case sampled(done: Int, total: Int, kept: Int)
        /// Block k finished: kept of sampled, running totals.
        case blockFinished(k: Int, of: Int, kept: Int, sampled: Int, progress: Progress)
    }

    /// Runs (or resumes) the collection with `model`; returns the final progress.
    @discardableResult
    public func run(model: TextToImageModel, resume: Bool, events: (Event) -> Void = { _ in }) throws -> Progress {
        try validate()
        do {
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        } catch {
            throw NoiseError.io("cannot create the folder \(out.relativePath): \(error.localizedDescription)")
        }
        try MemoryBudget.check(model.config.unet.estimatedSamplingBytes(batch: batch), on: model.device,
                               what: "collecting in batches of \(batch)")
        var progress = try existingProgress(resume: resume)
            ?? Progress(settings: settingsKey, finishedBlocks: [], sampled: 0, kept: 0, keptPerBlock: [:])
        let blocks = try blocks()
        progress.totalBlocks = blocks.count
        var prior: NoiseARNet?
        if case .priorSamples(let weights, _) = method {
            guard case .noiseAR(let net) = try NoisePrior.load(URL(fileURLWithPath: weights), device: model.device, expected: .noiseAR) else {
                throw NoiseError.invalidArgument("\(weights) is not a NoiseAR prior")
            }
            prior = net
        }
        let redo = verifyFinished(&progress, blocks: blocks)
        if !redo.isEmpty { events(.redoing(redo)) }
        let total = blocks.reduce(0) { $0 + $1.count } * candidates
        let done = Set(progress.finishedBlocks)
        var finished = blocks.enumerated().filter { done.contains($0.offset) }.reduce(0) { $0 + $1.element.count * candidates }
        if !done.isEmpty { events(.resuming(done: done.count, of: blocks.count, kept: progress.kept)) }
        for (k, prompts) in blocks.enumerated() where !done.contains(k) {
            let base = finished, keptSoFar = progress.kept
            let report = { (n: Int) in events(.sampled(done: base + n, total: total, kept: keptSoFar)) }
            let (ds, sampled): (NoiseDataset, Int)
            var metadata = ["settings": settingsKey, "software": "noisear-gpu", "shard": "\(shard.index)/\(shard.count)",
                            "block": "\(k)/\(blocks.count)"]
            switch method {
            case .bestOfN(let threshold):
                (ds, sampled) = try NoiseCollection.bestOfN(model: model, prompts: prompts, candidates: candidates, baseSeed: seed,
                                                            settings: settings, batch: batch, threshold: threshold, progress: report)
            case let .redenoise(high, low, steps, keepAll):
                (ds, sampled) = try NoiseCollection.redenoise(model: model, prompts: prompts, candidates: candidates, baseSeed: seed,
                                                              settings: settings, batch: batch, highCFG: high, lowCFG: low,
                                                              inversionSteps: steps, keepAll: keepAll, progress: report)
            case let .inversion(steps, cfg, start, normalize, threshold):
                let stats: NoiseStatistics?
                (ds, sampled, stats) = try NoiseCollection.inversion(model: model, prompts: prompts, candidates: candidates, baseSeed: seed,
                                                                     settings: settings, batch: batch, inversionSteps: steps,
                                                                     inversionCFG: cfg, inversionStart: start, normalize: normalize, threshold: threshold,
                                                                     progress: report)
                if let stats {
                    metadata[NoiseStatistics.metadataKey] = String(decoding: try JSONEncoder().encode(stats), as: UTF8.self)
                }
            case .priorSamples(_, let temperature):
                guard let prior else { throw NoiseError.invalidArgument("no prior loaded") }
                (ds, sampled) = try NoiseCollection.priorSamples(model: model, prior: prior, prompts: prompts, candidates: candidates,
                                                                 baseSeed: seed, temperature: temperature, batch: batch, progress: report)
            }
            if ds.count > 0 {
                try ds.file(metadata: metadata).write(to: blockURL(k))
            } else {
                // A stale file of an earlier, interrupted attempt would contradict the record.
                try? FileManager.default.removeItem(at: blockURL(k))
            }
            finished += sampled
            progress.finishedBlocks.append(k)
            progress.sampled += sampled
            progress.kept += ds.count
            progress.keptPerBlock = (progress.keptPerBlock ?? [:]).merging([String(k): ds.count]) { _, n in n }
            try OutputFile.write(try JSONEncoder().encode(progress), to: progressURL)
            events(.blockFinished(k: k, of: blocks.count, kept: ds.count, sampled: sampled, progress: progress))
        }
        return progress
    }
}
