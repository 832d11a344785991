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
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if seeds < 1 || steps < 1 || batch < 1 || limit < 0 { throw CLIError("--seeds, --steps and --batch must be at least 1") }
    }

    func run() throws {
        try runReportingErrors {
            guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            let device = try options.open()
            let m = try TextToImageModel.load(url, device: device)
            var prompts = split == .heldout ? PromptSplit.heldOut : PromptSplit.train
            if limit > 0 { prompts = Array(prompts.prefix(limit)) }
            let settings = SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg)
            let bar = ProgressBar(total: prompts.count * seeds, label: "evaluate", quiet: quiet)
            let results = try Evaluation.run(model: m, prompts: prompts, seeds: (0..<UInt64(seeds)).map { seed + $0 },
                                             settings: settings, batch: batch, progress: { done, _ in bar.update(done) })
            let report = FidelityReport(results: results)
            if json { try printJSON(report); return }
            print("\(report.samples) samples (\(prompts.count) \(split.rawValue) prompts x \(seeds) seeds), \(sampler) \(steps) steps, cfg \(cfg), gaussian noise")
            print(String(format: "mean prompt fidelity %.3f, all facts hold %.3f", report.meanScore, report.fullFidelity))
            print(String(format: "single objects: mean %.3f, color and shape right %.3f; pairs: mean %.3f",
                         report.singleMeanScore, report.singleColorAndShape, report.pairMeanScore))
            for (k, v) in report.perKind.sorted(by: { $0.key < $1.key }) { print(String(format: "  %-9@ %.3f", k, v)) }
        }
    }
}
