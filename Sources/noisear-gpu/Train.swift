import ArgumentParser
import Foundation
import NoiseARGPU

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Train models of the shapes world.",
        subcommands: [TrainDiffusion.self])
}

struct TrainDiffusion: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffusion",
        abstract: "Train the shapes-world text-to-image model (DDPM loss with v-prediction, AdamW, EMA, prompt dropout).",
        discussion: """
            Each step renders a batch of train-split prompts at random positions. The checkpoint
            (weights, EMA, optimizer state) is written atomically every --checkpoint-every steps and
            at the end; --resume continues from it. --export writes the EMA weights as a model file
            for `sample --model`.
            """)

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
            let device = try options.open()
            var config = DiffusionModelConfig()
            config.predictionType = prediction
            let model = try TextToImageModel(config: config, device: device, seed: seed)
            var settings = DiffusionTrainingSettings()
            settings.steps = steps; settings.batch = batch; settings.lr = lr; settings.warmup = warmup
            settings.promptDropout = promptDropout; settings.emaDecay = emaDecay; settings.seed = seed
            let trainer = try DiffusionTrainer(model: model, settings: settings)
            let ckpt = URL(fileURLWithPath: checkpoint)
            if resume {
                try trainer.resume(from: ckpt)
                note("resumed from \(checkpoint) at step \(trainer.step)")
            }
            note("model: \(model.params.count) parameters on \(device.info.id) (\(device.info.name)); batch \(batch), \(steps) steps")
            let bar = ProgressBar(total: steps, label: "train", quiet: quiet)
            var recent: [Float] = []
            let t0 = Date()
            let startStep = trainer.step
            while trainer.step < steps {
                let loss = try trainer.trainStep()
                recent.append(loss)
                if recent.count > 50 { recent.removeFirst() }
                let avg = recent.reduce(0, +) / Float(recent.count)
                let sps = Double((trainer.step - startStep) * batch) / Date().timeIntervalSince(t0)
                bar.update(trainer.step, String(format: "loss %.4f  %.1f samples/s", avg, sps))
                if !bar.enabled && (trainer.step % 50 == 0 || trainer.step == steps) {
                    note(String(format: "step %d/%d loss %.4f %.1f samples/s", trainer.step, steps, avg, sps))
                }
                if trainer.step % checkpointEvery == 0 || trainer.step == steps {
                    try trainer.saveCheckpoint(ckpt, extraMetadata: ["loss_avg50": String(avg)])
                }
            }
            if let export {
                try trainer.exportEMA(URL(fileURLWithPath: export),
                                      metadata: ["training": "noisear-gpu train diffusion --steps \(steps) --batch \(batch) --lr \(lr) --seed \(seed)"])
                note("wrote \(export)")
            }
        }
    }
}
