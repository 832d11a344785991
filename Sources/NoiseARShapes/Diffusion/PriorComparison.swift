import Foundation
import NoiseARCore
import NoiseARModels

/// The evaluation harness: several noise priors on the same prompts and seeds (paired), with
/// per-prior fidelity, pairwise differences with bootstrap confidence intervals, the prior's
/// share of the sampling time, and a side-by-side image grid.
public enum PriorComparison {
    /// One prior's samples: results[p * seeds.count + s] is prompt p with seed s.
    public struct Run: Codable, Sendable {
        public var label: String
        public var prompts: [String]
        public var seeds: [UInt64]
        public var results: [RewardResult]
        public var timing: Evaluation.Timing
        /// The `--shard i/n` this run covers, [i, n] (absent in files of earlier versions).
        public var shard: [Int]?

        public init(label: String, prompts: [String], seeds: [UInt64], results: [RewardResult], timing: Evaluation.Timing) {
            self.label = label
            self.prompts = prompts
            self.seeds = seeds
            self.results = results
            self.timing = timing
        }
    }

    /// A prior's row of the table.
    public struct PriorSummary: Codable, Sendable {
        public var label: String
        public var report: FidelityReport
        /// The prior's time as a share of noise + sampling time.
        public var noiseTimeShare: Double
    }

    /// A pair of priors: `a` minus `b`, per-prompt means of the paired differences.
    public struct PairSummary: Codable, Sendable {
        public var a: String, b: String
        public var meanDifference: Double
        /// 95% paired-bootstrap interval over prompts (2.5th and 97.5th percentiles).
        public var ci95Low: Double, ci95High: Double
        /// Per sample (prompt, seed): a better, worse, equal.
        public var wins: Int, losses: Int, ties: Int
    }

    public struct Table: Codable, Sendable {
        public var prompts: Int
        public var seedsPerPrompt: Int
        public var bootstrapResamples: Int
        public var priors: [PriorSummary]
        public var pairs: [PairSummary]
    }

