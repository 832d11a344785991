import ArgumentParser
import Foundation
import NoiseARGPU

struct CollectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect",
        abstract: "Build a dataset of initial noises that led to good images (for training the priors).",
        discussion: paragraphs("""
            --method inversion (NoiseAR data that carries information): for each train prompt, --candidates
            scenes are rendered with the facts right (layouts from the seeds), noised forward (seeded) to
            --inversion-start of the schedule (default 0.5) and DDIM-inverted from there with
            --inversion-steps (default 25) at --inversion-cfg (0 inverts the clean scene all the way: a
            narrow, heavy-tailed noise). --normalize rescales each noise to std 1 about its own mean. Each
            noise is sampled again with the sampler settings and kept when that image reaches --threshold
            (--keep-all skips the resampling and keeps every noise, score 1). The raw noises' statistics
            against N(0, I) are recorded in the shards and printed at the end.

            --method redenoise (NPNet's re-denoise sampling): each start x_T takes one DDIM step at
            --high-cfg and one DDIM inversion step at --low-cfg to x'_T; both are sampled and scored, and
            the pair is kept when x'_T scores strictly higher (--keep-all keeps every pair). Shards then
            also hold `target` (x'_T) and `target_score`.

            --method prior (NPNet targets that carry the layout): each Gaussian start x_T is paired with the
            draw of a NoiseAR prior (--prior-weights, default the shipped one; --temperature) from the same
            standard normals as x'_T. Nothing is sampled, so the pairs have no scores (NaN) and all are kept.

            --method best-of-n: for each train prompt of the shard, --candidates Gaussian starts are sampled
            with the shipped model and scored with the exact reward; the starts whose images reach
            --threshold (default 1: every fact right) are kept. Prompts are processed in blocks of
            --block; each finished block is written to OUT/shard-I-of-N-block-K.safetensors (noise,
            prompt_embeds, score; prompts and seeds in the metadata) and recorded in
            OUT/shard-I-of-N.progress.json, so --resume skips finished blocks after a kill.

            Spread over machines with --shard i/n (every n-th prompt); shards never overlap.
            """))

    enum Method: String, ExpressibleByArgument { case bestOfN = "best-of-n", redenoise, inversion, prior }

    @OptionGroup var options: DeviceOptions
    @Option(help: "best-of-n | redenoise | inversion | prior") var method: Method = .bestOfN
    @Option(help: "prior: the NoiseAR prior whose draws are the targets (default: the shipped one).") var priorWeights: String?
    @Option(help: "prior: the temperature of its draws.") var temperature: Float = 0.5
    @Option(help: "redenoise: guidance of the DDIM step (w_l).") var highCfg = 5.5
    @Option(help: "redenoise: guidance of the inversion step (w_w, below --high-cfg).") var lowCfg = 1.0
    @Option(help: "redenoise: steps of the schedule the single DDIM / inversion step is taken from (default 50); inversion: DDIM inversion steps (default 25).")
    var inversionSteps: Int?
    @Option(help: "inversion: guidance of the DDIM inversion.") var inversionCfg = 1.0
    @Option(help: "inversion: share of the schedule (0...1) reached by forward noising (seeded) before inverting; 0 inverts the clean scene all the way.")
    var inversionStart = 0.5
    @Flag(help: "inversion: rescale each inverted noise to std 1 about its own mean.") var normalize = false
    @Flag(help: "redenoise: keep every pair, not only those where x'_T scores higher (ablation); inversion: keep every inverted noise without resampling it.")
    var keepAll = false
    @Option(help: "Output folder.") var out: String
    @Option(help: "This machine's shard, i/n.") var shard = "0/1"
    @Flag(help: "Continue an interrupted run (skips the blocks recorded as finished).") var resume = false
    @Option(help: "Gaussian starts per prompt (inversion: rendered layouts per prompt).") var candidates = 4
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

    func parsedShard() throws -> (Int, Int) { try parseShard(shard) }

    func job(modelName: String = "") throws -> CollectionJob {
        let m: CollectionJob.Method
        switch method {
        case .bestOfN: m = .bestOfN(threshold: threshold)
        case .redenoise: m = .redenoise(highCFG: highCfg, lowCFG: lowCfg, inversionSteps: inversionSteps ?? 50, keepAll: keepAll)
        case .inversion: m = .inversion(steps: inversionSteps ?? 25, cfg: inversionCfg, start: inversionStart, normalize: normalize, threshold: keepAll ? nil : threshold)
        case .prior:
            guard let w = priorWeights ?? ShippedModels.locate(NoisePriors.noiseARFile, variable: "NOISEAR_PRIOR")?.path else {
                throw NoiseError.io("--method prior: no NoiseAR prior (pass --prior-weights FILE)")
            }
            m = .priorSamples(weights: w, temperature: temperature)
        }
        return CollectionJob(method: m, out: URL(fileURLWithPath: out), shard: try parsedShard(), candidates: candidates,
                             seed: seed, settings: SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg),
                             batch: batch, block: block, limit: limit, modelName: modelName)
    }

    func validate() throws {
        _ = try parsedShard()
        if candidates < 1 || steps < 1 || batch < 1 || block < 1 || limit < 0 {
            throw CLIError("--candidates, --steps, --batch and --block must be at least 1")
        }
        // Checked whatever the method, so a mistyped option never passes silently.
        if !(highCfg > lowCfg) { throw CLIError("--high-cfg must be above --low-cfg") }
        if let s = inversionSteps, s < 2 { throw CLIError("--inversion-steps must be at least 2") }
        if !(inversionCfg.isFinite && inversionCfg >= 0) { throw CLIError("--inversion-cfg must be a non-negative number") }
        try job().validate()
    }

    func run() throws {
        try runReportingErrors {
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            let job = try job(modelName: url.lastPathComponent)
            // Refuse an existing run without --resume before loading anything.
            _ = try job.existingProgress(resume: resume)
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device)
            let bar = ProgressBar(total: try job.blocks().reduce(0) { $0 + $1.count } * candidates, label: "collect", quiet: quiet)
            let p = try job.run(model: m, resume: resume) { event in
                switch event {
                case .redoing(let ks):
                    note("block\(ks.count == 1 ? "" : "s") \(ks.map(String.init).joined(separator: ", ")) recorded as finished but \(ks.count == 1 ? "its shard file is" : "their shard files are") missing or unreadable: collecting again")
                case let .resuming(done, of, kept):
                    note("resuming: \(done) of \(of) blocks done, \(kept) starts kept")
                case let .sampled(done, _, kept):
                    bar.update(done, "kept \(kept)")
                case let .blockFinished(k, of, kept, sampled, progress):
                    if !bar.enabled && !quiet {
                        note("block \(k + 1)/\(of): kept \(kept) of \(sampled) (total kept \(progress.kept) of \(progress.sampled))")
                    }
                }
            }
            let (si, sn) = job.shard
            if method == .inversion, let stats = try NoiseStatistics.recorded(in: URL(fileURLWithPath: out)) {
                print("inverted noise before rescaling: \(stats.summary)")
            }
            print("shard \(si)/\(sn): kept \(p.kept) of \(p.sampled) starts (\(String(format: "%.1f", 100 * Double(p.kept) / Double(max(p.sampled, 1))))%) in \(out)")
        }
    }
}
