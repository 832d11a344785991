import Foundation
import NoiseARCore
import NoiseARModels

/// Settings of DPO fine-tuning of a NoiseAR prior against a reward.
public struct DPOSettings: Sendable, Equatable {
    /// Rounds of draw -> score -> pair -> optimise.
    public var rounds = 8
    /// Train prompts drawn per round.
    public var promptsPerRound = 32
    /// Noises drawn from the current prior per prompt (K).
    public var samplesPerPrompt = 4
    /// Temperature of drawing and of the log-probabilities (the policy is the tempered prior).
    public var temperature: Float = 0.5
    /// DPO's beta: the scale of the log-ratio margin (log-probabilities are summed over elements).
    public var beta: Float = 0.1
    public var lr: Float = 1e-5
    public var weightDecay: Float = 0
    /// Preference pairs per optimisation step.
    public var batch = 16
    /// Passes over a round's pairs.
    public var epochs = 2
    public var seed: UInt64 = 0
    public init() {}
}

/// Direct preference optimisation of a NoiseAR prior (the policy) against a frozen reference
/// prior: each round draws K noises per train prompt from the policy, scores them with the
/// reward, pairs every two draws of a prompt whose rewards differ (winner, loser; ties skipped)
/// and minimises -log sigmoid(beta * ((log pi(z_w) - log pi_ref(z_w)) - (log pi(z_l) - log pi_ref(z_l))))
/// with AdamW. Everything a round draws derives from (seed, round), so a run resumed from a
/// round's checkpoint continues bit-identically.
public final class DPOTrainer {
    /// Scores noises [B, C, H, W] drawn for prompts (e.g. sample an image and apply the exact reward).
    public typealias RewardFunction = (_ prompts: [String], _ noise: Tensor, _ seeds: [UInt64]) throws -> [Double]
    /// Prompt embeddings [B, T, D] for prompts.
    public typealias Encoder = (_ prompts: [String]) throws -> Tensor

    public let policy: NoiseARNet
    public let reference: NoiseARNet
    public let settings: DPOSettings
    public let optimizer: AdamW
    public let prompts: [String]
    public let encode: Encoder
    public let reward: RewardFunction
    /// Finished rounds.
    public private(set) var round = 0

    /// One round's figures.
    public struct RoundReport: Sendable, Codable, Equatable {
        public var round: Int
        /// Mean reward of the policy's draws on the round's train prompts (before its update).
        public var trainReward: Double
        public var pairs: Int
        public var ties: Int
        /// Mean DPO loss over the round's optimisation steps (log 2 = no preference yet).
        public var loss: Double
        /// Mean of sigmoid(margin) > 0.5 over the round's last pass: how often the policy prefers the winner.
        public var accuracy: Double
        public var steps: Int
    }

    public init(policy: NoiseARNet, reference: NoiseARNet, prompts: [String], settings: DPOSettings,
                encode: @escaping Encoder, reward: @escaping RewardFunction) throws {
        try require(settings.rounds >= 1 && settings.promptsPerRound >= 1 && settings.batch >= 1 && settings.epochs >= 1,
                    "rounds, prompts per round, batch and epochs must be at least 1")
        try require(settings.samplesPerPrompt >= 2, "DPO needs at least 2 draws per prompt to form pairs, got \(settings.samplesPerPrompt)")
        try require(settings.temperature > 0 && settings.temperature.isFinite, "temperature must be positive, got \(settings.temperature)")
        try require(settings.beta > 0 && settings.beta.isFinite, "beta must be positive, got \(settings.beta)")
        try require(settings.lr > 0 && settings.lr.isFinite, "learning rate must be positive, got \(settings.lr)")
        try require(!prompts.isEmpty, "no train prompts")
        try requireShape(policy.config.latentShape == reference.config.latentShape && policy.config.contextDim == reference.config.contextDim,
                         "the reference prior (latent \(reference.config.latentShape), text width \(reference.config.contextDim)) does not match the policy (latent \(policy.config.latentShape), text width \(policy.config.contextDim))")
        let (draws, overflow) = settings.promptsPerRound.multipliedReportingOverflow(by: settings.samplesPerPrompt)
        try require(!overflow && draws <= 1 << 20, "\(settings.promptsPerRound) prompts x \(settings.samplesPerPrompt) draws per round is too many")
        self.policy = policy
        self.reference = reference
        self.prompts = prompts
        self.settings = settings
        self.encode = encode
        self.reward = reward
        optimizer = AdamW(lr: settings.lr, weightDecay: settings.weightDecay)
    }

    /// The seed of draw k of the round's prompt slot j (image streams never overlap across rounds).
    public func drawSeed(round r: Int, slot j: Int, draw k: Int) -> UInt64 {
        settings.seed &+ (UInt64(r) << 32) &+ UInt64(j * settings.samplesPerPrompt + k)
    }

