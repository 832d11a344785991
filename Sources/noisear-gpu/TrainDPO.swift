import ArgumentParser
import Foundation
import NoiseARGPU

struct TrainDPO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dpo",
        abstract: "Fine-tune a NoiseAR prior by DPO against the exact prompt-fidelity reward.",
        discussion: paragraphs("""
            Each round draws --samples noises from the current prior (--temperature) for each of
            --prompts train prompts, samples their images with the diffusion model (--steps, --cfg,
            --sampler) and scores them with the exact reward; every two draws of a prompt with different
            rewards form a (winner, loser) pair, and --epochs passes of AdamW minimise
            -log sigmoid(beta * ((log pi(z_w) - log pi_ref(z_w)) - (log pi(z_l) - log pi_ref(z_l)))),
            with the frozen reference prior --ref (default: the starting --prior). Each round prints the mean
            reward of the policy's draws on its train prompts and on a fixed validation slice (prompts of the
            training commands' stable 10% validation set, fixed seeds). Held-out prompts are never used.
            The checkpoint (weights, optimizer state, finished rounds) is written atomically after every
            round; --resume continues bit-identically. --export writes the fine-tuned prior (F16).
            """))

    @OptionGroup var options: DeviceOptions
    @Option(help: "The prior to fine-tune (default: the shipped NoiseAR prior or $NOISEAR_PRIOR).") var prior: String?
    @Option(help: "The frozen reference prior (default: --prior).") var ref: String?
    @Option(help: "Rounds of draw, score, pair and optimise.") var rounds = 8
    @Option(help: "Train prompts per round.") var prompts = 32
    @Option(help: "Draws per prompt (K).") var samples = 4
    @Option(help: "Temperature of drawing (as at inference) and of the log-probabilities.") var temperature: Float = 0.5
    @Option(help: "DPO beta (log-probabilities are summed over the 3072 elements).") var beta: Float = 0.1
    @Option(help: "Learning rate.") var lr: Float = 1e-5
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0
    @Option(help: "Preference pairs per optimisation step.") var batch = 16
    @Option(help: "Passes over each round's pairs.") var epochs = 2
    @Option(help: "Validation prompts scored after every round (0: none).") var validationPrompts = 16
    @Option(help: "Seed of prompt order and draws.") var seed: UInt64 = 0
    @Option(help: "Sampler steps for the reward's images.") var steps = 15
    @Option(help: "Guidance scale.") var cfg = 5.0
    @Option(help: "ddim | dpmpp2m | euler") var sampler = "dpmpp2m"
    @Option(help: "Images per sampling batch.") var sampleBatch = 16
    @Option(help: "Diffusion model file.") var model: String?
    @Option(help: "Checkpoint file.") var checkpoint = "shapes-noisear-dpo.ckpt.safetensors"
    @Flag(help: "Continue from --checkpoint.") var resume = false
    @Flag(help: "Start over, replacing an existing --checkpoint.") var overwrite = false
    @Option(help: "Write the fine-tuned prior here at the end.") var export: String?
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        if rounds < 1 || prompts < 1 || batch < 1 || epochs < 1 || steps < 1 || sampleBatch < 1 || validationPrompts < 0 {
            throw CLIError("--rounds, --prompts, --batch, --epochs, --steps and --sample-batch must be at least 1")
        }
        if samples < 2 { throw CLIError("--samples must be at least 2 (pairs are formed among a prompt's draws)") }
        if !(temperature > 0 && temperature.isFinite) { throw CLIError("--temperature must be positive") }
        if !(beta > 0 && beta.isFinite) { throw CLIError("--beta must be positive") }
        if !(lr > 0 && lr.isFinite) { throw CLIError("--lr must be positive") }
        if !(cfg.isFinite && cfg >= 0) { throw CLIError("--cfg must be a non-negative number") }
        let kind = try SamplerKind.parse(sampler)
        if kind == .eulerA || kind == .ddpm || kind == .ddimInverse {
            throw CLIError("the reward needs a deterministic sampler (ddim, dpmpp2m, euler), not \(sampler)")
        }
    }

    func run() throws {
        try runReportingErrors {
            let ckpt = try checkpointURL(checkpoint, resume: resume, overwrite: overwrite, export: export)
            guard let modelURL = model.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
                throw NoiseError.io("no model: pass --model FILE or set NOISEAR_MODEL")
            }
            guard let priorURL = prior.map({ URL(fileURLWithPath: $0) })
                ?? ShippedModels.locate(NoisePriors.noiseARFile, variable: "NOISEAR_PRIOR") else {
                throw NoiseError.io("no prior: pass --prior FILE or set NOISEAR_PRIOR")
            }
            let device = try options.open()
            let m = try TextToImageModel.load(modelURL, device: device)
            let policy = try NoiseARNet.load(priorURL, device: device)
            let reference = try NoiseARNet.load(ref.map { URL(fileURLWithPath: $0) } ?? priorURL, device: device)
            try MemoryBudget.check(NoisePrior.noiseAR(policy).estimatedTrainingBytes(batch: 2 * batch, tokens: m.config.text.maxLength),
                                   on: device, what: "train dpo --batch \(batch)")
            var s = DPOSettings()
            s.rounds = rounds; s.promptsPerRound = prompts; s.samplesPerPrompt = samples; s.temperature = temperature
            s.beta = beta; s.lr = lr; s.weightDecay = weightDecay; s.batch = batch; s.epochs = epochs; s.seed = seed
            let sampling = SamplingSettings(sampler: try SamplerKind.parse(sampler), steps: steps, cfg: cfg)
            let trainPrompts = PromptSplit.train.filter { !PromptMirror.isValidation($0) }
            let validation = Array(PromptSplit.train.filter(PromptMirror.isValidation).prefix(validationPrompts))
            let bar = ProgressBar(total: rounds * prompts * samples, label: "dpo", quiet: quiet)
            var base = 0, status = "", showing = true
            let reward = DPOTrainer.shapesReward(model: m, settings: sampling, batch: sampleBatch) { done, _ in
                if showing { bar.update(base + done, status) }
            }
            let trainer = try DPOTrainer(policy: policy, reference: reference, prompts: trainPrompts, settings: s,
                                         encode: { try m.encode($0) }, reward: reward)
            if resume {
                try trainer.resume(from: ckpt)
                note("resumed from \(checkpoint) after round \(trainer.round)")
            }
            note("DPO: \(policy.params.count) parameters on \(device.info.id); \(trainPrompts.count) train prompts, \(prompts) x \(samples) draws per round, \(validation.count) validation prompts")
            let validationSeed: UInt64 = seed &+ 0x7A11_0000_0000
            func validationReward() throws -> Double? {
                guard !validation.isEmpty else { return nil }
                showing = false  // the bar counts the rounds' train draws only
                defer { showing = true }
                return try trainer.meanReward(prompts: validation, seed: validationSeed)
            }
            if trainer.round == 0, let v = try validationReward() {
                say(String(format: "before DPO: validation reward %.4f", v))
            }
            var last: DPOTrainer.RoundReport?
            var lastValidation: Double?
            while trainer.round < rounds {
                base = trainer.round * prompts * samples
                let report = try trainer.trainRound { status = $0 }
                lastValidation = try validationReward()
                last = report
                let line = String(format: "round %d/%d: train reward %.4f, %d pairs (%d ties), loss %.4f, prefers winner %.0f%%",
                                  report.round, rounds, report.trainReward, report.pairs, report.ties, report.loss, 100 * report.accuracy)
                    + (lastValidation.map { String(format: ", validation reward %.4f", $0) } ?? "")
                try trainer.saveCheckpoint(ckpt, extraMetadata: ["last_round": line])
                status = String(format: "train %.3f", report.trainReward) + (lastValidation.map { String(format: " val %.3f", $0) } ?? "")
                bar.clear()
                say(line)
            }
            bar.update(rounds * prompts * samples, status)
            if let export {
                try trainer.export(URL(fileURLWithPath: export), metadata: [
                    "training": "noisear-gpu train dpo --prior \(priorURL.lastPathComponent) --ref \((ref.map { URL(fileURLWithPath: $0) } ?? priorURL).lastPathComponent) --rounds \(rounds) --prompts \(prompts) --samples \(samples) --temperature \(temperature) --beta \(beta) --lr \(lr) --batch \(batch) --epochs \(epochs) --seed \(seed) --steps \(steps) --cfg \(cfg) --sampler \(sampler)",
                    "last_round": last.map { String(format: "train reward %.4f", $0.trainReward) } ?? "",
                    "validation_reward": lastValidation.map { String(format: "%.4f", $0) } ?? ""])
                note("wrote \(export)")
            }
        }
    }
}
