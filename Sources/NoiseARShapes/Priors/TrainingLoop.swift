import Foundation
import NoiseARCore
import NoiseARModels

extension NoiseDataset {
    /// The training commands' split: pairs whose prompt is one of the stable 10% validation
    /// prompts (`PromptMirror.isValidation`, mirrored wordings together) are held out.
    public func splitByPrompt() -> (train: NoiseDataset, validation: NoiseDataset) {
        let isValidation = (0..<count).map { PromptMirror.isValidation(prompts[$0]) }
        return (subset((0..<count).filter { !isValidation[$0] }), subset((0..<count).filter { isValidation[$0] }))
    }
}

/// The loop every trainer shares: from step `start` (a resumed run) to `steps`; `step` runs one
/// optimisation step and returns (the step count after it, its loss); every `every` steps and at
/// the end `checkpoint` gets the mean loss of the last 50 steps and those losses (to be saved
/// with the checkpoint under `recentLossesKey`, so that a resumed run's mean is right) and
/// returns a validation summary. `recent` is the window a resumed run starts from.
/// `report(step, mean loss, last summary, checkpointed)` follows every step (progress display).
public enum TrainingLoop {
    /// The checkpoint metadata key of the last losses (comma-separated, oldest first).
    public static let recentLossesKey = "recent_losses"
    public static let window = 50

    /// The losses saved in a checkpoint's metadata (empty when absent or unreadable).
    public static func recentLosses(in metadata: [String: String]) -> [Float] {
        guard let text = metadata[recentLossesKey] else { return [] }
        let values = text.split(separator: ",").compactMap { Float(String($0)) }.filter(\.isFinite)
        return Array(values.suffix(window))
    }

    public static func run(steps: Int, start: Int, every: Int, recent initial: [Float] = [],
                           step: () throws -> (Int, Float),
                           checkpoint: (_ mean: Float, _ recent: [String: String]) throws -> String,
                           report: (Int, Float, String, Bool) -> Void = { _, _, _, _ in }) throws {
        try require(every >= 1, "checkpoint interval must be at least 1, got \(every)")
        var recent = Array(initial.suffix(window))
        var summary = ""
        var done = start
        while done < steps {
            let (n, loss) = try step()
            done = n
            recent.append(loss)
            if recent.count > window { recent.removeFirst() }
            let avg = recent.reduce(0, +) / Float(recent.count)
            let checkpointed = done % every == 0 || done == steps
            if checkpointed {
                let saved = recent.map { String($0) }.joined(separator: ",")
                summary = try checkpoint(avg, [recentLossesKey: saved])
            }
            report(done, avg, summary, checkpointed)
        }
    }
}

/// The weights with the lowest validation loss seen at a checkpoint (exported instead of the last).
public struct BestWeights {
    public private(set) var loss = Double.infinity
    public private(set) var step = 0
    public private(set) var weights: [String: HostTensor]? = nil
    public init() {}

    /// Keeps `weights()` when `loss` is the lowest so far.
    public mutating func offer(loss: Double, step: Int, weights: () throws -> [String: HostTensor]) rethrows {
        guard loss < self.loss else { return }
        self.loss = loss
        self.step = step
        self.weights = try weights()
    }
}
