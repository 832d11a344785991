import Foundation
import NoiseARCore
import NoiseARModels

/// Datasets of initial noises that led to good images, for training the priors.
///
/// A shard file (`*.safetensors`) holds `noise` [K, 3, 32, 32] (the standard-normal start),
/// `prompt_embeds` [K, T, D] (the diffusion model's conditional text states), `score` [K] (the
/// reward of the image sampled from that noise) and, in the metadata, `prompts` and `seeds`
/// (JSON lists) and the sampling settings.
public struct NoiseDataset {
    public var noise: HostTensor
    public var promptEmbeds: HostTensor
    public var scores: [Float]
    public var prompts: [String]
    public var seeds: [UInt64]
    /// Re-denoise pairs: the improved noise x'_T for each start (`target`) and its image's score.
    public var target: HostTensor?
    public var targetScores: [Float]?

    public var count: Int { prompts.count }

    public init(noise: HostTensor, promptEmbeds: HostTensor, scores: [Float], prompts: [String], seeds: [UInt64]) {
        self.noise = noise
        self.promptEmbeds = promptEmbeds
        self.scores = scores
        self.prompts = prompts
        self.seeds = seeds
    }

    /// The shard as a safetensors file (extra metadata merged in).
    public func file(metadata: [String: String] = [:]) throws -> SafeTensorsFile {
        let enc = JSONEncoder()
        var meta = metadata
        meta["kind"] = "noise-dataset"
        meta["prompts"] = String(decoding: try enc.encode(prompts), as: UTF8.self)
        meta["seeds"] = String(decoding: try enc.encode(seeds), as: UTF8.self)
        var tensors = ["noise": noise, "prompt_embeds": promptEmbeds, "score": HostTensor(shape: [scores.count], data: scores)]
        if let target, let targetScores {
            tensors["target"] = target
            tensors["target_score"] = HostTensor(shape: [targetScores.count], data: targetScores)
        }
        return SafeTensorsFile(tensors: tensors, metadata: meta)
    }

    /// One shard file.
    public static func read(_ url: URL) throws -> NoiseDataset {
        let f = try SafeTensorsFile.read(url)
        let noise = try f.tensor("noise"), embeds = try f.tensor("prompt_embeds"), score = try f.tensor("score")
        guard let pj = f.metadata["prompts"], let prompts = try? JSONDecoder().decode([String].self, from: Data(pj.utf8)) else {
            throw NoiseError.invalidArgument("\(url.path): no `prompts` metadata: not a noise dataset shard")
        }
        let seeds = f.metadata["seeds"].flatMap { try? JSONDecoder().decode([UInt64].self, from: Data($0.utf8)) }
            ?? [UInt64](repeating: 0, count: prompts.count)
        let k = prompts.count
        try requireShape(noise.shape.first == k && embeds.shape.first == k && score.shape == [k] && seeds.count == k,
                         "\(url.path): inconsistent shard (\(k) prompts, noise \(noise.shape), prompt_embeds \(embeds.shape), score \(score.shape))")
        var ds = NoiseDataset(noise: noise, promptEmbeds: embeds, scores: score.data, prompts: prompts, seeds: seeds)
        if let t = f["target"], let ts = f["target_score"] {
            try requireShape(t.shape == noise.shape && ts.shape == [k], "\(url.path): target \(t.shape) does not match noise \(noise.shape)")
            ds.target = t
            ds.targetScores = ts.data
        }
        return ds
    }

