import Foundation
import NoiseARCore
import NoiseARModels

/// Settings of teacher-forced NLL training of a NoiseAR prior.
public struct PriorTrainingSettings: Sendable, Equatable {
    public var steps = 3000
    public var batch = 32
    public var lr: Float = 3e-4
    public var warmup = 100
    public var weightDecay: Float = 0.01
    public var seed: UInt64 = 0
    public init() {}
}

/// What a NoiseAR prior is trained on: collected (noise, prompt) pairs, or the forward marginal
/// drawn fresh for every batch (`ForwardMarginal`, with its Rao-Blackwellised likelihood).
public enum PriorTrainingData {
    case pairs(NoiseDataset)
    case forward(ForwardMarginal, batches: Int)

    /// Pairs, or forward draws (the validation set: `batches` fixed batches).
    public var count: Int {
        switch self {
        case .pairs(let d): return d.count
        case .forward(_, let batches): return batches * PriorTrainer.forwardValidationBatch
        }
    }
}

/// Teacher-forced Gaussian NLL training of a NoiseAR prior on (noise, prompt embeddings) pairs:
/// loss = -log pi(noise | text) / elements (nats per element, temperature 1), AdamW with linear
/// warm-up then cosine decay, dropout from the network's config. On the forward marginal the loss
/// is the expected NLL over each element's own noise (`NoiseARNet.expectedLogProb`).
public final class PriorTrainer {
    public let net: NoiseARNet
    public let settings: PriorTrainingSettings
    public let optimizer: AdamW
    public let train: PriorTrainingData
    public let validation: PriorTrainingData
    public private(set) var step = 0
    static let forwardValidationBatch = 64

    public convenience init(net: NoiseARNet, train: NoiseDataset, validation: NoiseDataset, settings: PriorTrainingSettings) throws {
        try require(train.count > 0, "no training pairs")
        try requireShape(Array(train.noise.shape.dropFirst()) == net.config.latentShape,
                         "dataset noise \(train.noise.shape) does not match the prior's latent \(net.config.latentShape)")
        try requireShape(train.promptEmbeds.shape.last == net.config.contextDim,
                         "dataset prompt embeddings \(train.promptEmbeds.shape) do not match the prior's width \(net.config.contextDim)")
        try self.init(net: net, data: .pairs(train), validation: .pairs(validation), settings: settings)
    }

    /// Training on the forward marginal: fresh batches from `train`, validation on
    /// `validationBatches` fixed batches of `validation` (other prompts).
    public convenience init(net: NoiseARNet, forward train: ForwardMarginal, validation: ForwardMarginal?,
                            validationBatches: Int = 4, settings: PriorTrainingSettings) throws {
        try requireShape(net.config.latentShape == [3, Scene.size, Scene.size],
                         "the prior's latent \(net.config.latentShape) is not the shapes world's [3, \(Scene.size), \(Scene.size)]")
        try requireShape(train.embeds.shape.last == net.config.contextDim,
                         "prompt embeddings \(train.embeds.shape) do not match the prior's width \(net.config.contextDim)")
        try self.init(net: net, data: .forward(train, batches: 0),
                      validation: validation.map { .forward($0, batches: validationBatches) } ?? .forward(train, batches: 0),
                      settings: settings)
    }

    public init(net: NoiseARNet, data: PriorTrainingData, validation: PriorTrainingData, settings: PriorTrainingSettings) throws {
        try require(settings.batch >= 1 && settings.steps >= 1, "batch and steps must be at least 1")
        self.net = net
        self.train = data
        self.validation = validation
        self.settings = settings
        optimizer = AdamW(lr: settings.lr, weightDecay: settings.weightDecay)
    }

    /// The learning rate of step `s`: linear warm-up, then cosine decay to 10%.
    func learningRate(_ s: Int) -> Float {
        if s < settings.warmup { return settings.lr * Float(s + 1) / Float(settings.warmup) }
        let t = Double(s - settings.warmup) / Double(max(settings.steps - settings.warmup, 1))
        return settings.lr * Float(0.1 + 0.9 * 0.5 * (1 + Foundation.cos(Double.pi * min(t, 1))))
    }

