import Foundation
import NoiseARGPU
import Testing

/// The shapes world: scenes, renderer, prompt grammar, tokenizer, reward checker, prompt split.
@Suite struct ShapesWorldTests {
    // MARK: Scenes and renderer

    @Test func rendererIsDeterministic() throws {
        for seed: UInt64 in [0, 1, 42, 12345] {
            let a = Scene.random(seed: seed), b = Scene.random(seed: seed)
            #expect(a == b)
            let pixels = a.render()
            #expect(pixels.count == 32 * 32 * 3)
            #expect(pixels == b.render())
        }
        #expect(Scene.random(seed: 1) != Scene.random(seed: 2))
        // A known scene's pixels: a fixed checksum guards against silent changes of the renderer.
        let scene = try Scene.sample(prompt: "a red circle to the left of a blue square", seed: 7)
        #expect(scene.prompt == "a red circle to the left of a blue square")
        let sum = scene.render().enumerated().reduce(UInt64(0)) { $0 &* 31 &+ UInt64($1.element) &+ UInt64($1.offset) }
        #expect(sum == Self.knownChecksum, "renderer checksum \(sum)")
    }

    private static let knownChecksum: UInt64 = 12_887_257_137_416_266_800

    @Test func rendererPixelsAndTensor() throws {
        let scene = try Scene(objects: [SceneObject(shape: .square, color: .green, size: 10, x: 16, y: 16)])
        let px = scene.render()
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(px[((y * 32 + x) * 3)..<((y * 32 + x) * 3 + 3)]) }
        let g = ShapeColor.green.rgb, bg = Scene.background
        #expect(pixel(16, 16) == [g.red, g.green, g.blue])
        #expect(pixel(11, 11) == [g.red, g.green, g.blue])  // square covers [11, 21)
        #expect(pixel(10, 16) == [bg.red, bg.green, bg.blue])
        #expect(pixel(0, 0) == [bg.red, bg.green, bg.blue])