    /// Every `*.safetensors` shard under a folder (or one file), concatenated in name order.
    public static func load(_ url: URL) throws -> NoiseDataset {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw NoiseError.io("\(url.path): no such file or folder")
        }
        guard isDir.boolValue else { return try read(url) }
        let all = try FileManager.default.contentsOfDirectory(atPath: url.path)
        let names = all.filter { $0.hasSuffix(".safetensors") }.sorted()
        guard !names.isEmpty else { throw NoiseError.io("\(url.path): no .safetensors shards") }
        try checkShardSet(url, names: all)
        var parts = try names.map { try read(url.appendingPathComponent($0)) }.filter { $0.count > 0 }
        guard var all = parts.first else { throw NoiseError.io("\(url.path): the shards hold no samples") }
        parts.removeFirst()
        for p in parts { try all.append(p) }
        return all
    }

    /// A folder of `collect` output must hold one complete set of shards: files of a single
    /// `--shard i/n` count n, every i from 0 to n - 1, each shard finished (its progress file's
    /// blocks all done). Anything else is refused, naming what is missing or mixed, so a training
    /// run never starts on part of the data by accident.
    static func checkShardSet(_ folder: URL, names: [String]) throws {
        var counts: [Int: Set<Int>] = [:]   // n -> shard indices seen
        var progress: [(Int, Int, String)] = []
        for name in names {
            let parts = name.split(separator: "-")
            guard parts.count >= 4, parts[0] == "shard", let i = Int(parts[1]), parts[2] == "of" else { continue }
            let nText = parts[3].split(separator: ".").first.map(String.init) ?? ""
            guard let n = Int(nText), n >= 1, i >= 0, i < n else { continue }
            counts[n, default: []].insert(i)
            if name.hasSuffix(".progress.json") { progress.append((i, n, name)) }
        }
        guard !counts.isEmpty else { return }  // not a sharded collection
        guard counts.count == 1, let (n, seen) = counts.first else {
            let kinds = counts.keys.sorted().map { "\(counts[$0]?.count ?? 0) file set(s) of \($0) shards" }
            throw NoiseError.invalidArgument("\(folder.path) mixes collections split differently (\(kinds.joined(separator: ", "))): keep one --shard i/n set per folder")
        }
        let missing = (0 ..< n).filter { !seen.contains($0) }
        guard missing.isEmpty else {
            throw NoiseError.invalidArgument("\(folder.path) is incomplete: shard\(missing.count == 1 ? "" : "s") \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")) of \(n) missing (copy every machine's output here, or pass the shards present as files)")
        }
        for (i, n, name) in progress {
            guard let data = try? InputFile.contents(of: folder.appendingPathComponent(name)),
                  let p = try? JSONDecoder().decode(CollectionJob.Progress.self, from: data), let total = p.totalBlocks else { continue }
            guard Set(p.finishedBlocks).count >= total else {
                throw NoiseError.invalidArgument("\(folder.path) is incomplete: shard \(i)/\(n) finished \(Set(p.finishedBlocks).count) of \(total) blocks (run its collect again with --resume)")
            }
        }
    }

    /// Several collections (folders or shards) as one dataset, in the order given: e.g. a run and
    /// its extension with another `--seed`. A start (prompt, seed) found in two of them is refused:
    /// the same collection given twice would count its pairs twice.
    public static func load(_ urls: [URL]) throws -> NoiseDataset {
        var all: NoiseDataset?
        var origin: [String: String] = [:]   // "seed NUL prompt" -> the collection holding it
        for url in urls {
            let part = try load(url)
            if urls.count > 1 {
                let keys = (0..<part.count).map { "\(part.seeds[$0])\u{0}\(part.prompts[$0])" }
                for (i, k) in keys.enumerated() {
                    if let other = origin[k] {
                        throw NoiseError.invalidArgument(
                            "\(other) and \(url.path) both hold the start of \"\(part.prompts[i])\" with seed \(part.seeds[i]): the same collection twice, or runs with overlapping --seed ranges")
                    }
                }
                for k in keys { origin[k] = url.path }
            }
            if all == nil { all = part } else { try all?.append(part) }
        }
        guard let all else { throw NoiseError.invalidArgument("no dataset given") }
        return all
    }

    public mutating func append(_ other: NoiseDataset) throws {
        try requireShape(Array(other.noise.shape.dropFirst()) == Array(noise.shape.dropFirst())
                            && Array(other.promptEmbeds.shape.dropFirst()) == Array(promptEmbeds.shape.dropFirst()),
                         "shards with different shapes: noise \(noise.shape) vs \(other.noise.shape)")
        noise.data += other.noise.data
        noise.shape[0] += other.count
        promptEmbeds.data += other.promptEmbeds.data
        promptEmbeds.shape[0] += other.count
        try requireShape((target == nil) == (other.target == nil), "shards with and without re-denoise targets")
        if var t = target, let o = other.target {
            t.data += o.data
            t.shape[0] += other.count
            target = t
            targetScores = (targetScores ?? []) + (other.targetScores ?? [])
        }
        scores += other.scores
        prompts += other.prompts
        seeds += other.seeds
    }

    /// Items `indices` as a new dataset.
    public func subset(_ indices: [Int]) -> NoiseDataset {
        func rows(_ t: HostTensor) -> HostTensor {
            let per = t.data.count / max(t.shape[0], 1)
            var d: [Float] = []
            d.reserveCapacity(per * indices.count)
            for i in indices { d += t.data[i * per..<(i + 1) * per] }
            return HostTensor(shape: [indices.count] + t.shape.dropFirst(), data: d)
        }
        var out = NoiseDataset(noise: rows(noise), promptEmbeds: rows(promptEmbeds), scores: indices.map { scores[$0] },
                               prompts: indices.map { prompts[$0] }, seeds: indices.map { seeds[$0] })
        if let target, let targetScores {
            out.target = rows(target)
            out.targetScores = indices.map { targetScores[$0] }
        }
        return out
    }
}