    func tensors(_ d: NoiseDataset, _ idx: [Int]) throws -> (Tensor, Tensor) {
        let s = d.subset(idx)
        return (try Tensor(s.noise, on: net.device), try Tensor(s.promptEmbeds, on: net.device))
    }

    /// Sum over the batch of log pi (pairs) or its expectation over the noise (forward draws).
    func logProb(_ f: ForwardMarginal, _ b: ForwardMarginal.Batch) throws -> Tensor {
        try net.expectedLogProb(inputs: Tensor(b.inputs, on: net.device), mean: Tensor(b.mean, on: net.device),
                                variance: Float(f.noise * f.noise), text: Tensor(b.embeds, on: net.device))
    }

    /// One optimisation step; returns the training NLL (nats per element).
    @discardableResult
    public func trainStep() throws -> Float {
        net.training = true
        net.beginDropout(stream: UInt64(step) &* 0x9E37_79B9_7F4A_7C15)
        defer { net.training = false }
        let per = Float(net.config.latentShape.reduce(1, *))
        let logProb: Tensor
        switch train {
        case .pairs(let d):
            var rng = ShapesRNG(seed: settings.seed &+ UInt64(step) &* 0x9E37_79B9 &+ 0x51)
            let idx = (0..<settings.batch).map { _ in rng.below(d.count) }
            let (x, text) = try tensors(d, idx)
            logProb = try net.logProb(noise: x, text: text, temperature: 1)
        case .forward(let f, _):
            logProb = try self.logProb(f, f.batch(UInt64(step), size: settings.batch))
        }
        let loss = try logProb.mean().scaled(-1 / per)
        try optimizer.minimize(loss, params: net.params, lr: learningRate(step))
        step += 1
        return try loss.item()
    }

    /// Mean NLL per element of the prior and of a reference on a data set: a standard Gaussian on
    /// pairs; on forward draws the prompt-independent control N(mean, std^2) of the marginal
    /// (`statistics`), both as expectations over the noise.
    public func evaluate(_ data: PriorTrainingData, batch: Int = 64) throws -> (prior: Double, gaussian: Double) {
        guard data.count > 0 else { return (.nan, .nan) }
        let per = Double(net.config.latentShape.reduce(1, *))
        switch data {
        case .pairs(let d):
            var total = 0.0, sumSq = 0.0
            try net.device.noGrad {
                var start = 0
                while start < d.count {
                    let idx = Array(start..<min(start + batch, d.count))
                    let (x, text) = try tensors(d, idx)
                    total -= try net.logProb(noise: x, text: text, temperature: 1).toArray().reduce(0.0) { $0 + Double($1) }
                    start += idx.count
                }
            }
            for v in d.noise.data { sumSq += Double(v) * Double(v) }
            let gaussian = 0.5 * Foundation.log(2 * Double.pi) + 0.5 * sumSq / Double(d.noise.data.count)
            return (total / (Double(d.count) * per), gaussian)
        case .forward(let f, let batches):
            let (m, sd) = f.control
            var total = 0.0, control = 0.0
            let v = f.noise * f.noise
            try net.device.noGrad {
                for i in 0..<batches {
                    // Validation batches are far from the training stream's indices.
                    let b = try f.batch(UInt64.max - UInt64(i), size: Self.forwardValidationBatch)
                    total -= try logProb(f, b).toArray().reduce(0.0) { $0 + Double($1) }
                    for x in b.mean.data { control += (Double(x) - m) * (Double(x) - m) + v }
                }
            }
            let n = Double(data.count) * per
            return (total / n, 0.5 * Foundation.log(2 * Double.pi * sd * sd) + 0.5 * control / n / (sd * sd))
        }
    }

    /// The layout head's fit: the chosen ridge penalty and the share of the validation prompts'
    /// expected-layout variance it explains (nil without validation prompts).
    public struct LayoutFit: Sendable {
        public var lambda: Double
        public var validationR2: Double?
    }