    /// Samples and scores every prompt x seed with each source (same prompts, same seeds).
    public static func run(model: TextToImageModel, prompts: [String], seeds: [UInt64], settings: SamplingSettings,
                           batch: Int, sources: [(label: String, source: NoiseSource)],
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> [Run] {
        try require(!sources.isEmpty, "no priors to compare")
        try require(Set(sources.map(\.label)).count == sources.count, "two priors have the same name")
        let per = prompts.count * seeds.count
        var runs: [Run] = []
        for (i, s) in sources.enumerated() {
            var timing = Evaluation.Timing()
            let results = try Evaluation.run(model: model, prompts: prompts, seeds: seeds, settings: settings, batch: batch,
                                             noise: s.source, timing: &timing) { done, _ in progress(i * per + done, sources.count * per) }
            runs.append(Run(label: s.label, prompts: prompts, seeds: seeds, results: results, timing: timing))
        }
        return runs
    }

    /// Saved comparisons joined into one run per prior. Files comparing the same priors over
    /// disjoint prompts (shards) are concatenated; files comparing other priors over the same
    /// prompts and seeds add their priors, still paired (a sample is fixed by its prompt, seed and
    /// prior), so a prior can join an earlier comparison without sampling the others again. A
    /// prior in several such files must have the same rewards in each.
    public static func merge(_ files: [[Run]]) throws -> [Run] {
        guard !files.isEmpty else { throw NoiseError.invalidArgument("no evaluation shards to merge") }
        var groups: [[[Run]]] = []   // files with the same priors, in order of first appearance
        for f in files {
            try require(!f.isEmpty, "a saved evaluation with no priors")
            if let i = groups.firstIndex(where: { $0[0].map(\.label) == f.map(\.label) }) { groups[i].append(f) } else { groups.append([f]) }
        }
        var joined: [Run] = []
        for group in groups {
            for run in try mergeShards(group) {
                guard let first = joined.first else { joined.append(run); continue }
                let r = try aligned(run, to: first)
                if let same = joined.first(where: { $0.label == r.label }) {
                    let differing = zip(same.results, r.results).filter { $0.score != $1.score || $0.facts != $1.facts }.count
                    try require(differing == 0, "prior \(r.label) is in two saved evaluations with different rewards (\(differing) of \(r.results.count) samples differ)")
                } else {
                    joined.append(r)
                }
            }
        }
        return joined
    }

    /// `run` with its prompts in `reference`'s order; both must hold the same prompts (each
    /// once) and seeds.
    static func aligned(_ run: Run, to reference: Run) throws -> Run {
        try require(run.results.count == run.prompts.count * run.seeds.count,
                    "prior \(run.label) holds \(run.results.count) results for \(run.prompts.count) prompts x \(run.seeds.count) seeds")
        try require(run.seeds == reference.seeds && Set(run.prompts) == Set(reference.prompts)
                        && Set(run.prompts).count == run.prompts.count,
                    "prior \(run.label) was evaluated on other prompts or seeds than \(reference.label) (\(run.prompts.count) prompts x \(run.seeds.count) seeds against \(reference.prompts.count) x \(reference.seeds.count))")
        let k = run.seeds.count
        let at = Dictionary(uniqueKeysWithValues: run.prompts.enumerated().map { ($1, $0) })
        var out = run
        out.prompts = reference.prompts
        out.results = reference.prompts.flatMap { p in run.results[(at[p] ?? 0) * k..<((at[p] ?? 0) + 1) * k] }
        return out
    }

    /// Runs of the same priors over disjoint prompt sets (shards) joined into one run per prior.
    static func mergeShards(_ shards: [[Run]]) throws -> [Run] {
        guard let first = shards.first else { throw NoiseError.invalidArgument("no evaluation shards to merge") }
        try checkShardSet(shards)
        var merged = first
        for shard in shards.dropFirst() {
            try require(shard.map(\.label) == merged.map(\.label),
                        "shards compare different priors: \(merged.map(\.label)) and \(shard.map(\.label))")
            for (i, r) in shard.enumerated() {
                try require(r.seeds == merged[i].seeds, "shards use different seeds: \(merged[i].seeds) and \(r.seeds)")
                try require(Set(r.prompts).isDisjoint(with: merged[i].prompts), "two shards hold the same prompt")
                merged[i].prompts += r.prompts
                merged[i].results += r.results
                merged[i].timing.noiseSeconds += r.timing.noiseSeconds
                merged[i].timing.samplingSeconds += r.timing.samplingSeconds
            }
        }
        return merged
    }

    /// Saved shards that say which `--shard i/n` they hold must form one complete set: a single n,
    /// every i from 0 to n - 1 once. A partial table would look like a finished one.
    static func checkShardSet(_ shards: [[Run]]) throws {
        let marks = shards.map { $0.first?.shard }
        let known = marks.compactMap { $0 }.filter { $0.count == 2 }
        guard !known.isEmpty else { return }  // files of earlier versions say nothing
        guard known.count == marks.count else {
            throw NoiseError.invalidArgument("some saved evaluations say which shard they hold and some do not: merge files of one sharded run")
        }
        let counts = Set(known.map { $0[1] })
        guard counts.count == 1, let n = counts.first else {
            throw NoiseError.invalidArgument("the saved evaluations come from runs split differently (--shard of \(counts.sorted().map(String.init).joined(separator: " and ")) parts)")
        }
        let indices = known.map { $0[0] }
        let twice = Set(indices.filter { i in indices.filter { $0 == i }.count > 1 })
        guard twice.isEmpty else {
            throw NoiseError.invalidArgument("shard \(twice.sorted().map { "\($0)/\(n)" }.joined(separator: ", ")) given twice")
        }
        let missing = (0 ..< n).filter { !indices.contains($0) }
        guard missing.isEmpty else {
            throw NoiseError.invalidArgument("incomplete: shard\(missing.count == 1 ? "" : "s") \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")) of \(n) missing")
        }
    }

    /// The table of `runs` (all on the same prompts and seeds).
    public static func table(_ runs: [Run], resamples: Int = 2000, seed: UInt64 = 0) throws -> Table {
        guard let first = runs.first else { throw NoiseError.invalidArgument("no runs") }
        let k = first.seeds.count, n = first.prompts.count
        for r in runs {
            try require(r.prompts == first.prompts && r.seeds == first.seeds && r.results.count == n * k,
                        "run \(r.label) is not on the same prompts and seeds")
        }
        let priors = runs.map { PriorSummary(label: $0.label, report: FidelityReport(results: $0.results),
                                             noiseTimeShare: $0.timing.noiseShare) }
        var pairs: [PairSummary] = []
        for i in 0..<runs.count {
            for j in (i + 1)..<runs.count {
                pairs.append(pair(runs[i], runs[j], prompts: n, seedsPerPrompt: k, resamples: resamples, seed: seed))
            }
        }
        return Table(prompts: n, seedsPerPrompt: k, bootstrapResamples: resamples, priors: priors, pairs: pairs)
    }