/// Best-of-N rejection: for each prompt, N Gaussian starts are sampled with the diffusion
/// model and scored with the exact reward; the starts whose images reach the threshold
/// (default: every fact right) are kept.
public enum NoiseCollection {
    /// The prompts of shard `index` of `count` (every count-th prompt), with their positions.
    public static func shard(_ prompts: [String], index: Int, of count: Int) throws -> [(Int, String)] {
        try require(count >= 1 && index >= 0 && index < count, "shard \(index)/\(count): expected 0 <= i < n")
        return prompts.enumerated().filter { $0.offset % count == index }.map { ($0.offset, $0.element) }
    }

    /// Candidate seed c of the prompt at position p: consecutive per prompt, disjoint across prompts.
    public static func seed(base: UInt64, prompt p: Int, candidate c: Int, candidates n: Int) -> UInt64 {
        base &+ UInt64(p * n + c)
    }

    /// Samples `candidates` starts for each prompt and keeps those scoring >= `threshold`.
    /// Returns the kept items and the number of samples drawn.
    public static func bestOfN(model: TextToImageModel, prompts: [(Int, String)], candidates: Int, baseSeed: UInt64,
                               settings: SamplingSettings, batch: Int, threshold: Double = 1,
                               progress: (Int) -> Void = { _ in }) throws -> (NoiseDataset, Int) {
        try require(candidates >= 1, "candidates must be at least 1")
        let jobs = prompts.flatMap { p in (0..<candidates).map { (p.1, seed(base: baseSeed, prompt: p.0, candidate: $0, candidates: candidates)) } }
        let dev = model.device
        var keptNoise: [Float] = [], keptEmbeds: [Float] = [], scores: [Float] = [], keptPrompts: [String] = [], keptSeeds: [UInt64] = []
        var embedShape: [Int] = []
        var start = 0
        while start < jobs.count {
            let chunk = Array(jobs[start..<min(start + batch, jobs.count)])
            let ps = chunk.map(\.0), ss = chunk.map(\.1)
            let noise = try Evaluation.gaussian(on: dev)(ps, ss)
            let images = try DiffusionSampler.sample(model: model, prompts: ps, noise: noise, seed: ss[0], settings: settings)
            let rgbs = try DiffusionSampler.rgb(images)
            let embeds = try dev.noGrad { try model.encode(ps) }
            embedShape = Array(embeds.shape.dropFirst())
            let nv = try noise.toArray(), ev = try embeds.toArray()
            let perN = nv.count / chunk.count, perE = ev.count / chunk.count
            for (i, rgb) in rgbs.enumerated() {
                let r = try Reward.evaluate(image: rgb, prompt: ps[i])
                guard r.score >= threshold else { continue }
                keptNoise += nv[i * perN..<(i + 1) * perN]
                keptEmbeds += ev[i * perE..<(i + 1) * perE]
                scores.append(Float(r.score))
                keptPrompts.append(ps[i])
                keptSeeds.append(ss[i])
            }
            start += chunk.count
            progress(start)
        }
        let k = keptPrompts.count
        if embedShape.isEmpty { embedShape = [model.config.text.maxLength, model.config.text.hiddenSize] }
        let ds = NoiseDataset(noise: HostTensor(shape: [k, 3, Scene.size, Scene.size], data: keptNoise),
                              promptEmbeds: HostTensor(shape: [k] + embedShape, data: keptEmbeds),
                              scores: scores, prompts: keptPrompts, seeds: keptSeeds)
        return (ds, jobs.count)
    }
}