    /// Fits the layout head in closed form to the forward marginal's expected layouts: ridge
    /// regression from the flattened prompt states of the training prompts, the penalty chosen
    /// from `lambdas` by the validation prompts' squared error. This is the minimiser of the
    /// head's share of the expected NLL when the rest of the network predicts a constant;
    /// gradient descent finds it only slowly, as the layout lies along small directions of the
    /// prompt states' covariance. Training then continues from it.
    public func fitLayoutHead(renders: Int = 64, lambdas: [Double] = [0.003, 0.01, 0.03, 0.1, 0.3]) throws -> LayoutFit {
        guard let head = net.layoutHead else { throw NoiseError.invalidArgument("the prior has no layout head") }
        guard case .forward(let f, _) = train else { throw NoiseError.invalidArgument("the layout head is fitted on the forward marginal") }
        try require(!lambdas.isEmpty, "no ridge penalties to choose from")
        let patch = net.config.patchSize
        let y = try f.expectedLayouts(patch: patch, renders: renders)
        let n = f.prompts.count, p = f.embeds.data.count / n, q = y.shape[1]
        try requireShape(head.weight.shape == [q, p], "layout head \(head.weight.shape) does not match [\(q), \(p)]")
        let x = f.embeds.data.map(Double.init), yd = y.data.map(Double.init)
        var validation: (x: [Double], y: [Double], n: Int)?
        if case .forward(let v, let batches) = self.validation, batches > 0 {
            validation = (v.embeds.data.map(Double.init), try v.expectedLayouts(patch: patch, renders: renders).data.map(Double.init), v.prompts.count)
        }
        var best: (fit: (weight: [Double], bias: [Double]), lambda: Double, mse: Double)?
        for lambda in lambdas {
            let fit = try Ridge.fit(x: x, y: yd, rows: n, features: p, targets: q, lambda: lambda)
            guard let v = validation else { best = (fit, lambda, .nan); break }
            var se = 0.0
            for r in 0..<v.n {
                for i in 0..<q {
                    var s = fit.bias[i]
                    for j in 0..<p { s += fit.weight[i * p + j] * v.x[r * p + j] }
                    se += (s - v.y[r * q + i]) * (s - v.y[r * q + i])
                }
            }
            if se < (best?.mse ?? .infinity) { best = (fit, lambda, se) }
        }
        guard let best else { throw NoiseError.invalidArgument("no ridge fit") }
        try head.weight.assign(Tensor(best.fit.weight.map(Float.init), shape: [q, p], on: net.device))
        if let b = head.bias { try b.assign(Tensor(best.fit.bias.map(Float.init), shape: [q], on: net.device)) }
        var r2: Double?
        if let v = validation, v.n > 0 {
            var mean = [Double](repeating: 0, count: q), total = 0.0
            for r in 0..<v.n { for i in 0..<q { mean[i] += v.y[r * q + i] / Double(v.n) } }
            for r in 0..<v.n { for i in 0..<q { total += (v.y[r * q + i] - mean[i]) * (v.y[r * q + i] - mean[i]) } }
            r2 = total > 0 ? 1 - best.mse / total : nil
        }
        return LayoutFit(lambda: best.lambda, validationR2: r2)
    }

    /// Weights, optimizer moments and the step, atomically.
    public func saveCheckpoint(_ url: URL, extraMetadata: [String: String] = [:]) throws {
        try TrainingCheckpoint.save(url, params: net.params, optimizer: optimizer, step: step, seed: settings.seed,
                                    config: net.config.jsonString(), metadata: extraMetadata)
    }

    /// Restores weights, optimizer moments and the step.
    public func resume(from url: URL) throws {
        step = try TrainingCheckpoint.restore(url, params: net.params, optimizer: optimizer) { json in
            try JSONDecoder().decode(NoiseARConfig.self, from: Data(json.utf8)) == net.config
        }
    }

