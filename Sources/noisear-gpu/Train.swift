import ArgumentParser
import Foundation
import NoiseARGPU

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Train models of the shapes world.",
        subcommands: [TrainDiffusion.self, TrainPrior.self, TrainNPNet.self, TrainDPO.self])
}

struct TrainDiffusion: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffusion",
        abstract: "Train the shapes-world text-to-image model (DDPM loss with v-prediction, AdamW, EMA, prompt dropout).",
        discussion: paragraphs("""
            Each step renders a batch of train-split prompts at random positions. The checkpoint
            (weights, EMA, optimizer state) is written atomically every --checkpoint-every steps and
            at the end; --resume continues from it. --export writes the EMA weights as a model file
            for `sample --model`.
            """))

    @OptionGroup var options: DeviceOptions
    @Option(help: "Total optimisation steps.") var steps = 4000
    @Option(help: "Images per step.") var batch = 16
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "Linear warm-up steps.") var warmup = 200
    @Option(help: "Probability of training a sample with the empty prompt.") var promptDropout = 0.1
    @Option(help: "EMA decay.") var emaDecay: Float = 0.999
    @Option(help: "Seed of initialisation and data.") var seed: UInt64 = 0
    @Option(help: "What the network predicts: v_prediction (default; robust for a small pixel-space model) or epsilon.")
    var prediction = "v_prediction"
    @Option(help: "Checkpoint file.") var checkpoint = "shapes-diffusion.ckpt.safetensors"
    @Option(help: "Steps between checkpoints.") var checkpointEvery = 200
    @Flag(help: "Continue from --checkpoint.") var resume = false
    @Flag(help: "Start over, replacing an existing --checkpoint.") var overwrite = false
    @Option(help: "Also write the EMA weights as a model file here at the end.") var export: String?
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if steps < 1 || batch < 1 || checkpointEvery < 1 { throw CLIError("--steps, --batch and --checkpoint-every must be at least 1") }
        if !(lr > 0) { throw CLIError("--lr must be positive") }
        if prediction != "v_prediction" && prediction != "epsilon" { throw CLIError("--prediction must be v_prediction or epsilon") }
        if !(0..<1).contains(promptDropout) { throw CLIError("--prompt-dropout must be in [0, 1)") }
    }

    func run() throws {
        try runReportingErrors {
            let ckpt = try checkpointURL(checkpoint, resume: resume, overwrite: overwrite, export: export)
            let device = try options.open()
            var config = DiffusionModelConfig()
            config.predictionType = prediction
            try MemoryBudget.check(config.unet.estimatedTrainingBytes(batch: batch), on: device, what: "train diffusion --batch \(batch)")
            let model = try TextToImageModel(config: config, device: device, seed: seed)
            var settings = DiffusionTrainingSettings()
            settings.steps = steps; settings.batch = batch; settings.lr = lr; settings.warmup = warmup
            settings.promptDropout = promptDropout; settings.emaDecay = emaDecay; settings.seed = seed
            let trainer = try DiffusionTrainer(model: model, settings: settings)
            if resume {
                try trainer.resume(from: ckpt)
                note("resumed from \(checkpoint) at step \(trainer.step)")
            }
            note("model: \(model.params.count) parameters on \(device.info.id) (\(device.info.name)); batch \(batch), \(steps) steps")
            let t0 = Date()
            let startStep = trainer.step
            try runTrainingLoop(steps: steps, label: "train", quiet: quiet, lossName: "loss", digits: 4, start: trainer.step,
                                every: checkpointEvery, resumedFrom: resume ? ckpt : nil,
                                step: { let l = try trainer.trainStep(); return (trainer.step, l) }) { avg, recent in
                try trainer.saveCheckpoint(ckpt, extraMetadata: recent.merging(["loss_avg50": String(avg)]) { a, _ in a })
                let sps = Double((trainer.step - startStep) * batch) / max(Date().timeIntervalSince(t0), 1e-9)
                return String(format: "%.1f samples/s", sps)
            }
            if let export {
                try trainer.exportEMA(URL(fileURLWithPath: export),
                                      metadata: ["training": "noisear-gpu train diffusion --steps \(steps) --batch \(batch) --lr \(lr) --seed \(seed)"])
                note("wrote \(export)")
            }
        }
    }
}