/// NPNet's "re-denoise sampling": x_T -> one DDIM step with strong guidance -> one DDIM inversion
/// step with weak guidance -> x'_T, a start whose image tends to follow the prompt better.
public enum Redenoise {
    /// x'_T for standard-normal starts `noise` [B, 3, 32, 32]: one DDIM step t_0 -> t_1 of a
    /// `steps`-step schedule at guidance `highCFG`, then one DDIM inversion step back to t_0 at
    /// `lowCFG` (the model evaluated at t_0 on x_{t_1}, as diffusers' inversion loops do).
    public static func step(model: TextToImageModel, noise: Tensor, prompts: [String], steps: Int = 50,
                            highCFG: Double = 5.5, lowCFG: Double = 1.0) throws -> Tensor {
        try require(highCFG > lowCFG, "re-denoise needs the first guidance above the second (got \(highCFG) and \(lowCFG))")
        let config = try model.config.schedulerConfig()
        var ddim = try DDIMScheduler(config: config, steps: steps)
        var inverse = try DDIMInverseScheduler(config: config, steps: steps)
        return try model.device.noGrad {
            let t0 = ddim.timesteps[0]
            let high = try DiffusionSampler.guidanceContext(model: model, prompts: prompts, cfg: highCFG)
            let low = try DiffusionSampler.guidanceContext(model: model, prompts: prompts, cfg: lowCFG)
            let out0 = try DiffusionSampler.guidedPrediction(model: model, noise, t: t0, context: high, cfg: highCFG)
            let x1 = try ddim.step(modelOutput: out0, stepIndex: 0, sample: noise, noise: nil)
            let last = inverse.timesteps.count - 1
            let out1 = try DiffusionSampler.guidedPrediction(model: model, x1, t: inverse.timesteps[last], context: low, cfg: lowCFG)
            return try inverse.step(modelOutput: out1, stepIndex: last, sample: x1, noise: nil)
        }
    }
}

