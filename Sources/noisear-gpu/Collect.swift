import ArgumentParser
import Foundation
import NoiseARGPU

struct CollectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect",
        abstract: "Build a dataset of initial noises that led to good images (for training the priors).",
        discussion: """
            --method redenoise (NPNet's re-denoise sampling): each start x_T takes one DDIM step at
            --high-cfg and one DDIM inversion step at --low-cfg to x'_T; both are sampled and scored, and
            the pair is kept when x'_T scores strictly higher (--keep-all keeps every pair). Shards then
            also hold `target` (x'_T) and `target_score`.
            --method best-of-n: for each train prompt of the shard, --candidates Gaussian starts are sampled
            with the shipped model and scored with the exact reward; the starts whose images reach
            --threshold (default 1: every fact right) are kept. Prompts are processed in blocks of
            --block; each finished block is written to OUT/shard-I-of-N-block-K.safetensors (noise,
            prompt_embeds, score; prompts and seeds in the metadata) and recorded in
            OUT/shard-I-of-N.progress.json, so --resume skips finished blocks after a kill.
            Spread over machines with --shard i/n (every n-th prompt); shards never overlap.
            """)

    enum Method: String, ExpressibleByArgument { case bestOfN = "best-of-n", redenoise }

    @OptionGroup var options: DeviceOptions
    @Option(help: "best-of-n | redenoise") var method: Method = .bestOfN
    @Option(help: "redenoise: guidance of the DDIM step (w_l).") var highCfg = 5.5
    @Option(help: "redenoise: guidance of the inversion step (w_w, below --high-cfg).") var lowCfg = 1.0
    @Option(help: "redenoise: steps of the schedule the single DDIM / inversion step is taken from.") var inversionSteps = 50
    @Flag(help: "redenoise: keep every pair, not only those where x'_T scores higher (ablation).") var keepAll = false
    @Option(help: "Output folder.") var out: String
    @Option(help: "This machine's shard, i/n.") var shard = "0/1"
    @Flag(help: "Continue an interrupted run (skips the blocks recorded as finished).") var resume = false
    @Option(help: "Gaussian starts per prompt.") var candidates = 4
    @Option(help: "Keep starts whose image scores at least this (0...1).") var threshold = 1.0
    @Option(help: "First seed; candidate c of prompt p uses seed + p * candidates + c.") var seed: UInt64 = 100_000
    @Option(help: "Sampler steps.") var steps = 20
    @Option(help: "Guidance scale.") var cfg = 5.0
    @Option(help: "ddim | dpmpp2m | euler") var sampler = "dpmpp2m"
    @Option(help: "Images per sampling batch.") var batch = 16
    @Option(help: "Prompts per written block.") var block = 16
    @Option(help: "At most this many prompts of the shard (0 = all).") var limit = 0
    @Option(help: "Model file.") var model: String?
    @Flag(help: "No progress bar.") var quiet = false

    func parsedShard() throws -> (Int, Int) {
        let parts = shard.split(separator: "/").map { Int($0) }
        guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, i >= 0, i < n else {
            throw CLIError("--shard must be i/n with 0 <= i < n, got '\(shard)'")
        }
        return (i, n)
    }

    func validate() throws {
        _ = try parsedShard()
        if candidates < 1 || steps < 1 || batch < 1 || block < 1 || limit < 0 {
            throw CLIError("--candidates, --steps, --batch and --block must be at least 1")
        }
        if !(threshold >= 0 && threshold <= 1) { throw CLIError("--threshold must be in [0, 1]") }
        // Candidate c of train prompt p uses seed + p * candidates + c.
        let (starts, overflow) = PromptSplit.train.count.multipliedReportingOverflow(by: candidates)
        if overflow { throw CLIError("--candidates \(candidates) is too large") }
        try Seeds.check(seed, count: starts)
        if !(highCfg > lowCfg) { throw CLIError("--high-cfg must be above --low-cfg") }
        if inversionSteps < 2 { throw CLIError("--inversion-steps must be at least 2") }
        let kind = try SamplerKind.parse(sampler)
        if kind == .eulerA || kind == .ddpm { throw CLIError("--sampler \(sampler): collection needs a deterministic sampler (ddim, dpmpp2m, euler)") }
    }

    struct Progress: Codable {
        var settings: String
        var finishedBlocks: [Int]
        var sampled: Int
        var kept: Int
        /// Starts kept per finished block (absent in progress files of earlier versions).
        var keptPerBlock: [String: Int]?
    }

    /// The shard file of block k.
    static func blockName(_ si: Int, _ sn: Int, _ k: Int) -> String {
        "shard-\(si)-of-\(sn)-block-\(String(format: "%04d", k)).safetensors"
    }

    /// The blocks recorded as finished whose data is really there: a block that kept starts needs
    /// its shard file, readable and of the recorded size. Others are dropped from `progress` (and
    /// their counts taken off) so they are collected again; returns their numbers.
    static func verifyFinished(_ progress: inout Progress, blocks: [[(Int, String)]], candidates: Int,
                               dir: URL, si: Int, sn: Int) -> [Int] {
        var redo: [Int] = []
        var finished: [Int] = []
        var kept = 0, sampled = 0
        var perBlock: [String: Int] = [:]
        for k in progress.finishedBlocks where k >= 0 && k < blocks.count {
            let recorded = progress.keptPerBlock?[String(k)]
            let url = dir.appendingPathComponent(blockName(si, sn, k))
            let present: Int? = FileManager.default.fileExists(atPath: url.path) ? (try? NoiseDataset.read(url))?.count : nil
            let ok: Bool
            switch (recorded, present) {
            case (let r?, let p?): ok = r == p
            case (0?, nil): ok = !FileManager.default.fileExists(atPath: url.path)  // nothing kept, nothing written
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

    func run() throws {
        try runReportingErrors {
            let (si, sn) = try parsedShard()
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            let dir = URL(fileURLWithPath: out)
            do {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            } catch {
                throw NoiseError.io("cannot create \(out): \(error.localizedDescription)")
            }
            let methodKey = method == .bestOfN ? "best-of-n threshold \(threshold)"
                : "redenoise high \(highCfg) low \(lowCfg) inversion-steps \(inversionSteps) keep-all \(keepAll)"
            let settingsKey = "\(methodKey) candidates \(candidates) seed \(seed) \(sampler) steps \(steps) cfg \(cfg) model \(url.lastPathComponent)"
            let progressURL = dir.appendingPathComponent("shard-\(si)-of-\(sn).progress.json")
            var progress = Progress(settings: settingsKey, finishedBlocks: [], sampled: 0, kept: 0)
            if FileManager.default.fileExists(atPath: progressURL.path) {
                guard resume else {
                    throw NoiseError.invalidArgument("\(progressURL.path) exists: pass --resume to continue that run, or use another --out")
                }
                guard let data = try? Data(contentsOf: progressURL),
                      let p = try? JSONDecoder().decode(Progress.self, from: data) else {
                    throw NoiseError.io("\(progressURL.path) is unreadable; delete it to start over")
                }
                guard p.settings == settingsKey else {
                    throw NoiseError.invalidArgument("--resume with different settings: the run used '\(p.settings)'")
                }
                progress = p
            }
            var prompts = try NoiseCollection.shard(PromptSplit.train, index: si, of: sn)
            if limit > 0 { prompts = Array(prompts.prefix(limit)) }
            let blocks = stride(from: 0, to: prompts.count, by: block).map { Array(prompts[$0..<min($0 + block, prompts.count)]) }
            let redo = Self.verifyFinished(&progress, blocks: blocks, candidates: candidates, dir: dir, si: si, sn: sn)
            if !redo.isEmpty {
                note("block\(redo.count == 1 ? "" : "s") \(redo.map(String.init).joined(separator: ", ")) recorded as finished but \(redo.count == 1 ? "its shard file is" : "their shard files are") missing or unreadable: collecting again")
            }
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device)
            try MemoryBudget.check(m.config.unet.estimatedSamplingBytes(batch: batch), on: device, what: "collect --batch \(batch)")
            let settings = SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg)
            let total = prompts.count * candidates
            let done = Set(progress.finishedBlocks)
            var finished = blocks.enumerated().filter { done.contains($0.offset) }.reduce(0) { $0 + $1.element.count * candidates }
            let bar = ProgressBar(total: total, label: "collect", quiet: quiet)
            if !done.isEmpty { note("resuming: \(done.count) of \(blocks.count) blocks done, \(progress.kept) starts kept") }
            for (k, prompts) in blocks.enumerated() where !done.contains(k) {
                let base = finished
                let report = { (n: Int) in bar.update(base + n, "kept \(progress.kept)") }
                let (ds, sampled) = method == .bestOfN
                    ? try NoiseCollection.bestOfN(model: m, prompts: prompts, candidates: candidates, baseSeed: seed,
                                                  settings: settings, batch: batch, threshold: threshold, progress: report)
                    : try NoiseCollection.redenoise(model: m, prompts: prompts, candidates: candidates, baseSeed: seed,
                                                    settings: settings, batch: batch, highCFG: highCfg, lowCFG: lowCfg,
                                                    inversionSteps: inversionSteps, keepAll: keepAll, progress: report)
                let blockURL = dir.appendingPathComponent(Self.blockName(si, sn, k))
                if ds.count > 0 {
                    try ds.file(metadata: ["settings": settingsKey, "software": "noisear-gpu"]).write(to: blockURL)
                } else {
                    // A stale file of an earlier, interrupted attempt would contradict the record.
                    try? FileManager.default.removeItem(at: blockURL)
                }
                finished += sampled
                progress.finishedBlocks.append(k)
                progress.sampled += sampled
                progress.kept += ds.count
                progress.keptPerBlock = (progress.keptPerBlock ?? [:]).merging([String(k): ds.count]) { _, n in n }
                try OutputFile.write(try JSONEncoder().encode(progress), to: progressURL)
                if bar.enabled == false && !quiet {
                    note("block \(k + 1)/\(blocks.count): kept \(ds.count) of \(sampled) (total kept \(progress.kept) of \(progress.sampled))")
                }
            }
            print("shard \(si)/\(sn): kept \(progress.kept) of \(progress.sampled) starts (\(String(format: "%.1f", 100 * Double(progress.kept) / Double(max(progress.sampled, 1))))%) in \(out)")
        }
    }
}