struct TrainPrior: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prior",
        abstract: "Train a NoiseAR prior on collected (noise, prompt) pairs by teacher-forced Gaussian NLL.",
        discussion: paragraphs("""
            DATA is a folder of shards from `collect` (or one shard). --forward trains on the diffusion's
            forward marginal at T instead, drawn fresh for every batch: a correct scene of a train prompt
            noised to the last timestep, its layout (the deviation from the background) scaled by
            --layout-gain, with the expected NLL over the noise (Rao-Blackwellised: the prompt-dependent
            mean is learned without the noise in its gradient); validation is on fixed draws of the
            validation prompts, next to the prompt-independent control N(mean, std^2) of the same data.
            Pairs whose prompt falls in a
            stable 10% of the prompts are held out for the validation NLL, reported next to a standard
            Gaussian's NLL on the same noises (nats per element). --mirror adds every pair mirrored
            left-right with its prompt's left/right swapped (embeddings from the diffusion model's
            text encoder). The checkpoint (weights, optimizer state) is written atomically every
            --checkpoint-every steps; --resume continues it. --export writes the prior (F16) with the
            weights of the best validation NLL seen at a checkpoint (the last ones without validation pairs).
            """))

    @OptionGroup var options: DeviceOptions
    @Option(help: "Dataset folder or shard; several separated by commas.") var data: String?
    @Flag(help: "Train on the forward marginal of rendered train-prompt scenes (no --data).") var forward = false
    @Option(help: "With --forward: scale of the layout's deviation from the background (1: the exact marginal).")
    var layoutGain = 1.0
    @Option(help: "With --forward: draw these prompts (repeatable) instead of the train split's.") var prompt: [String] = []
    @Option(help: "Total optimisation steps.") var steps = 3000
    @Option(help: "Pairs per step.") var batch = 32
    @Option(help: "Peak learning rate (linear warm-up, cosine decay).") var lr: Float = 3e-4
    @Option(help: "Warm-up steps.") var warmup = 100
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0.01
    @Option(help: "Dropout.") var dropout = 0.1
    @Option(help: "Transformer width.") var dModel = 128
    @Option(help: "Feed-forward width.") var dFF = 256
    @Option(help: "Attention heads.") var heads = 4
    @Option(help: "Transformer layers.") var layers = 2
    @Option(help: "Patch size (pixels).") var patch = 8
    @Flag(help: "Add a layout head: a per-patch offset of the mean, linear in the flattened prompt states (with --forward fitted by ridge regression before training).")
    var layoutHead = false
    @Option(help: "Seed of initialisation and batches.") var seed: UInt64 = 0
    @Flag(inversion: .prefixedNo, help: "Add left-right mirrored pairs.") var mirror = true
    @Option(help: "Diffusion model whose text encoder embeds mirrored prompts.") var model: String?
    @Option(help: "Checkpoint file.") var checkpoint = "shapes-noisear.ckpt.safetensors"
    @Option(help: "Steps between checkpoints and validation.") var checkpointEvery = 250
    @Flag(help: "Continue from --checkpoint.") var resume = false
    @Flag(help: "Start over, replacing an existing --checkpoint.") var overwrite = false
    @Option(help: "Write the trained prior here at the end.") var export: String?
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if steps < 1 || batch < 1 || checkpointEvery < 1 || dModel < 1 || dFF < 1 || heads < 1 || layers < 1 || patch < 1 {
            throw CLIError("--steps, --batch, --checkpoint-every and the network sizes must be at least 1")
        }
        if dModel % heads != 0 { throw CLIError("--d-model must be divisible by --heads") }
        if forward == (data != nil) { throw CLIError("give either --data DIR or --forward") }
        if !(layoutGain > 0 && layoutGain.isFinite) { throw CLIError("--layout-gain must be a positive number") }
        if !forward && (layoutGain != 1 || !prompt.isEmpty) { throw CLIError("--layout-gain and --prompt are for --forward") }
        if Scene.size % patch != 0 { throw CLIError("--patch must divide \(Scene.size)") }
        if !(lr > 0) { throw CLIError("--lr must be positive") }
        if !(dropout >= 0 && dropout < 1) { throw CLIError("--dropout must be in [0, 1)") }
    }

    func run() throws {
        try runReportingErrors {
            let ckpt = try checkpointURL(checkpoint, resume: resume, overwrite: overwrite, export: export)
            let device = try options.open()
            func diffusionModel(_ why: String) throws -> TextToImageModel {
                guard let url = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                    throw NoiseError.io("\(why) needs the diffusion model's text encoder: pass --model FILE")
                }
                return try TextToImageModel.load(url, device: device)
            }
            var trainData: PriorTrainingData, validationData: PriorTrainingData
            var textDim: Int?, textTokens = 0
            var dataStats: (mean: Double, std: Double)
            var described: String
            if let data {
                let (all, validation) = try NoiseDataset.load(dataURLs(data)).splitByPrompt()
                var train = all
                if mirror {
                    let m = try diffusionModel("--mirror (or pass --no-mirror)")
                    train = try PromptMirror.augmented(all) { prompts in try device.noGrad { try m.encode(prompts).toHost() } }
                }
                trainData = .pairs(train)
                validationData = .pairs(validation)
                textDim = train.promptEmbeds.shape.last
                textTokens = train.promptEmbeds.shape.count == 3 ? train.promptEmbeds.shape[1] : 0
                dataStats = NoiseStatistics.moments(all.noise.data[...])
                described = "\(train.count) training pairs\(mirror ? " (with mirrors)" : ""), \(validation.count) validation pairs"
            } else {
                let m = try diffusionModel("--forward")
                let prompts = prompt.isEmpty ? PromptSplit.train.filter { !PromptMirror.isValidation($0) } : prompt
                let held = prompt.isEmpty ? PromptSplit.train.filter { PromptMirror.isValidation($0) } : []
                let f = try ForwardMarginal(model: m, prompts: prompts, gain: layoutGain, seed: seed)
                trainData = .forward(f, batches: 0)
                validationData = held.isEmpty ? .forward(f, batches: 0)
                    : .forward(try ForwardMarginal(model: m, prompts: held, gain: layoutGain, seed: seed ^ 0x7A11), batches: 4)
                textDim = f.embeds.shape.last
                textTokens = f.embeds.shape[1]
                dataStats = f.control
                described = String(format: "the forward marginal of %d train prompts (layout gain %g, sqrt(alpha-bar_T) %.4f), %d validation draws of %d other prompts",
                                   prompts.count, layoutGain, f.signal, validationData.count, held.count)
            }
            var config = NoiseARConfig()
            config.latentChannels = 3; config.latentSize = Scene.size; config.patchSize = patch
            config.dModel = dModel; config.dFF = dFF; config.nHeads = heads; config.nLayers = layers
            config.headHidden = 2 * dModel
            config.textDim = textDim
            config.dropout = dropout
            if layoutHead {
                try requireShape(textTokens > 0, "--layout-head needs prompt embeddings [N, T, D]")
                config.layoutTokens = textTokens
            }
            let net = try NoiseARNet(config: config, device: device, seed: seed)
            try MemoryBudget.check(NoisePrior.noiseAR(net).estimatedTrainingBytes(batch: batch, tokens: max(textTokens, 1)),
                                   on: device, what: "train prior --batch \(batch)")
            var settings = PriorTrainingSettings()
            settings.steps = steps; settings.batch = batch; settings.lr = lr; settings.warmup = warmup
            settings.weightDecay = weightDecay; settings.seed = seed
            let trainer = try PriorTrainer(net: net, data: trainData, validation: validationData, settings: settings)
            if resume {
                try trainer.resume(from: ckpt)
                note("resumed from \(checkpoint) at step \(trainer.step)")
            } else if layoutHead && forward {
                let fit = try trainer.fitLayoutHead()
                note(String(format: "layout head fitted by ridge regression (penalty %g)", fit.lambda)
                     + (fit.validationR2.map { String(format: "; it explains %.1f%% of the validation prompts' expected-layout variance", 100 * $0) } ?? ""))
            }
            let reference = forward ? "control" : "gaussian"
            note("prior: \(net.params.count) parameters on \(device.info.id); \(described)")
            var best = BestWeights()
            try runTrainingLoop(steps: steps, label: "train prior", quiet: quiet, lossName: "NLL", digits: 4,
                                start: trainer.step, every: checkpointEvery, resumedFrom: resume ? ckpt : nil,
                                step: { let l = try trainer.trainStep(); return (trainer.step, l) }) { avg, recent in
                let (v, g) = try trainer.evaluate(validationData)
                if validationData.count > 0 { try best.offer(loss: v, step: trainer.step) { try net.params.hostTensors() } }
                try trainer.saveCheckpoint(ckpt, extraMetadata: recent.merging(["train_nll_avg50": String(avg), "val_nll": String(v)]) { a, _ in a })
                return String(format: "val %.5f (\(reference) %.5f)", v, g)
            }
            var (v, g) = try trainer.evaluate(validationData)
            if case .pairs(let all) = trainData {
                let (t, tg) = try trainer.evaluate(.pairs(all))
                print(String(format: "validation NLL %.4f nats/element (standard Gaussian %.4f); train %.4f (Gaussian %.4f)", v, g, t, tg))
            } else if validationData.count == 0 {
                print(String(format: "no validation prompts; the prompt-independent control's constants: N(%.4f, %.4f^2)", dataStats.mean, dataStats.std))
            } else {
                print(String(format: "validation NLL %.5f nats/element (prompt-independent control N(%.4f, %.4f^2): %.5f)",
                             v, dataStats.mean, dataStats.std, g))
            }
            if best.weights != nil, best.step != trainer.step {
                v = best.loss
                print(String(format: "best validation NLL %.4f at step %d (exported)", best.loss, best.step))
            }
            if let export {
                let source = data.map { "--data \(dataNames($0))" }
                    ?? "--forward --layout-gain \(layoutGain)" + prompt.map { " --prompt \"\($0)\"" }.joined()
                try trainer.export(URL(fileURLWithPath: export), weights: best.weights, step: best.weights == nil ? nil : best.step, metadata: [
                    "training": "noisear-gpu train prior \(source) --steps \(steps) --batch \(batch) --lr \(lr) --warmup \(warmup) --weight-decay \(weightDecay) --dropout \(dropout) --d-model \(dModel) --d-ff \(dFF) --heads \(heads) --layers \(layers) --patch \(patch)\(layoutHead ? " --layout-head" : "") --seed \(seed)\(mirror || forward ? "" : " --no-mirror") --checkpoint-every \(checkpointEvery)",
                    "pairs": described,
                    NoisePriors.dataMeanKey: String(format: "%.6f", dataStats.mean), NoisePriors.dataStdKey: String(format: "%.6f", dataStats.std),
                    "val_nll": String(format: "%.5f", v), "val_nll_\(reference)": String(format: "%.5f", g)])
                note("wrote \(export)")
            }
        }
    }
}