extension NoiseCollection {
    /// Re-denoise collection: for each prompt and candidate seed, x_T and x'_T are both sampled and
    /// scored; the pair is kept when x'_T scores strictly higher (or always with `keepAll`).
    public static func redenoise(model: TextToImageModel, prompts: [(Int, String)], candidates: Int, baseSeed: UInt64,
                                 settings: SamplingSettings, batch: Int, highCFG: Double = 5.5, lowCFG: Double = 1.0,
                                 inversionSteps: Int = 50, keepAll: Bool = false,
                                 progress: (Int) -> Void = { _ in }) throws -> (NoiseDataset, Int) {
        try require(candidates >= 1, "candidates must be at least 1")
        let jobs = prompts.flatMap { p in (0..<candidates).map { (p.1, seed(base: baseSeed, prompt: p.0, candidate: $0, candidates: candidates)) } }
        let dev = model.device
        var noiseV: [Float] = [], targetV: [Float] = [], embedV: [Float] = [], scores: [Float] = [], targetScores: [Float] = []
        var kept: [(String, UInt64)] = []
        var start = 0
        while start < jobs.count {
            let chunk = Array(jobs[start..<min(start + batch, jobs.count)])
            let ps = chunk.map(\.0), ss = chunk.map(\.1)
            let x = try Evaluation.gaussian(on: dev)(ps, ss)
            let xr = try Redenoise.step(model: model, noise: x, prompts: ps, steps: inversionSteps, highCFG: highCFG, lowCFG: lowCFG)
            let both = try DiffusionSampler.sample(model: model, prompts: ps + ps, noise: Tensor.concat([x, xr], axis: 0),
                                                   seed: ss[0], settings: settings)
            let rgbs = try DiffusionSampler.rgb(both)
            let embeds = try dev.noGrad { try model.encode(ps) }
            let nv = try x.toArray(), tv = try xr.toArray(), ev = try embeds.toArray()
            let perN = nv.count / chunk.count, perE = ev.count / chunk.count
            for i in 0..<chunk.count {
                let a = try Reward.evaluate(image: rgbs[i], prompt: ps[i]).score
                let b = try Reward.evaluate(image: rgbs[chunk.count + i], prompt: ps[i]).score
                guard keepAll || b > a else { continue }
                noiseV += nv[i * perN..<(i + 1) * perN]
                targetV += tv[i * perN..<(i + 1) * perN]
                embedV += ev[i * perE..<(i + 1) * perE]
                scores.append(Float(a))
                targetScores.append(Float(b))
                kept.append((ps[i], ss[i]))
            }
            start += chunk.count
            progress(start)
        }
        let k = kept.count, shape = [k, 3, Scene.size, Scene.size]
        var ds = NoiseDataset(noise: HostTensor(shape: shape, data: noiseV),
                              promptEmbeds: HostTensor(shape: [k, model.config.text.maxLength, model.config.text.hiddenSize], data: embedV),
                              scores: scores, prompts: kept.map(\.0), seeds: kept.map(\.1))
        ds.target = HostTensor(shape: shape, data: targetV)
        ds.targetScores = targetScores
        return (ds, jobs.count)
    }
}

extension NoiseCollection {
    /// NPNet targets from a NoiseAR prior: for each prompt and candidate seed, the Gaussian start
    /// x_T (Philox stream of the seed) and the prior's draw at `temperature` from the same
    /// standard normals, x'_T. Nothing is sampled or scored (scores are NaN: not measured); every
    /// pair is kept.
    public static func priorSamples(model: TextToImageModel, prior: NoiseARNet, prompts: [(Int, String)], candidates: Int,
                                    baseSeed: UInt64, temperature: Float, batch: Int,
                                    progress: (Int) -> Void = { _ in }) throws -> (NoiseDataset, Int) {
        try require(candidates >= 1 && batch >= 1, "candidates and batch must be at least 1")
        try requireShape(prior.config.latentShape == [3, Scene.size, Scene.size],
                         "the NoiseAR prior's latent \(prior.config.latentShape) is not the shapes world's [3, \(Scene.size), \(Scene.size)]")
        let jobs = prompts.flatMap { p in (0..<candidates).map { (p.1, seed(base: baseSeed, prompt: p.0, candidate: $0, candidates: candidates)) } }
        let dev = model.device
        var noiseV: [Float] = [], targetV: [Float] = [], embedV: [Float] = []
        var start = 0
        while start < jobs.count {
            let chunk = Array(jobs[start..<min(start + batch, jobs.count)])
            let ps = chunk.map(\.0), ss = chunk.map(\.1)
            let x = try Evaluation.gaussian(on: dev)(ps, ss)
            let embeds = try dev.noGrad { try model.encode(ps) }
            let target = try NoisePriors.noiseAR(prior, text: embeds, seed: ss[0], temperature: temperature, eps: x)
            noiseV += try x.toArray()
            targetV += try target.toArray()
            embedV += try embeds.toArray()
            start += chunk.count
            progress(start)
        }
        let k = jobs.count, shape = [k, 3, Scene.size, Scene.size]
        var ds = NoiseDataset(noise: HostTensor(shape: shape, data: noiseV),
                              promptEmbeds: HostTensor(shape: [k, model.config.text.maxLength, model.config.text.hiddenSize], data: embedV),
                              scores: [Float](repeating: .nan, count: k), prompts: jobs.map(\.0), seeds: jobs.map(\.1))
        ds.target = HostTensor(shape: shape, data: targetV)
        ds.targetScores = [Float](repeating: .nan, count: k)
        return (ds, k)
    }
}