        let t = scene.renderTensor()
        #expect(t.shape == [3, 32, 32])
        #expect(t.data.allSatisfy { $0 >= -1 && $0 <= 1 })
        let center = 16 * 32 + 16
        let red: Float = Float(g.red) / 127.5 - 1, green: Float = Float(g.green) / 127.5 - 1
        #expect(t.data[center] == red)
        #expect(t.data[1024 + center] == green)
        #expect(try Scene.rgb(tensor: t) == px)
        #expect(throws: NoiseError.self) { try Scene.rgb(tensor: HostTensor(shape: [32, 32], data: [])) }
        #expect(throws: NoiseError.self) { try Scene(objects: []) }
        #expect(throws: NoiseError.self) {
            try Scene(objects: [SceneObject(shape: .square, color: .green, size: 10, x: 16, y: 16)], relation: .above)
        }
    }

    /// Sampled scenes keep objects inside the image with the documented sizes; pairs never
    /// overlap and their relation is the dominant direction.
    @Test func sampledScenesHoldTheirFacts() {
        for seed in UInt64(0)..<500 {
            let s = Scene.random(seed: seed)
            for o in s.objects {
                #expect(Scene.objectSizes.contains(o.size))
                #expect(o.x - o.size / 2 >= 1 - 1e-9 && o.x + o.size / 2 <= 31 + 1e-9)
                #expect(o.y - o.size / 2 >= 1 - 1e-9 && o.y + o.size / 2 <= 31 + 1e-9)
            }
            guard let r = s.relation else { continue }
            let a = s.objects[0], b = s.objects[1]
            let (along, across, gap): (Double, Double, Double)
            switch r {
            case .leftOf: (along, across) = (b.x - a.x, b.y - a.y)
            case .rightOf: (along, across) = (a.x - b.x, b.y - a.y)
            case .above: (along, across) = (b.y - a.y, b.x - a.x)
            case .below: (along, across) = (a.y - b.y, b.x - a.x)
            }
            gap = along - (a.size + b.size) / 2
            #expect(gap >= Scene.minimumGap - 1e-9, "seed \(seed): gap \(gap)")
            #expect(abs(across) <= along / 2 + 1e-9, "seed \(seed)")
        }
    }

    // MARK: Grammar

    @Test func everyPromptRoundTrips() throws {
        #expect(PromptFacts.all.count == 540)
        #expect(Set(PromptFacts.all).count == 540)
        #expect(Set(PromptFacts.all.map(\.prompt)).count == 540)
        for (i, facts) in PromptFacts.all.enumerated() {
            #expect(try PromptFacts.parse(facts.prompt) == facts)
            let scene = Scene.sample(facts, seed: UInt64(i))
            #expect(scene.facts == facts)
            #expect(try PromptFacts.parse(scene.prompt) == facts)
            let tokens = PromptTokenizer.tokenize(facts.prompt)
            #expect(tokens.count == PromptTokenizer.length)
            #expect(!tokens.contains(PromptTokenizer.unknownID))
            #expect(PromptTokenizer.decode(tokens) == facts.prompt)
        }
        // Random scenes go through the same round trip.
        for seed in UInt64(0)..<50 {
            let s = Scene.random(seed: seed)
            #expect(try PromptFacts.parse(s.prompt) == s.facts)
        }
    }

    @Test func parserAcceptsVariants() throws {
        let facts = try PromptFacts(PromptObject(color: .blue, shape: .square), .leftOf,
                                    PromptObject(color: .yellow, shape: .triangle))
        #expect(facts.prompt == "a blue square to the left of a yellow triangle")
        for text in ["a blue square to the left of a yellow triangle", "  A Blue  Square to the LEFT of a yellow triangle.",
                     "a blue square left of a yellow triangle", "an blue square to the left of an yellow triangle"] {
            #expect(try PromptFacts.parse(text) == facts)
        }
        #expect(try PromptFacts.parse("a red circle") == PromptFacts(PromptObject(color: .red, shape: .circle)))
        #expect(try PromptFacts.parse("a green triangle below a green circle").relation == .below)
        #expect(try PromptFacts.parse("a green triangle above a red triangle").relation == .above)
        #expect(try PromptFacts.parse("a green triangle to the right of a red triangle").relation == .rightOf)
        #expect(facts.mirrored.prompt == "a yellow triangle to the right of a blue square")
    }

    @Test(arguments: [
        ("", "empty prompt"),
        ("   ", "empty prompt"),
        ("a purple circle", "unknown word 'purple'"),
        ("a red circle next to a blue square", "unknown word 'next'"),
        ("red circle", "expected 'a'"),
        ("a red", "expected a shape"),
        ("a circle", "expected a colour"),
        ("a red circle a blue square", "expected 'to the left of'"),
        ("a red circle to left of a blue square", "expected 'the'"),
        ("a red circle to the of a blue square", "expected 'left' or 'right'"),
        ("a red circle to the left a blue square", "expected 'of'"),
        ("a red circle above", "expected 'a'"),
        ("a red circle above a blue square below a red square", "unexpected 'below a red square'"),
        ("a red circle above a red circle", "names the same object twice"),
    ])
    func parserErrors(_ text: String, _ expected: String) {
        do {
            let f = try PromptFacts.parse(text)
            Issue.record("parsed \"\(text)\" as \(f)")
        } catch let NoiseError.invalidArgument(message) {
            #expect(message.contains(expected), "\(message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func tokenizer() {
        #expect(PromptTokenizer.vocabulary.count == 18)
        #expect(PromptTokenizer.vocabulary[PromptTokenizer.padID] == "<pad>")
        #expect(PromptTokenizer.vocabulary[PromptTokenizer.unknownID] == "<unk>")
        let t = PromptTokenizer.tokenize("a red circle")
        #expect(t == [2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(PromptTokenizer.tokenize("A purple circle!") == [2, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(PromptTokenizer.tokenize("") == [Int](repeating: 0, count: 12))
        #expect(PromptTokenizer.tokenize("a red circle above a blue square", length: 4) == [2, 4, 8, 16])
        let longest = PromptFacts.all.map { $0.prompt.split(separator: " ").count }.max()
        #expect(longest == 10)
    }

    // MARK: Reward

    @Test func rewardOnGroundTruthAndWrongPrompts() throws {
        var truth: [Double] = [], wrongColor: [Double] = [], wrongShape: [Double] = [], swapped: [Double] = []
        var crossed: [Double] = [], degraded: [Double] = []
        var exact = (color: 0, shape: 0, swapped: 0, crossed: 0)
        for seed in UInt64(0)..<300 {
            let scene = Scene.random(seed: seed)
            let image = scene.render()
            let r = try Reward.evaluate(image: image, prompt: scene.prompt)
            truth.append(r.score)
            if r.score < 1 { print("ground truth below 1: seed \(seed) \(scene.prompt): \(r.facts.filter { !$0.holds })") }
            let facts = scene.facts
            let k = Int(seed % UInt64(facts.objects.count))
            var colorChanged = facts.objects, shapeChanged = facts.objects
            colorChanged[k].color = ShapeColor.allCases[(ShapeColor.allCases.firstIndex(of: colorChanged[k].color)! + 1 + Int(seed / 2) % 3) % 4]
            shapeChanged[k].shape = ShapeKind.allCases[(ShapeKind.allCases.firstIndex(of: shapeChanged[k].shape)! + 1 + Int(seed / 2) % 2) % 3]
            for (objects, bucket) in [(colorChanged, 0), (shapeChanged, 1)] {
                if objects.count == 2 && objects[0] == objects[1] { continue }
                let p = try prompt(objects, facts.relation)
                let w = try Reward.evaluate(image: image, prompt: p).score
                if bucket == 0 { wrongColor.append(w); exact.color += w == 1 ? 1 : 0 }
                else { wrongShape.append(w); exact.shape += w == 1 ? 1 : 0 }
            }
            if let rel = facts.relation {
                let s = try Reward.evaluate(image: image, prompt: prompt(facts.objects, rel.inverse)).score
                swapped.append(s)
                exact.swapped += s == 1 ? 1 : 0
                let perpendicular: Relation = rel.isHorizontal ? (seed % 2 == 0 ? .above : .below) : (seed % 2 == 0 ? .leftOf : .rightOf)
                let c = try Reward.evaluate(image: image, prompt: prompt(facts.objects, perpendicular)).score
                crossed.append(c)
                exact.crossed += c == 1 ? 1 : 0
            }
            degraded.append(try Reward.evaluate(image: degrade(image, seed: seed), prompt: scene.prompt).score)
        }
        func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(v.count) }
        print(String(format: "reward: ground truth %.4f (n=%d), degraded ground truth %.4f, wrong colour %.4f (n=%d), "
                         + "wrong shape %.4f (n=%d), swapped relation %.4f (n=%d), perpendicular relation %.4f",
                     mean(truth), truth.count, mean(degraded), mean(wrongColor), wrongColor.count, mean(wrongShape),
                     wrongShape.count, mean(swapped), swapped.count, mean(crossed)))
        print("reward: wrong prompts scoring 1.0: colour \(exact.color), shape \(exact.shape), swapped \(exact.swapped), perpendicular \(exact.crossed)")
        #expect(mean(truth) >= 0.98)
        #expect(mean(degraded) >= 0.95)
        #expect(mean(wrongColor) <= 0.7)
        #expect(mean(wrongShape) <= 0.85)
        #expect(mean(swapped) <= 0.85)
        #expect(mean(crossed) <= 0.85)
        #expect(exact.color == 0 && exact.shape == 0 && exact.swapped == 0 && exact.crossed == 0)
    }

    @Test func rewardBreakdown() throws {
        let scene = try Scene.sample(prompt: "a red circle above a blue square", seed: 3)
        let image = scene.render()
        let r = try Reward.evaluate(image: image, prompt: "a red circle above a blue square")
        #expect(r.score == 1 && r.allHold && r.total == 6)
        #expect(r.facts.map(\.kind) == [.color, .shape, .color, .shape, .relation, .count])
        #expect(r.detected.count == 2)
        #expect(Set(r.detected.map(\.label)) == ["red circle", "blue square"])

        let w = try Reward.evaluate(image: image, prompt: "a red triangle below a blue square")
        #expect(w.satisfied == 4 && w.total == 6)
        #expect(w.facts.filter { !$0.holds }.map(\.kind) == [.shape, .relation])

        let single = try Reward.evaluate(image: image, prompt: "a red circle")
        #expect(single.total == 3 && single.satisfied == 2)  // an extra object: the count fails
        #expect(single.facts.last?.kind == .count && single.facts.last?.holds == false)

        let missing = try Reward.evaluate(image: image, prompt: "a green circle to the left of a blue square")
        #expect(missing.facts.map(\.holds) == [false, false, true, true, false, true])

        // Blank image: only nothing holds.
        let bg = Scene.background
        let blank = [UInt8]((0..<1024).flatMap { _ in [bg.red, bg.green, bg.blue] })
        #expect(try Reward.evaluate(image: blank, prompt: "a red circle").score == 0)

        // The tensor entry point agrees.
        #expect(try Reward.evaluate(tensor: scene.renderTensor(), prompt: scene.prompt).score == 1)

        #expect(throws: NoiseError.self) { try Reward.evaluate(image: image, prompt: "a pink circle") }
        #expect(throws: NoiseError.self) { try Reward.evaluate(image: [1, 2, 3], prompt: "a red circle") }
    }

    /// Robust to small specks: isolated pixels of palette colours do not count as objects.
    @Test func rewardIgnoresSpecks() throws {
        let scene = try Scene.sample(prompt: "a yellow triangle to the right of a green square", seed: 11)
        var image = scene.render()
        var rng = UInt64(99)
        for i in 0..<12 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            let p = Int((rng >> 33) % 1024)
            let c = ShapeColor.allCases[i % 4].rgb
            image[p * 3] = c.red; image[p * 3 + 1] = c.green; image[p * 3 + 2] = c.blue
        }
        #expect(try Reward.evaluate(image: image, prompt: scene.prompt).score == 1)
    }

    // MARK: Split

    @Test func promptSplit() throws {
        let train = PromptSplit.train, held = PromptSplit.heldOut
        #expect(PromptSplit.all.count == 540)
        #expect(train.count == 448)
        #expect(held.count == 92)
        #expect(Set(train).isDisjoint(with: held))
        #expect(Set(train).union(held) == Set(PromptSplit.all))
        #expect(Set(train).count == train.count && Set(held).count == held.count)
        let singles = held.filter { try! PromptFacts.parse($0).relation == nil }
        #expect(singles.count == 2)
        // Mirrored wordings fall on the same side.
        for p in held { #expect(held.contains(try PromptFacts.parse(p).mirrored.prompt)) }
        // Stability: known members.
        print("split: train \(train.count), held out \(held.count); held-out singles \(singles); first held-out pairs \(held.filter { !singles.contains($0) }.prefix(3))")
        for p in Self.knownHeldOut { #expect(held.contains(p), "\(p)") }
        for p in Self.knownTrain { #expect(train.contains(p), "\(p)") }
        if let first = Self.knownHeldOut.first { #expect(try PromptSplit.isHeldOut(first.uppercased())) }
    }

    // MARK: CLI

    @Test func renderAndRewardCommands() throws {
        guard cliPath() != nil else { return }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-shapes-cli-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let png = dir.appendingPathComponent("scene.png").path
        let prompt = "a red circle above a blue square"

        let render = try runShapesCLI(["render", "--prompt", prompt, "--seed", "3", "--out", png])
        #expect(render.status == 0, "\(render.stderr)")
        let image = try PNGImage.read(from: URL(fileURLWithPath: png))
        #expect(image.width == 32 && image.height == 32)
        #expect(image.text["prompt"] == prompt && image.text["seed"] == "3")
        #expect(image.pixels == (try Scene.sample(prompt: prompt, seed: 3)).render())

        let reward = try runShapesCLI(["reward", "--image", png, "--prompt", prompt])
        #expect(reward.status == 0, "\(reward.stderr)")
        #expect(reward.stdout.hasPrefix("reward 1.000 (6 of 6 facts)"), "\(reward.stdout)")
        let wrong = try runShapesCLI(["reward", "--image", png, "--prompt", "a red circle below a blue square", "--json"])
        #expect(wrong.status == 0, "\(wrong.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(wrong.stdout.utf8)) as? [String: Any]
        #expect((json?["score"] as? Double).map { abs($0 - 5.0 / 6.0) < 1e-9 } == true, "\(wrong.stdout)")
        #expect((json?["facts"] as? [Any])?.count == 6)

        // Enlarged renders score the same.
        let big = dir.appendingPathComponent("big.png").path
        #expect(try runShapesCLI(["render", "--prompt", prompt, "--seed", "3", "--out", big, "--scale", "4"]).status == 0)
        #expect(try runShapesCLI(["reward", "--image", big, "--prompt", prompt]).stdout.hasPrefix("reward 1.000"))

        for (args, fragment) in [
            (["reward", "--image", png, "--prompt", "a purple circle"], "unknown word 'purple'"),
            (["reward", "--image", dir.appendingPathComponent("missing.png").path, "--prompt", prompt], "no such file"),
            (["render", "--prompt", "a red", "--out", png], "expected a shape"),
            (["render", "--prompt", prompt, "--out", "/nonexistent-\(getpid())/x.png"], "cannot write"),
        ] {
            let r = try runShapesCLI(args)
            #expect(r.status != 0)
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && r.stderr.contains(fragment), "\(r.stderr)")
        }
    }

    private static let knownHeldOut = [
        "a red square", "a blue square", "a red circle to the left of a green square",
        "a green square to the right of a red circle", "a yellow triangle below a blue triangle",
        "a blue triangle above a yellow triangle",
    ]
    private static let knownTrain = [
        "a red circle", "a green triangle", "a yellow circle", "a red circle to the left of a blue circle",
        "a blue circle to the right of a red circle", "a blue square above a yellow triangle",
    ]
}

private func prompt(_ objects: [PromptObject], _ relation: Relation?) throws -> String {
    if let relation { return try PromptFacts(objects[0], relation, objects[1]).prompt }
    return PromptFacts(objects[0]).prompt
}

/// A diffusion model's imperfections, roughly: a 3x3 blur, a global colour shift of up to 20 per
/// channel, per-pixel noise of up to 12 and a few specks of palette colours.
private func degrade(_ image: [UInt8], seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    func next(_ n: Int) -> Int {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Int(state % UInt64(n))
    }
    let shift = (0..<3).map { _ in next(41) - 20 }
    var out = [UInt8](repeating: 0, count: image.count)
    for y in 0..<32 {
        for x in 0..<32 {
            for c in 0..<3 {
                var sum = 0, weight = 0
                for dy in -1...1 {
                    for dx in -1...1 {
                        let yy = y + dy, xx = x + dx
                        guard (0..<32).contains(yy), (0..<32).contains(xx) else { continue }
                        let wgt = (dx == 0 ? 2 : 1) * (dy == 0 ? 2 : 1)
                        sum += wgt * Int(image[(yy * 32 + xx) * 3 + c])
                        weight += wgt
                    }
                }
                let v = sum / weight + shift[c] + next(25) - 12
                out[(y * 32 + x) * 3 + c] = UInt8(min(max(v, 0), 255))
            }
        }
    }
    for i in 0..<4 {
        let p = next(1024), col = ShapeColor.allCases[i].rgb
        out[p * 3] = col.red; out[p * 3 + 1] = col.green; out[p * 3 + 2] = col.blue
    }
    return out
}

/// The CLI through the shared runner (CLITests.swift); fails if the executable vanished.
private func runShapesCLI(_ args: [String]) throws -> CLIResult {
    guard let r = try runCLI(args) else { throw NoiseError.io("noisear-gpu executable not found") }
    return r
}
