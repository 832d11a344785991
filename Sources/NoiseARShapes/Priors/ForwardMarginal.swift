import Foundation
import NoiseARCore
import NoiseARModels

/// NoiseAR training data that carries the layout: the diffusion's own forward marginal at the
/// sampler's first timestep, q(x_T | prompt), drawn fresh for every batch from the renderer.
///
/// A correct scene x_0 of the prompt (positions and sizes from a layout seed) noised to T is
/// x_T = sqrt(alpha-bar_T) x_0 + sqrt(1 - alpha-bar_T) z: its mean holds the layout, at 0.068 of
/// the image's contrast on Stable Diffusion's schedule, far below the noise. `gain` scales the
/// layout's deviation from the background: the mean is sqrt(alpha-bar_T) (b + gain (x_0 - b)) for
/// background level b, so gain 1 is the exact marginal and a larger gain the marginal of a
/// start whose layout is that many times stronger (the constant part, the background's
/// sqrt(alpha-bar_T) b, is unchanged). Batches come with their mean and the noise's variance, for
/// the Rao-Blackwellised likelihood (`NoiseARNet.expectedLogProb`).
public struct ForwardMarginal: Sendable {
    /// The prompts drawn from (every wording; both sides of a mirrored pair are prompts).
    public let prompts: [String]
    /// Their prompt embeddings [P, T, D] from the diffusion model's text encoder.
    public let embeds: HostTensor
    /// sqrt(alpha-bar_T) and sqrt(1 - alpha-bar_T) at the schedule's last timestep.
    public let signal: Double, noise: Double
    public let gain: Double
    public let seed: UInt64
    /// The mean and standard deviation of every element (`statistics()`, estimated once): the
    /// prompt-independent control's constants.
    public private(set) var control: (mean: Double, std: Double) = (0, 1)
    /// The renderer's background level in [-1, 1].
    public static let background = Double(Scene.background.red) / 127.5 - 1

    public init(model: TextToImageModel, prompts: [String], gain: Double, seed: UInt64) throws {
        try require(!prompts.isEmpty, "no prompts to draw scenes for")
        try require(gain.isFinite && gain > 0, "the layout gain must be a positive number, got \(gain)")
        for p in prompts { _ = try PromptFacts.parse(p) }
        let ab = try DDIMScheduler(config: model.schedulerConfig(karras: false), steps: 2).alphasCumprod
        guard let last = ab.last else { throw NoiseError.invalidArgument("the model's schedule has no timesteps") }
        self.prompts = prompts
        signal = last.squareRoot()
        noise = (1 - last).squareRoot()
        self.gain = gain
        self.seed = seed
        var rows: [Float] = []
        var shape: [Int] = []
        for start in stride(from: 0, to: prompts.count, by: 64) {
            let part = try model.device.noGrad { try model.encode(Array(prompts[start..<min(start + 64, prompts.count)])) }.toHost()
            shape = part.shape
            rows += part.data
        }
        embeds = HostTensor(shape: [prompts.count] + shape.dropFirst(), data: rows)
        control = try statistics()
    }

    /// The marginal's mean at a pixel of value `x0`: sqrt(alpha-bar_T) (b + gain (x0 - b)).
    func mean(_ x0: Float) -> Double { signal * (Self.background + gain * (Double(x0) - Self.background)) }

    /// One batch: the teacher-forcing inputs x_T, their mean and prompt embeddings (the noise's
    /// variance is `noise`^2).
    public struct Batch {
        public var inputs: HostTensor, mean: HostTensor, embeds: HostTensor
        public var prompts: [String]
    }

    /// Batch `index` of `size` draws: prompts uniformly at random, a layout seed and the noise
    /// per draw, all from (`seed`, `index`), so a resumed run sees the same batches.
    public func batch(_ index: UInt64, size: Int) throws -> Batch {
        try require(size >= 1, "batch must be at least 1")
        var rng = ShapesRNG(seed: seed &+ index &* 0x9E37_79B9_7F4A_7C15 &+ 0xF0D)
        let per = 3 * Scene.size * Scene.size, perE = embeds.data.count / prompts.count
        let z = Philox.normal(count: size * per, seed: seed ^ 0xF02A_2D00, offset: index &* 0x1_0000_0000)
        var inputs = [Float](repeating: 0, count: size * per), means = inputs
        var e: [Float] = []
        e.reserveCapacity(size * perE)
        var chosen: [String] = []
        for i in 0..<size {
            let p = rng.below(prompts.count)
            let x0 = try Scene.sample(prompt: prompts[p], seed: rng.next()).renderTensor().data
            for j in 0..<per {
                let m = Float(mean(x0[j]))
                means[i * per + j] = m
                inputs[i * per + j] = m + Float(noise) * z[i * per + j]
            }
            e += embeds.data[p * perE..<(p + 1) * perE]
            chosen.append(prompts[p])
        }
        let shape = [size, 3, Scene.size, Scene.size]
        return Batch(inputs: HostTensor(shape: shape, data: inputs), mean: HostTensor(shape: shape, data: means),
                     embeds: HostTensor(shape: [size] + embeds.shape.dropFirst(), data: e), prompts: chosen)
    }

    /// Each prompt's expected layout at patch resolution, [P, (S/patch)^2 x 3]: the marginal's
    /// mean less its background level, sqrt(alpha-bar_T) gain (x_0 - b), averaged over `renders`
    /// layouts and over each patch, in patch-major, channel-minor order (the layout head's).
    public func expectedLayouts(patch: Int, renders: Int = 64) throws -> HostTensor {
        try require(patch >= 1 && Scene.size % patch == 0, "patch \(patch) does not divide \(Scene.size)")
        try require(renders >= 1, "renders must be at least 1")
        let g = Scene.size / patch, plane = Scene.size * Scene.size, per = g * g * 3
        let scale = signal * gain / Double(renders * patch * patch)
        var out = [Float](repeating: 0, count: prompts.count * per)
        for (p, prompt) in prompts.enumerated() {
            var acc = [Double](repeating: 0, count: per)
            for r in 0..<renders {
                let x0 = try Scene.sample(prompt: prompt, seed: seed &+ UInt64(r) &* 0x9E37_79B9 &+ 0x1A7).renderTensor().data
                for c in 0..<3 {
                    for y in 0..<Scene.size {
                        for x in 0..<Scene.size {
                            acc[((y / patch) * g + x / patch) * 3 + c] += Double(x0[c * plane + y * Scene.size + x]) - Self.background
                        }
                    }
                }
            }
            for j in 0..<per { out[p * per + j] = Float(acc[j] * scale) }
        }
        return HostTensor(shape: [prompts.count, per], data: out)
    }

    /// The mean and standard deviation of every element of the marginal (over prompts, layouts
    /// and noise), estimated from `count` draws (`control` holds the default estimate).
    public func statistics(count: Int = 2048) throws -> (mean: Double, std: Double) {
        var s = 0.0, s2 = 0.0, n = 0.0
        var rng = ShapesRNG(seed: seed ^ 0x57A7)
        for _ in 0..<count {
            let x0 = try Scene.sample(prompt: prompts[rng.below(prompts.count)], seed: rng.next()).renderTensor().data
            for v in x0 {
                let m = mean(v)
                s += m
                s2 += m * m
                n += 1
            }
        }
        let mean = s / n
        return (mean, (max(s2 / n - mean * mean, 0) + noise * noise).squareRoot())
    }
}