    /// The weights as a standalone prior file (what `noise` and `sample --prior noisear` load).
    /// `weights` (e.g. the best-validation snapshot) default to the current ones.
    public func export(_ url: URL, weights: [String: HostTensor]? = nil, step exportedStep: Int? = nil,
                       metadata: [String: String] = [:], storage: SafeTensorsFile.Storage = .f16) throws {
        try net.writePrior(to: url, weights: weights ?? net.params.hostTensors(), step: exportedStep ?? step,
                           metadata: metadata, storage: storage)
    }
}

extension NoiseARNet {
    /// `weights` as a standalone prior file: the config (dropout off) and kind in the metadata.
    public func writePrior(to url: URL, weights: [String: HostTensor], step: Int, metadata: [String: String] = [:],
                           storage: SafeTensorsFile.Storage = .f16) throws {
        var meta = metadata
        var c = config
        c.dropout = 0
        meta["config"] = try c.jsonString()
        meta["kind"] = "noisear-prior"
        meta["step"] = String(step)
        try SafeTensorsFile(tensors: weights, metadata: meta).write(to: url, as: storage)
    }
}

extension AdamW {
    /// One step on `loss`: backward, update every trainable parameter of the store at `lr`,
    /// clear the gradients.
    public func minimize(_ loss: Tensor, params store: Parameters, lr: Float) throws {
        try loss.backward()
        self.lr = lr
        let params = store.all.filter(\.requiresGrad)
        try update(params)
        for p in params { p.zeroGrad() }
    }

    /// The moments of every parameter of a store that has them, as `adam.m.NAME`/`adam.v.NAME`.
    public func hostTensors(for params: Parameters) throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for name in params.names {
            if let p = params.tensors[name], let (m, v) = moments(of: p) {
                out["adam.m." + name] = try m.toHost()
                out["adam.v." + name] = try v.toHost()
            }
        }
        return out
    }

    /// Restores the moments saved by `hostTensors(for:)` and the step count.
    public func restore(step: Int, from file: SafeTensorsFile, params: Parameters) throws {
        var moments: [(param: Tensor, m: Tensor, v: Tensor)] = []
        for name in params.names {
            guard let p = params.tensors[name], let m = file["adam.m." + name], let v = file["adam.v." + name] else { continue }
            try m.requireFinite("adam.m." + name, in: file.source)
            try v.requireFinite("adam.v." + name, in: file.source)
            moments.append((p, try Tensor(m, on: params.device), try Tensor(v, on: params.device)))
        }
        try restore(step: step, moments: moments)
    }
}

/// Mirrored training pairs: a noise flipped left-right with its prompt's left/right swapped
/// (the shapes world is mirror-symmetric), so the prior sees every relation both ways.
public enum PromptMirror {
    public static func mirrored(_ prompt: String) -> String {
        prompt.split(separator: " ").map { w -> String in
            w == "left" ? "right" : w == "right" ? "left" : String(w)
        }.joined(separator: " ")
    }

    /// Whether a prompt belongs to the training commands' validation prompts: a stable 10% by
    /// hash of the canonical wording (mirrored pairs stay together).
    public static func isValidation(_ prompt: String) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in canonical(prompt).utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h % 10 == 0
    }

    /// The prompt with left/right put in a fixed order (both wordings of a mirrored pair map to
    /// the same string, so a validation split by it keeps mirrors on one side).
    public static func canonical(_ prompt: String) -> String {
        min(prompt, mirrored(prompt))
    }

    /// The dataset plus its mirror images (prompt embeddings re-encoded by `encode`).
    public static func augmented(_ d: NoiseDataset, encode: ([String]) throws -> HostTensor) throws -> NoiseDataset {
        guard d.count > 0 else { return d }
        let s = d.noise.shape, w = s[s.count - 1], rowCount = d.noise.data.count / w
        var flipped = d.noise.data
        for r in 0..<rowCount {
            for x in 0..<w { flipped[r * w + x] = d.noise.data[r * w + (w - 1 - x)] }
        }
        let prompts = d.prompts.map(mirrored)
        var out = d
        try out.append(NoiseDataset(noise: HostTensor(shape: s, data: flipped), promptEmbeds: encode(prompts),
                                    scores: d.scores, prompts: prompts, seeds: d.seeds))
        return out
    }
}
