import ArgumentParser
import Foundation
import NoiseARGPU

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure prompt fidelity of the model on the held-out (or train) prompts with the exact reward.",
        discussion: paragraphs("""
            --pair-classes keeps the two-object prompts in one wording per pair class (the 45 held-out
            classes; on --split train, --limit N of its 219 spread evenly; --limit applies to each shard). Every prompt of the split is sampled with seeds --seed ..< --seed + --seeds and scored.
            --compare gaussian,noisear,npnet[,FILE...] runs every listed prior on the same prompts and seeds
            (FILE: a NoiseAR or NPNet weights file; ITEM@T samples that NoiseAR item at temperature T;
            constant: the prompt-independent control, every element from N(mean, std^2) of the training data of
            the first NoiseAR file listed, else --prior-weights, else the shipped prior, at the same temperature;
            constant:MEAN:STD: that control with the given constants)
            and prints per prior the mean fidelity, the all-facts
            rate, each fact's rate and the prior's share of the time, and per pair the paired difference
            with a 95% bootstrap interval over prompts and wins/losses/ties (--json: the whole table).
            --grid FILE.png draws the first --grid-prompts prompts with every prior from --seed, side by side.
            Shard with --shard i/n --save FILE.json on several machines; --merge FILE.json,... prints the table. --merge also joins saved
            comparisons of other priors on the same prompts and seeds (one prior added to an earlier table without sampling the others again).
            """))

    enum Split: String, ExpressibleByArgument { case heldout, train }

    @OptionGroup var options: DeviceOptions
    @Option(help: "heldout | train") var split: Split = .heldout
    @Option(help: "Seeds per prompt.") var seeds = 2
    @Option(help: "First seed.") var seed: UInt64 = 1000
    @Option(help: "Sampler steps.") var steps = 30
    @Option(help: "Guidance scale.") var cfg = 5.0
    @Option(help: "ddim | dpmpp2m | euler | euler-a | ddpm") var sampler = "dpmpp2m"
    @Option(help: "Prompts per batch.") var batch = 8
    @Option(help: "At most this many prompts (0 = all).") var limit = 0
    @Flag(help: "Only two-object prompts, one wording per pair class.") var pairClasses = false
    @Option(help: "Model file.") var model: String?
    @Option(help: "Noise prior: gaussian | noisear | npnet.") var prior = "gaussian"
    @Option(help: "Prior weights (NoiseAR default: the shipped prior; NPNet: required).") var priorWeights: String?
    @Option(help: "NoiseAR sampling temperature.") var temperature: Float = 0.5
    @Option(help: "NoiseAR strength (0 Gaussian ... 1 prior).") var strength: Float = 1
    @Flag(help: "Also run Gaussian noise on the same prompts and seeds and report the paired difference.") var paired = false
    @Option(help: "Compare priors: gaussian, noisear, npnet or weights files, comma-separated.") var compare: String?
    @Option(help: "With --compare: also write a side-by-side image grid (PNG).") var grid: String?
    @Option(help: "Prompts in the grid.") var gridPrompts = 8
    @Option(help: "This machine's share of the prompts, i/n (every n-th prompt).") var shard = "0/1"
    @Option(help: "With --compare: save the per-sample results here (JSON) for --merge.") var save: String?
    @Option(help: "Print the table of saved shards or comparisons (comma-separated JSON files) instead of sampling.") var merge: String?
    @Option(help: "Bootstrap resamples of the confidence intervals.") var resamples = 2000
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func parsedShard() throws -> (Int, Int) { try parseShard(shard) }

    func validate() throws {
        _ = try parsedShard()
        if gridPrompts < 1 || resamples < 1 { throw CLIError("--grid-prompts and --resamples must be at least 1") }
        if compare == nil && (grid != nil || save != nil) { throw CLIError("--grid and --save need --compare") }
        if compare != nil && paired { throw CLIError("--paired is for --prior; --compare pairs every prior") }
        if shard != "0/1" && compare != nil && save == nil { throw CLIError("--shard needs --save FILE.json (then --merge)") }
        if let grid { try OutputFile.checkWritable(URL(fileURLWithPath: grid), extensions: ["png"], option: "--grid") }
        if let save { try OutputFile.checkWritable(URL(fileURLWithPath: save), extensions: ["json"], option: "--save") }
        if seeds < 1 || steps < 1 || batch < 1 || limit < 0 { throw CLIError("--seeds, --steps and --batch must be at least 1") }
        _ = try NoisePriorKind.parse(prior)
        if paired && prior == "gaussian" { throw CLIError("--paired compares a learned prior with Gaussian noise: pass --prior noisear") }
        if !(temperature >= 0) || !(strength >= 0 && strength <= 1) { throw CLIError("--temperature must be >= 0 and --strength in [0, 1]") }
        try Seeds.check(seed, count: seeds)
        if try SamplerKind.parse(sampler) == .ddimInverse { throw CLIError("--sampler ddim-inverse inverts images to noise; it does not sample") }
    }

    /// The --compare list: each entry, its item and its temperature (`ITEM@T`, else --temperature).
    func compareEntries() throws -> [(entry: String, item: String, temperature: Float)] {
        guard let compare else { return [] }
        return try compare.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { entry in
                guard let at = entry.lastIndex(of: "@"), !FileManager.default.fileExists(atPath: entry) else {
                    return (entry, entry, temperature)
                }
                guard let t = Float(entry[entry.index(after: at)...]), t >= 0, t.isFinite else {
                    throw CLIError("--compare \(entry): expected ITEM@TEMPERATURE with a non-negative number")
                }
                return (entry, String(entry[..<at]), t)
            }
    }

    /// The compared sources: names of kinds, or weights files (kind from their keys); `ITEM@T`
    /// samples a NoiseAR item at temperature T instead of --temperature.
    func sources(_ model: TextToImageModel) throws -> [(label: String, source: NoiseSource)] {
        try compareEntries().map { entry, item, tau in
            let suffix = tau == temperature ? "" : "@\(tau)"
            if item.lowercased() == "constant" {
                let file = try controlStatisticsFile()
                let (m, sd) = try NoisePriors.dataStatistics(file)
                return ("constant" + suffix, NoisePriors.constant(mean: m, std: sd, temperature: tau, on: model.device))
            }
            if item.lowercased().hasPrefix("constant:") {
                let parts = item.split(separator: ":", omittingEmptySubsequences: false).dropFirst().map { Float($0) }
                guard parts.count == 2, let m = parts[0], let sd = parts[1], m.isFinite, sd.isFinite, sd > 0 else {
                    throw CLIError("--compare \(entry): expected constant:MEAN:STD with a positive STD")
                }
                return (item + suffix, NoisePriors.constant(mean: m, std: sd, temperature: tau, on: model.device))
            }
            if let kind = NoisePriorKind(rawValue: item.lowercased()) {
                return (kind.rawValue + suffix, try ShapesSampling.noiseSource(kind, path: nil, model: model,
                                                                                temperature: tau, strength: strength))
            }
            let url = URL(fileURLWithPath: item)
            let prior = try NoisePrior.load(url, device: model.device)
            return (url.deletingPathExtension().lastPathComponent + suffix,
                    try ShapesSampling.noiseSource(prior.kind, path: item, model: model, temperature: tau, strength: strength))
        }
    }

    /// The prior file whose training-data statistics the constant control uses.
    func controlStatisticsFile() throws -> URL {
        for item in try compareEntries().map(\.item) where FileManager.default.fileExists(atPath: item) {
            if let f = try? WeightsFile.read(URL(fileURLWithPath: item), skippingUnsupported: true), NoisePrior.detect(f) == .noiseAR {
                return URL(fileURLWithPath: item)
            }
        }
        if let priorWeights { return URL(fileURLWithPath: priorWeights) }
        guard let url = ShippedModels.locate(NoisePriors.noiseARFile, variable: "NOISEAR_PRIOR") else {
            throw NoiseError.io("--compare constant: no NoiseAR prior to take the training data's statistics from (list one, or pass --prior-weights)")
        }
        return url
    }

    /// The prompts of the split (this shard's), as --pair-classes and --limit select them.
    func promptList(shard: (Int, Int) = (0, 1)) throws -> [String] {
        var prompts = split == .heldout ? PromptSplit.heldOut : PromptSplit.train
        if pairClasses { prompts = PromptSplit.pairClasses(prompts) }
        prompts = try NoiseCollection.shard(prompts, index: shard.0, of: shard.1).map(\.1)
        if limit > 0 { prompts = pairClasses ? PromptSplit.spread(prompts, count: limit) : Array(prompts.prefix(limit)) }
        return prompts
    }

    func printTable(_ t: PriorComparison.Table) throws {
        if json { return try printJSON(t) }
        print("\(t.prompts) prompts x \(t.seedsPerPrompt) seeds, the same for every prior")
        let kinds = ["color", "shape", "count", "relation"]
        print("prior".padding(toLength: 16, withPad: " ", startingAt: 0) + "  mean   all-facts  " + kinds.map { $0.padding(toLength: 9, withPad: " ", startingAt: 0) }.joined() + "time share")
        for p in t.priors {
            let facts = kinds.map { String(format: "%-9.3f", p.report.perKind[$0] ?? .nan) }.joined()
            print(p.label.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: "  %.3f  %.3f      ", p.report.meanScore, p.report.fullFidelity)
                  + facts + String(format: "%.1f%%", 100 * p.noiseTimeShare))
        }
        for d in t.pairs {
            print(String(format: "%@ - %@: %+.3f, 95%% CI [%+.3f, %+.3f] (paired bootstrap over prompts); better %d, worse %d, tied %d",
                         d.a, d.b, d.meanDifference, d.ci95Low, d.ci95High, d.wins, d.losses, d.ties))
        }
    }

    func runMerge(_ list: String) throws {
        let files = list.split(separator: ",").map { URL(fileURLWithPath: String($0)) }
        let shards = try files.map { url -> [PriorComparison.Run] in
            do {
                return try JSONDecoder().decode([PriorComparison.Run].self, from: InputFile.contents(of: url))
            } catch let e as NoiseError {
                throw e
            } catch {
                throw NoiseError.io("\(url.relativePath): not a saved evaluation (\(error.localizedDescription))")
            }
        }
        try printTable(PriorComparison.table(PriorComparison.merge(shards), resamples: resamples, seed: seed))
    }

    func runCompare() throws {
        guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
            throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
        }
        let device = try options.open()
        let m = try TextToImageModel.load(url, device: device)
        try MemoryBudget.check(m.config.unet.estimatedSamplingBytes(batch: batch), on: device, what: "evaluate --batch \(batch)")
        let prompts = try promptList(shard: parsedShard())
        let settings = SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg)
        let seedList = try Seeds.consecutive(from: seed, count: seeds)
        let sources = try sources(m)
        let bar = ProgressBar(total: prompts.count * seeds * sources.count, label: "evaluate", quiet: quiet)
        var runs = try PriorComparison.run(model: m, prompts: prompts, seeds: seedList, settings: settings, batch: batch,
                                           sources: sources) { done, _ in bar.update(done) }
        let (si, sn) = try parsedShard()
        for i in runs.indices { runs[i].shard = [si, sn] }
        if let save {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            try OutputFile.write(try enc.encode(runs), to: URL(fileURLWithPath: save))
            note("wrote \(save)")
        }
        try printTable(PriorComparison.table(runs, resamples: resamples, seed: seed))
        if let grid {
            let png = try PriorComparison.grid(model: m, prompts: Array(prompts.prefix(gridPrompts)), seed: seed,
                                               settings: settings, sources: sources)
            try png.write(to: URL(fileURLWithPath: grid))
            note("wrote \(grid) (\(min(gridPrompts, prompts.count)) prompts x \(sources.count) priors, seed \(seed))")
        }
    }

    func run() throws {
        try runReportingErrors {
            if let merge { return try runMerge(merge) }
            if compare != nil { return try runCompare() }
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device)
            try MemoryBudget.check(m.config.unet.estimatedSamplingBytes(batch: batch), on: device, what: "evaluate --batch \(batch)")
            let prompts = try promptList()
            let settings = SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg)
            let seedList = try Seeds.consecutive(from: seed, count: seeds)
            let priorKind = try NoisePriorKind.parse(prior)
            let source: NoiseSource? = priorKind == .gaussian ? nil
                : try ShapesSampling.noiseSource(priorKind, path: priorWeights, model: m, temperature: temperature, strength: strength)
            let label = switch priorKind {
            case .gaussian: "gaussian noise"
            case .noiseAR: "NoiseAR prior (temperature \(temperature), strength \(strength))"
            case .npnet: "NPNet golden noise"
            }
            let runs = paired ? 2 : 1
            let bar = ProgressBar(total: prompts.count * seeds * runs, label: "evaluate", quiet: quiet)
            let results = try Evaluation.run(model: m, prompts: prompts, seeds: seedList, settings: settings, batch: batch,
                                             noise: source, progress: { done, _ in bar.update(done) })
            let baseline = paired ? try Evaluation.run(model: m, prompts: prompts, seeds: seedList, settings: settings,
                                                       batch: batch, progress: { done, total in bar.update(total + done) }) : nil
            let report = FidelityReport(results: results)
            let comparison = baseline.map { PairedComparison(prior: results, baseline: $0) }
            if json {
                struct Out: Encodable { var report: FidelityReport; var gaussian: FidelityReport?; var paired: PairedComparison? }
                try printJSON(Out(report: report, gaussian: baseline.map { FidelityReport(results: $0) }, paired: comparison))
                return
            }
            print("\(report.samples) samples (\(prompts.count) \(split.rawValue) prompts x \(seeds) seeds), \(sampler) \(steps) steps, cfg \(cfg), \(label)")
            print(String(format: "mean prompt fidelity %.3f, all facts hold %.3f", report.meanScore, report.fullFidelity))
            print(String(format: "single objects: mean %.3f, color and shape right %.3f; pairs: mean %.3f",
                         report.singleMeanScore, report.singleColorAndShape, report.pairMeanScore))
            for (k, v) in report.perKind.sorted(by: { $0.key < $1.key }) { print(String(format: "  %-9@ %.3f", k, v)) }
            if let b = baseline, let c = comparison {
                let g = FidelityReport(results: b)
                print(String(format: "gaussian noise, same prompts and seeds: mean %.3f, all facts hold %.3f", g.meanScore, g.fullFidelity))
                for (k, v) in g.perKind.sorted(by: { $0.key < $1.key }) { print(String(format: "  %-9@ %.3f", k, v)) }
                print(String(format: "paired difference (prior - gaussian): %+.3f +- %.3f (standard error); prior better in %d, worse in %d, tied in %d of %d",
                             c.meanDifference, c.standardError, c.wins, c.losses, c.ties, c.pairs))
            }
        }
    }
}