    static func pair(_ a: Run, _ b: Run, prompts n: Int, seedsPerPrompt k: Int, resamples: Int, seed: UInt64) -> PairSummary {
        let d = zip(a.results, b.results).map { $0.score - $1.score }
        let perPrompt = (0..<n).map { p in d[(p * k)..<((p + 1) * k)].reduce(0, +) / Double(max(k, 1)) }
        let mean = perPrompt.reduce(0, +) / Double(max(n, 1))
        let (lo, hi) = bootstrapInterval(perPrompt, resamples: resamples, seed: seed)
        return PairSummary(a: a.label, b: b.label, meanDifference: mean, ci95Low: lo, ci95High: hi,
                           wins: d.filter { $0 > 1e-9 }.count, losses: d.filter { $0 < -1e-9 }.count,
                           ties: d.filter { abs($0) <= 1e-9 }.count)
    }

    /// The 2.5th and 97.5th percentiles of the mean of `values` resampled with replacement
    /// (`resamples` times, from a fixed seed so a table is reproducible).
    public static func bootstrapInterval(_ values: [Double], resamples: Int, seed: UInt64) -> (Double, Double) {
        guard !values.isEmpty, resamples > 0 else { return (0, 0) }
        var rng = ShapesRNG(seed: seed ^ 0xB007_57A9)
        var means = [Double](repeating: 0, count: resamples)
        for r in 0..<resamples {
            var sum = 0.0
            for _ in 0..<values.count { sum += values[Int(rng.next() % UInt64(values.count))] }
            means[r] = sum / Double(values.count)
        }
        means.sort()
        func at(_ q: Double) -> Double { means[min(max(Int((q * Double(resamples - 1)).rounded()), 0), resamples - 1)] }
        return (at(0.025), at(0.975))
    }

    // MARK: the grid

    /// A side-by-side grid: one row per prompt, one column per prior, every image from the same
    /// seed; each image framed green when all its facts hold, red otherwise; the priors' labels
    /// above the columns and each row's score beside its images, in a small pixel font.
    public static func grid(model: TextToImageModel, prompts: [String], seed: UInt64, settings: SamplingSettings,
                            sources: [(label: String, source: NoiseSource)], scale: Int = 3) throws -> PNGImage {
        try require(!prompts.isEmpty && !sources.isEmpty, "a grid needs prompts and priors")
        try require((1...8).contains(scale), "grid scale must be in 1...8")
        let cell = Scene.size * scale, pad = 2 * scale, frame = scale
        // Column labels wrap to the column's width (pieces of at most `perLine` characters).
        let column = cell + pad + 2 * frame
        let perLine = max(1, (column - 2 * frame) / ((PixelFont.width + 1) * scale))
        let labelLines = sources.map { s -> [String] in
            let chars = Array(s.label)
            return stride(from: 0, to: max(chars.count, 1), by: perLine).map { String(chars[$0..<min($0 + perLine, chars.count)]) }
        }
        let lineHeight = (PixelFont.height + 2) * scale
        let labelHeight = lineHeight * (labelLines.map(\.count).max() ?? 1)
        let promptWidth = (prompts.map(\.count).max() ?? 0) * (PixelFont.width + 1) * scale + pad
        let width = promptWidth + sources.count * (cell + pad + 2 * frame)
        let height = labelHeight + prompts.count * (cell + pad + 2 * frame)
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        func put(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            let i = (y * width + x) * 3
            pixels[i] = c.0; pixels[i + 1] = c.1; pixels[i + 2] = c.2
        }
        func text(_ s: String, _ x0: Int, _ y0: Int) {
            PixelFont.draw(s, scale: scale) { x, y in put(x0 + x, y0 + y, (0, 0, 0)) }
        }
        for (c, lines) in labelLines.enumerated() {
            for (l, line) in lines.enumerated() { text(line, promptWidth + c * column + frame, scale + l * lineHeight) }
        }
        for (r, prompt) in prompts.enumerated() {
            let y0 = labelHeight + r * (cell + pad + 2 * frame)
            text(prompt, 0, y0 + cell / 2)
            let facts = try PromptFacts.parse(prompt)
            for (c, s) in sources.enumerated() {
                let noise = try s.source([facts.prompt], [seed])
                let image = try DiffusionSampler.sample(model: model, prompts: [facts.prompt], noise: noise, seed: seed, settings: settings)
                guard let rgb = try DiffusionSampler.rgb(image).first else { continue }
                let ok = try Reward.evaluate(image: rgb, width: Scene.size, height: Scene.size, facts: facts).allHold
                let x0 = promptWidth + c * (cell + pad + 2 * frame)
                let color: (UInt8, UInt8, UInt8) = ok ? (40, 170, 60) : (210, 40, 40)
                for y in 0..<(cell + 2 * frame) {
                    for x in 0..<(cell + 2 * frame) {
                        let inside = x >= frame && y >= frame && x < cell + frame && y < cell + frame
                        if inside {
                            let sx = (x - frame) / scale, sy = (y - frame) / scale, si = (sy * Scene.size + sx) * 3
                            put(x0 + x, y0 + y, (rgb[si], rgb[si + 1], rgb[si + 2]))
                        } else {
                            put(x0 + x, y0 + y, color)
                        }
                    }
                }
            }
        }
        var png = PNGImage(width: width, height: height, pixels: pixels)
        png.text = ["columns": sources.map(\.label).joined(separator: ", "), "rows": prompts.joined(separator: " | "),
                    "seed": String(seed), "software": "noisear-gpu evaluate --grid"]
        return png
    }
}