struct TrainNPNet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "npnet",
        abstract: "Train a shapes-world NPNet on re-denoise pairs (MSE to x'_T).",
        discussion: paragraphs("""
            DATA is a folder of shards from `collect --method redenoise`. The network sees the four-channel
            start of each pair's seed (its first three channels are the RGB start; the fourth is a spare
            channel whose target is itself) and is trained by MSE to x'_T with AdamW; alpha and beta are
            learned and the Swin starts from scratch. Pairs of a stable 10% of the prompts are held out for
            the validation MSE, printed next to the identity's (x_T itself). Checkpoints are atomic;
            --resume continues; --export writes the network for `sample --prior npnet --prior-weights`.
            The paper's ablations: --no-svd-branch (the noise itself in place of the singular-value
            branch) and --no-residual-branch (no Swin term); the exported config keeps them, so the
            network samples as it was trained. One --keep-all collection serves the filter's ablation:
            train on all its pairs, or with --improved-only on those whose x'_T scored higher.
            """))

    @OptionGroup var options: DeviceOptions
    @Option(help: "Dataset folder or shard (re-denoise pairs); several separated by commas.") var data: String
    @Option(help: "Total optimisation steps.") var steps = 500
    @Option(help: "Pairs per step.") var batch = 8
    @Option(help: "Learning rate (after linear warm-up).") var lr: Float = 1e-4
    @Option(help: "Warm-up steps.") var warmup = 50
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0.0
    @Option(help: "Swin embedding width (depths 2,2,2,2).") var embed = 24
    @Flag(help: "Ablation: leave out the singular-value branch (the noise takes its place).") var noSvdBranch = false
    @Flag(help: "Ablation: leave out the residual (Swin) branch.") var noResidualBranch = false
    @Flag(help: "Train only on pairs whose x'_T scored strictly higher than x_T (the paper's reward filter, for data collected with --keep-all).")
    var improvedOnly = false
    @Option(help: "Seed of initialisation and batches.") var seed: UInt64 = 0
    @Option(help: "Checkpoint file.") var checkpoint = "shapes-npnet.ckpt.safetensors"
    @Option(help: "Steps between checkpoints and validation.") var checkpointEvery = 50
    @Flag(help: "Continue from --checkpoint.") var resume = false
    @Flag(help: "Start over, replacing an existing --checkpoint.") var overwrite = false
    @Option(help: "Write the trained network here at the end.") var export: String?
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if steps < 1 || batch < 1 || checkpointEvery < 1 || embed < 1 || warmup < 0 {
            throw CLIError("--steps, --batch, --checkpoint-every and --embed must be at least 1")
        }
        if !(lr > 0) { throw CLIError("--lr must be positive") }
    }

    func run() throws {
        try runReportingErrors {
            let ckpt = try checkpointURL(checkpoint, resume: resume, overwrite: overwrite, export: export)
            let device = try options.open()
            var all = try NoiseDataset.load(dataURLs(data))
            if improvedOnly {
                guard let targetScores = all.targetScores, !targetScores.contains(where: \.isNaN), !all.scores.contains(where: \.isNaN) else {
                    throw CLIError("--improved-only needs scored re-denoise pairs (\(data) has no x'_T scores)")
                }
                let kept = all.scores.indices.filter { targetScores[$0] > all.scores[$0] }
                note("--improved-only: \(kept.count) of \(all.count) pairs improved")
                guard !kept.isEmpty else { throw CLIError("--improved-only: no pair in \(data) improved") }
                all = all.subset(kept)
            }
            let (train, validation) = all.splitByPrompt()
            let e = train.promptEmbeds.shape
            var config = ShapesNPNet.config(textTokens: e.count > 1 ? e[1] : 1, textDim: e.last ?? 1, embedDim: embed)
            config.svdBranch = !noSvdBranch
            config.residualBranch = !noResidualBranch
            let net = try NPNet(config: config, device: device, seed: seed)
            try MemoryBudget.check(NoisePrior.npnet(net).estimatedTrainingBytes(batch: batch, tokens: config.textTokens),
                                   on: device, what: "train npnet --batch \(batch)")
            var settings = PriorTrainingSettings()
            settings.steps = steps; settings.batch = batch; settings.lr = lr; settings.warmup = warmup
            settings.weightDecay = weightDecay; settings.seed = seed
            let trainer = try NPNetTrainer(net: net, train: train, validation: validation, settings: settings)
            if resume {
                try trainer.resume(from: ckpt)
                note("resumed from \(checkpoint) at step \(trainer.step)")
            }
            note("npnet: \(net.params.count) parameters on \(device.info.id); \(train.count) training pairs, \(validation.count) validation pairs")
            try runTrainingLoop(steps: steps, label: "train npnet", quiet: quiet, lossName: "MSE", digits: 5,
                                start: trainer.step, every: checkpointEvery, resumedFrom: resume ? ckpt : nil,
                                step: { let l = try trainer.trainStep(); return (trainer.step, l) }) { avg, recent in
                let (v, identity) = try trainer.evaluate(validation)
                try trainer.saveCheckpoint(ckpt, extraMetadata: recent.merging(["train_mse_avg50": String(avg), "val_mse": String(v)]) { a, _ in a })
                return String(format: "val %.5f (identity %.5f)", v, identity)
            }
            let (v, identity) = try trainer.evaluate(validation)
            print(String(format: "validation MSE %.5f (identity x_T: %.5f)", v, identity))
            if let export {
                try trainer.export(URL(fileURLWithPath: export), metadata: [
                    "training": "noisear-gpu train npnet --data \(dataNames(data)) --steps \(steps) --batch \(batch) --lr \(lr) --warmup \(warmup) --embed \(embed) --seed \(seed)"
                        + (noSvdBranch ? " --no-svd-branch" : "") + (noResidualBranch ? " --no-residual-branch" : "")
                        + (improvedOnly ? " --improved-only" : "")])
                note("wrote \(export)")
            }
        }
    }
}