    /// The round's prompts: a fixed-seed shuffle of the train prompts, cycled.
    public func roundPrompts(_ r: Int) -> [String] {
        var rng = ShapesRNG(seed: settings.seed ^ 0xD90_5EED ^ (UInt64(r) &* 0x9E37_79B9_7F4A_7C15))
        let order = rng.permutation(prompts.count)
        return (0..<settings.promptsPerRound).map { prompts[order[$0 % order.count]] }
    }

    /// Draws `settings.samplesPerPrompt` noises per prompt from `net` at the training temperature;
    /// draw k of prompt j uses Philox stream `seed(j, k)`. Returns noise [J*K, ...], embeddings, seeds.
    public func draw(_ net: NoiseARNet, prompts ps: [String], seed: (Int, Int) -> UInt64) throws -> (Tensor, Tensor, [UInt64]) {
        let k = settings.samplesPerPrompt
        let all = ps.flatMap { [String](repeating: $0, count: k) }
        let text = try policy.device.noGrad { try encode(all) }
        let seeds = ps.indices.flatMap { j in (0..<k).map { seed(j, $0) } }
        // Draws of one prompt are consecutive streams: one batched call per prompt slot.
        let noise = try policy.device.noGrad {
            try Tensor.concat(try ps.indices.map { j in
                try NoisePriors.noiseAR(net, text: text.slice(axis: 0, j * k, (j + 1) * k), seed: seeds[j * k],
                                        temperature: settings.temperature)
            }, axis: 0)
        }
        return (noise, text, seeds)
    }

    /// Winner/loser index pairs among each prompt's K draws (every two with different rewards);
    /// returns the pairs and the number of tied pairs skipped.
    public static func preferencePairs(rewards: [Double], perPrompt k: Int) -> (pairs: [(winner: Int, loser: Int)], ties: Int) {
        var pairs: [(Int, Int)] = [], ties = 0
        for base in stride(from: 0, to: rewards.count, by: k) {
            for i in base..<min(base + k, rewards.count) {
                for j in (i + 1)..<min(base + k, rewards.count) {
                    if rewards[i] == rewards[j] { ties += 1 } else { pairs.append(rewards[i] > rewards[j] ? (i, j) : (j, i)) }
                }
            }
        }
        return (pairs, ties)
    }

    /// The DPO loss of pairs: mean over pairs of -log sigmoid(beta * margin), with
    /// margin = (log pi(z_w) - ref_w) - (log pi(z_l) - ref_l). Returns (loss, margins).
    public func loss(winners: Tensor, losers: Tensor, text: Tensor, loserText: Tensor,
                     refWinners: Tensor, refLosers: Tensor) throws -> (Tensor, Tensor) {
        let n = winners.shape[0]
        let lp = try policy.logProb(noise: Tensor.concat([winners, losers], axis: 0), text: Tensor.concat([text, loserText], axis: 0),
                                    temperature: settings.temperature)
        let margin = try (lp.slice(axis: 0, 0, n) - refWinners) - (lp.slice(axis: 0, n, 2 * n) - refLosers)
        // -log sigmoid(x) = -log_softmax([x, 0])[0], stable for any x.
        let logits = try Tensor.concat([margin.scaled(settings.beta).reshaped([n, 1]), Tensor.zeros([n, 1], on: policy.device)], axis: 1)
        let l = try logits.logSoftmax().slice(axis: 1, 0, 1).mean().scaled(-1)
        return (l, margin)
    }

