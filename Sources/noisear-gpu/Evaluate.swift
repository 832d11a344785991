import ArgumentParser
import Foundation
import NoiseARGPU

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure prompt fidelity of the model on the held-out (or train) prompts with the exact reward.",
        discussion: "Every prompt of the split is sampled with seeds --seed ..< --seed + --seeds and scored.")

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
    @Option(help: "Model file.") var model: String?
    @Option(help: "Noise prior: gaussian | noisear | npnet.") var prior = "gaussian"
    @Option(help: "Prior weights (NoiseAR default: the shipped prior; NPNet: required).") var priorWeights: String?
    @Option(help: "NoiseAR sampling temperature.") var temperature: Float = 0.5
    @Option(help: "NoiseAR strength (0 Gaussian ... 1 prior).") var strength: Float = 1
    @Flag(help: "Also run Gaussian noise on the same prompts and seeds and report the paired difference.") var paired = false
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if seeds < 1 || steps < 1 || batch < 1 || limit < 0 { throw CLIError("--seeds, --steps and --batch must be at least 1") }
        _ = try NoisePriorKind.parse(prior)
        if paired && prior == "gaussian" { throw CLIError("--paired compares a learned prior with Gaussian noise: pass --prior noisear") }
        if !(temperature >= 0) || !(strength >= 0 && strength <= 1) { throw CLIError("--temperature must be >= 0 and --strength in [0, 1]") }
        try Seeds.check(seed, count: seeds)
        if try SamplerKind.parse(sampler) == .ddimInverse { throw CLIError("--sampler ddim-inverse inverts images to noise; it does not sample") }
    }

    func run() throws {
        try runReportingErrors {
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device)
            try MemoryBudget.check(m.config.unet.estimatedSamplingBytes(batch: batch), on: device, what: "evaluate --batch \(batch)")
            var prompts = split == .heldout ? PromptSplit.heldOut : PromptSplit.train
            if limit > 0 { prompts = Array(prompts.prefix(limit)) }
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
