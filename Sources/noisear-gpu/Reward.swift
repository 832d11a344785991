import ArgumentParser
import Foundation
import NoiseARGPU

struct RewardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reward",
        abstract: "Score how faithfully a shapes-world image follows a prompt.",
        discussion: paragraphs("""
            Prints the fraction of the prompt's facts that hold and each fact: per object its colour
            ("a red object is present") and its shape bound to that colour ("the red object is a
            circle"), for two objects the relation, and the object count. Images are 8-bit PNGs,
            32x32 (larger images are scored with thresholds scaled to their size).

            Prompts: "a red circle", "a blue square to the left of a yellow triangle"; relations
            "to the left of", "to the right of", "above", "below"; colours red, green, blue, yellow;
            shapes circle, square, triangle.
            """))

    @Option(help: "The image (PNG).")
    var image: String

    @Option(help: "The prompt, e.g. \"a red circle above a blue square\".")
    var prompt: String

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let facts = try PromptFacts.parse(prompt)
            let png = try PNGImage.read(from: URL(fileURLWithPath: image))
            let result = try Reward.evaluate(image: png.pixels, width: png.width, height: png.height, facts: facts)
            if json {
                try printJSON(result)
                return
            }
            print(String(format: "reward %.3f", result.score)
                + " (\(result.satisfied) of \(result.total) facts) for \"\(result.prompt)\"")
            for f in result.facts {
                print("  \(f.holds ? "[x]" : "[ ]") \(f.kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(f.description): \(f.found)")
            }
            if !result.detected.isEmpty {
                print("  detected: " + result.detected.map { "\($0.label) (\($0.area) px)" }.joined(separator: ", "))
            }
        }
    }
}

struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Render a ground-truth shapes-world image (32x32 PNG) for a prompt.",
        discussion: paragraphs("""
            Sizes and positions are drawn from --seed; the prompt's facts hold. Without --prompt a
            random scene (prompt included) is drawn from the seed. The PNG carries text chunks
            prompt, seed and source. --scale enlarges the image by pixel repetition for viewing.
            """))

    @Option(help: "The prompt, e.g. \"a red circle above a blue square\" (default: a random scene).")
    var prompt: String?

    @Option(help: "Seed for sizes and positions.")
    var seed: UInt64 = 0

    @Option(help: "Output PNG path.")
    var out: String

    @Option(help: "Enlarge by this integer factor (1-32).")
    var scale: Int = 1

    func validate() throws {
        if !(1...32).contains(scale) { throw CLIError("--scale must be 1...32") }
        try OutputFile.checkWritable(URL(fileURLWithPath: out), extensions: ["png"])
    }

    func run() throws {
        try runReportingErrors {
            let scene = try prompt.map { try Scene.sample(prompt: $0, seed: seed) } ?? Scene.random(seed: seed)
            let n = Scene.size
            let rgb = scene.render()
            var pixels = rgb
            if scale > 1 {
                let m = n * scale
                pixels = [UInt8](repeating: 0, count: m * m * 3)
                for y in 0..<m {
                    for x in 0..<m {
                        let s = ((y / scale) * n + x / scale) * 3, d = (y * m + x) * 3
                        pixels[d] = rgb[s]; pixels[d + 1] = rgb[s + 1]; pixels[d + 2] = rgb[s + 2]
                    }
                }
            }
            let image = PNGImage(
                width: n * scale, height: n * scale, pixels: pixels,
                text: ["prompt": scene.prompt, "seed": String(seed), "source": "noisear-gpu render (shapes world)"])
            try image.write(to: URL(fileURLWithPath: out))
            print("wrote \(out): \"\(scene.prompt)\" (seed \(seed))")
        }
    }
}