    /// Runs round `round` (draw, score, pair, optimise) and advances the round count.
    @discardableResult
    public func trainRound(progress: (String) -> Void = { _ in }) throws -> RoundReport {
        let r = round
        let ps = roundPrompts(r)
        let (noise, text, seeds) = try draw(policy, prompts: ps) { j, k in drawSeed(round: r, slot: j, draw: k) }
        let all = ps.flatMap { [String](repeating: $0, count: settings.samplesPerPrompt) }
        progress("scoring \(all.count) draws")
        let rewards = try reward(all, noise, seeds)
        try require(rewards.count == all.count && rewards.allSatisfy(\.isFinite), "the reward gave \(rewards.count) finite values for \(all.count) draws")
        let (pairs, ties) = DPOTrainer.preferencePairs(rewards: rewards, perPrompt: settings.samplesPerPrompt)
        let refLogProb = try policy.device.noGrad { try reference.logProb(noise: noise, text: text, temperature: settings.temperature) }
        var losses: [Double] = [], correct = 0, lastPass = 0, steps = 0
        var rng = ShapesRNG(seed: settings.seed ^ 0xD9_0B47C4 ^ (UInt64(r) &* 0xBF58_476D_1CE4_E5B9))
        for epoch in 0..<settings.epochs where !pairs.isEmpty {
            let order = rng.permutation(pairs.count)
            for start in stride(from: 0, to: order.count, by: settings.batch) {
                let chunk = order[start..<min(start + settings.batch, order.count)].map { pairs[$0] }
                // Rows of a [B, ...] tensor in one gather launch.
                func rows(_ t: Tensor, _ idx: [Int]) throws -> Tensor {
                    let tail = Array(t.shape.dropFirst())
                    return try Tensor.gather(t.reshaped([t.shape[0], tail.reduce(1, *)]), indices: idx).reshaped([idx.count] + tail)
                }
                let w = chunk.map(\.winner), l = chunk.map(\.loser)
                let (lossValue, margins) = try loss(winners: rows(noise, w), losers: rows(noise, l), text: rows(text, w),
                                                    loserText: rows(text, l), refWinners: rows(refLogProb, w), refLosers: rows(refLogProb, l))
                try optimizer.minimize(lossValue, params: policy.params, lr: settings.lr)
                losses.append(Double(try lossValue.item()))
                if epoch == settings.epochs - 1 {
                    correct += try margins.toArray().filter { $0 > 0 }.count
                    lastPass += chunk.count
                }
                steps += 1
                progress("round \(r + 1): step \(steps), loss \(String(format: "%.4f", losses.last ?? 0))")
            }
        }
        round += 1
        return RoundReport(round: round, trainReward: rewards.reduce(0, +) / Double(rewards.count), pairs: pairs.count, ties: ties,
                           loss: losses.isEmpty ? .nan : losses.reduce(0, +) / Double(losses.count),
                           accuracy: lastPass > 0 ? Double(correct) / Double(lastPass) : .nan, steps: steps)
    }

    /// Mean reward of the policy's draws for `prompts` with fixed seeds (the same every round):
    /// `perPrompt` draws each, at the training temperature.
    public func meanReward(prompts ps: [String], seed: UInt64) throws -> Double {
        let (noise, _, seeds) = try draw(policy, prompts: ps) { j, k in seed &+ UInt64(j * self.settings.samplesPerPrompt + k) }
        let all = ps.flatMap { [String](repeating: $0, count: settings.samplesPerPrompt) }
        let r = try reward(all, noise, seeds)
        return r.reduce(0, +) / Double(max(r.count, 1))
    }

    /// Weights, optimizer moments and the finished rounds, atomically.
    public func saveCheckpoint(_ url: URL, extraMetadata: [String: String] = [:]) throws {
        try TrainingCheckpoint.save(url, params: policy.params, optimizer: optimizer, step: round, seed: settings.seed,
                                    config: policy.config.jsonString(), metadata: extraMetadata.merging(["trainer": "dpo"]) { a, _ in a })
    }

    /// Restores weights, optimizer moments and the finished rounds.
    public func resume(from url: URL) throws {
        round = try TrainingCheckpoint.restore(url, params: policy.params, optimizer: optimizer) { json in
            var c = try JSONDecoder().decode(NoiseARConfig.self, from: Data(json.utf8))
            c.dropout = policy.config.dropout
            return c == policy.config
        }
    }
}

extension DPOTrainer {
    /// The shapes world's reward: each noise is sampled with the diffusion model (`settings`, in
    /// batches of `batch`) and the image scored with the exact prompt-fidelity reward.
    /// `progress(done, total)` follows every batch.
    public static func shapesReward(model: TextToImageModel, settings: SamplingSettings, batch: Int,
                                    progress: @escaping (Int, Int) -> Void = { _, _ in }) -> RewardFunction {
        { prompts, noise, seeds in
            try require(batch >= 1, "batch must be at least 1")
            var scores: [Double] = []
            var start = 0
            while start < prompts.count {
                let end = min(start + batch, prompts.count)
                let images = try DiffusionSampler.sample(model: model, prompts: Array(prompts[start..<end]),
                                                         noise: noise.slice(axis: 0, start, end), seed: seeds[start], settings: settings)
                for (i, rgb) in try DiffusionSampler.rgb(images).enumerated() {
                    scores.append(try Reward.evaluate(image: rgb, prompt: prompts[start + i]).score)
                }
                start = end
                progress(start, prompts.count)
            }
            return scores
        }
    }

    /// The policy as a standalone prior file (what `noise` and `sample --prior noisear` load).
    public func export(_ url: URL, metadata: [String: String] = [:], storage: SafeTensorsFile.Storage = .f16) throws {
        try policy.writePrior(to: url, weights: policy.params.hostTensors(), step: round, metadata: metadata, storage: storage)
    }
}

extension ShapesRNG {
    /// A uniformly random order of 0..<n (Fisher-Yates).
    mutating func permutation(_ n: Int) -> [Int] {
        var order = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, below(i + 1)) }
        return order
    }
}