/// `--data A,B,...`: the dataset folders or shards, in order.
func dataURLs(_ list: String) throws -> [URL] {
    let paths = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !paths.isEmpty else { throw CLIError("--data names no dataset") }
    return paths.map { URL(fileURLWithPath: $0) }
}

/// The datasets' last path components, for the training command written into an exported file.
func dataNames(_ list: String) -> String {
    ((try? dataURLs(list)) ?? []).map(\.lastPathComponent).joined(separator: ",")
}

/// The checkpoint file of a training run, checked before any work: `--resume` needs it, a fresh
/// run refuses to replace it unless `--overwrite` is given (a checkpoint is hours of work), and
/// temporary files of interrupted checkpoint writes are removed. The folder of `--export` must be
/// writable too, so a long run cannot fail at its very end.
func checkpointURL(_ path: String, resume: Bool, overwrite: Bool, export: String?) throws -> URL {
    if resume && overwrite { throw CLIError("--resume and --overwrite exclude each other") }
    let url = URL(fileURLWithPath: path)
    // Held until the process exits: a second run on the same checkpoint is refused at once.
    try HeldClaims.add(OutputClaim(url, what: "wait for it to finish, or choose another --checkpoint"))
    let removed = OutputFile.removeStaleTemporaries(of: url)
    if removed > 0 { note("removed \(removed) temporary file\(removed == 1 ? "" : "s") of an interrupted checkpoint write") }
    var st = stat()
    let exists = lstat(path, &st) == 0
    if resume && !exists {
        throw NoiseError.io("--resume: no checkpoint at \(path)")
    }
    if !resume && exists && !overwrite {
        throw NoiseError.invalidArgument(
            "\(path) exists (the checkpoint of an earlier run): pass --resume to continue it, --overwrite to start over, or another --checkpoint")
    }
    try OutputFile.checkWritable(url, option: "--checkpoint")
    if let export { try OutputFile.checkWritable(URL(fileURLWithPath: export), extensions: ["safetensors"], option: "--export") }
    return url
}