/// A 3x5 pixel font (lowercase letters, digits and a little punctuation; other characters are
/// drawn as blanks), for labels in images without a font library.
enum PixelFont {
    static let width = 3, height = 5
    /// Each glyph as five rows of three bits (most significant bit on the left).
    static let glyphs: [Character: [UInt8]] = [
        "a": [2, 5, 7, 5, 5], "b": [6, 5, 6, 5, 6], "c": [3, 4, 4, 4, 3], "d": [6, 5, 5, 5, 6], "e": [7, 4, 6, 4, 7],
        "f": [7, 4, 6, 4, 4], "g": [3, 4, 5, 5, 3], "h": [5, 5, 7, 5, 5], "i": [7, 2, 2, 2, 7], "j": [1, 1, 1, 5, 2],
        "k": [5, 5, 6, 5, 5], "l": [4, 4, 4, 4, 7], "m": [5, 7, 7, 5, 5], "n": [6, 5, 5, 5, 5], "o": [2, 5, 5, 5, 2],
        "p": [6, 5, 6, 4, 4], "q": [2, 5, 5, 6, 3], "r": [6, 5, 6, 5, 5], "s": [3, 4, 2, 1, 6], "t": [7, 2, 2, 2, 2],
        "u": [5, 5, 5, 5, 7], "v": [5, 5, 5, 5, 2], "w": [5, 5, 7, 7, 5], "x": [5, 5, 2, 5, 5], "y": [5, 5, 2, 2, 2],
        "z": [7, 1, 2, 4, 7], "0": [7, 5, 5, 5, 7], "1": [2, 6, 2, 2, 7], "2": [6, 1, 2, 4, 7], "3": [6, 1, 2, 1, 6],
        "4": [5, 5, 7, 1, 1], "5": [7, 4, 6, 1, 6], "6": [3, 4, 7, 5, 7], "7": [7, 1, 2, 2, 2], "8": [7, 5, 7, 5, 7],
        "9": [7, 5, 7, 1, 6], ".": [0, 0, 0, 0, 2], "-": [0, 0, 7, 0, 0], "_": [0, 0, 0, 0, 7], ":": [0, 2, 0, 2, 0],
        "/": [1, 1, 2, 4, 4], "+": [0, 2, 7, 2, 0], "(": [1, 2, 2, 2, 1], ")": [4, 2, 2, 2, 4],
    ]

    /// Calls `plot(x, y)` for every set pixel of `text` at `scale`.
    static func draw(_ text: String, scale: Int, plot: (Int, Int) -> Void) {
        for (i, ch) in text.lowercased().enumerated() {
            guard let rows = glyphs[ch] else { continue }
            for (ry, bits) in rows.enumerated() {
                for rx in 0..<width where bits & (1 << (width - 1 - rx)) != 0 {
                    for dy in 0..<scale {
                        for dx in 0..<scale { plot((i * (width + 1) + rx) * scale + dx, ry * scale + dy) }
                    }
                }
            }
        }
    }
}