/// The output claims of this process, released (their lock files removed) at exit.
enum HeldClaims {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var claims: [OutputClaim] = []
    nonisolated(unsafe) private static var registered = false

    static func add(_ claim: OutputClaim) {
        lock.lock()
        defer { lock.unlock() }
        claims.append(claim)
        if !registered {
            registered = true
            atexit { HeldClaims.releaseAll() }
        }
    }

    static func releaseAll() {
        lock.lock()
        let all = claims
        claims = []
        lock.unlock()
        for c in all { c.release() }
    }
}

/// The library's training loop with a progress bar (a line per checkpoint when standard error is
/// not a terminal).
func runTrainingLoop(steps: Int, label: String, quiet: Bool, lossName: String, digits: Int, start: Int, every: Int,
                     resumedFrom: URL?, step: () throws -> (Int, Float),
                     checkpoint: (Float, [String: String]) throws -> String) throws {
    // A resumed run's running mean continues from the losses its checkpoint saved.
    let recent = try resumedFrom.map { TrainingLoop.recentLosses(in: try SafeTensorsFile.readMetadata($0)) } ?? []
    let bar = ProgressBar(total: steps, label: label, quiet: quiet)
    try TrainingLoop.run(steps: steps, start: start, every: every, recent: recent, step: step, checkpoint: checkpoint) { done, avg, summary, checkpointed in
        let lossText = String(format: "%@ %.\(digits)f ", lossName, avg)
        if checkpointed && !bar.enabled && !quiet { note("step \(done)/\(steps) train " + lossText + summary) }
        bar.update(done, lossText + summary)
    }
}
