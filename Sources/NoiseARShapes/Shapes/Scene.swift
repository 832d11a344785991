import Foundation
import NoiseARCore
import NoiseARModels

// The "shapes world": a procedural text-to-image world small enough to train and evaluate a tiny
// text-to-image diffusion model on a CPU. A scene holds one or two objects (a shape in a colour,
// with a size and a position) on a fixed dark-gray background; two objects stand in a clear
// spatial relation. Everything here is deterministic pure Swift: the same seed gives the same
// scene and the same pixels on every platform.

/// The three shapes of the shapes world.
public enum ShapeKind: String, CaseIterable, Sendable, Codable, Hashable {
    case circle, square, triangle
}

/// The four object colours. Each is far from the background and from each other, also along the
/// blend line towards the background (what blur and anti-aliasing produce).
public enum ShapeColor: String, CaseIterable, Sendable, Codable, Hashable {
    case red, green, blue, yellow

    /// The colour's sRGB value.
    public var rgb: (red: UInt8, green: UInt8, blue: UInt8) {
        switch self {
        case .red: return (230, 45, 45)
        case .green: return (45, 200, 70)
        case .blue: return (45, 90, 235)
        case .yellow: return (240, 215, 50)
        }
    }
}

/// The spatial relation of the first object to the second ("A to the left of B").
public enum Relation: String, CaseIterable, Sendable, Codable, Hashable {
    case leftOf = "left-of"
    case rightOf = "right-of"
    case above
    case below

    /// The words in a prompt: "to the left of", "to the right of", "above", "below".
    public var phrase: String {
        switch self {
        case .leftOf: return "to the left of"
        case .rightOf: return "to the right of"
        case .above: return "above"
        case .below: return "below"
        }
    }

    /// The same relation seen from the other object: "A left of B" is "B right of A".
    public var inverse: Relation {
        switch self {
        case .leftOf: return .rightOf
        case .rightOf: return .leftOf
        case .above: return .below
        case .below: return .above
        }
    }

    /// True for left/right (compared along x), false for above/below (along y).
    public var isHorizontal: Bool { self == .leftOf || self == .rightOf }
}

/// One placed object. Coordinates are in pixels with pixel `i` covering `[i, i+1)`; `(x, y)` is the
/// centre of the object's bounding box and `size` its side (the circle's diameter, the square's
/// side, the triangle's base and height). Triangles point up.
public struct SceneObject: Sendable, Equatable, Codable {
    public var shape: ShapeKind
    public var color: ShapeColor
    public var size: Double
    public var x: Double
    public var y: Double

    public init(shape: ShapeKind, color: ShapeColor, size: Double, x: Double, y: Double) {
        self.shape = shape
        self.color = color
        self.size = size
        self.x = x
        self.y = y
    }

    /// Whether the point lies inside the object (edges included).
    @inline(__always)
    func contains(_ px: Double, _ py: Double) -> Bool {
        let h = size / 2
        switch shape {
        case .circle:
            let dx = px - x, dy = py - y
            return dx * dx + dy * dy <= h * h
        case .square:
            return abs(px - x) <= h && abs(py - y) <= h
        case .triangle:
            // Apex at (x, y - h), base from (x - h, y + h) to (x + h, y + h).
            let depth = py - (y - h)
            return depth >= 0 && depth <= size && abs(px - x) <= depth / 2
        }
    }
}

/// A 32x32 scene: its objects and, for two objects, the relation of the first to the second.
public struct Scene: Sendable, Equatable {
    /// Image side in pixels.
    public static let size = 32
    /// Smallest and largest object size (pixels) the sampler draws.
    public static let objectSizes: ClosedRange<Double> = 8...14
    /// Pixels kept free at the image border.
    public static let border: Double = 1
    /// Smallest gap (pixels) between the bounding boxes of two objects along the relation's axis.
    public static let minimumGap: Double = 2
    /// The fixed neutral background (dark gray).
    public static let background: (red: UInt8, green: UInt8, blue: UInt8) = (40, 40, 40)
    /// Anti-aliasing: each pixel averages `supersampling x supersampling` point samples.
    public static let supersampling = 4

    public private(set) var objects: [SceneObject]
    public private(set) var relation: Relation?

    /// One object without a relation, or two different objects (colour or shape) with the
    /// relation of the first to the second. The placement is not checked: a hand-made scene may
    /// be one whose relation does not hold (useful for negative examples).
    public init(objects: [SceneObject], relation: Relation? = nil) throws {
        switch (objects.count, relation) {
        case (1, nil): break
        case (2, .some):
            try require(objects[0].color != objects[1].color || objects[0].shape != objects[1].shape,
                        "the two objects of a scene must differ in colour or shape")
        default:
            throw NoiseError.invalidArgument(
                "a scene holds one object without a relation or two objects with one (got \(objects.count) "
                    + "object(s), relation \(relation.map(\.phrase) ?? "none"))")
        }
        for o in objects {
            try require(o.size.isFinite && o.size > 0 && o.x.isFinite && o.y.isFinite,
                        "object size and position must be finite, size positive")
        }
        self.objects = objects
        self.relation = relation
    }

    init(unchecked objects: [SceneObject], relation: Relation?) {
        self.objects = objects
        self.relation = relation
    }

    /// The scene's facts (colour and shape of each object, the relation).
    public var facts: PromptFacts {
        PromptFacts(unchecked: objects.map { PromptObject(color: $0.color, shape: $0.shape) }, relation: relation)
    }

    /// The scene's canonical prompt, e.g. "a red circle above a blue square".
    public var prompt: String { facts.prompt }

    /// A random scene: a single object with probability 1/4, else a pair in one of the four
    /// relations; colours, shapes, sizes and positions drawn from `seed`.
    public static func random(seed: UInt64) -> Scene {
        var rng = ShapesRNG(seed: seed ^ 0x5EED_0F5C_E9E5_0001)
        let facts: PromptFacts
        if rng.below(4) == 0 {
            facts = PromptFacts(PromptObject.all[rng.below(PromptObject.all.count)])
        } else {
            let a = rng.below(12)
            var b = rng.below(11)
            if b >= a { b += 1 }
            let rel = Relation.allCases[rng.below(4)]
            facts = PromptFacts(unchecked: [PromptObject.all[a], PromptObject.all[b]], relation: rel)
        }
        return sample(facts, rng: &rng)
    }

    /// A scene for the given facts: sizes and positions drawn from `seed`, the facts hold.
    public static func sample(_ facts: PromptFacts, seed: UInt64) -> Scene {
        var rng = ShapesRNG(seed: seed ^ 0x5CE7_E5A3_9E11_0002)
        return sample(facts, rng: &rng)
    }

    /// A scene for a prompt of the grammar (see `PromptFacts.parse`); throws for a bad prompt.
    public static func sample(prompt: String, seed: UInt64) throws -> Scene {
        sample(try PromptFacts.parse(prompt), seed: seed)
    }

    static func sample(_ facts: PromptFacts, rng: inout ShapesRNG) -> Scene {
        let side = Double(size)
        let lo = border, hi = side - border
        func drawSize() -> Double {
            objectSizes.lowerBound + rng.unit() * (objectSizes.upperBound - objectSizes.lowerBound)
        }
        func uniform(_ a: Double, _ b: Double) -> Double { b <= a ? a : a + rng.unit() * (b - a) }

        guard let relation = facts.relation, facts.objects.count == 2 else {
            let o = facts.objects[0]
            let s = drawSize()
            let x = uniform(lo + s / 2, hi - s / 2)
            let y = uniform(lo + s / 2, hi - s / 2)
            return Scene(unchecked: [SceneObject(shape: o.shape, color: o.color, size: s, x: x, y: y)], relation: nil)
        }
        // Along the relation's axis, `first` is the object with the lower coordinate (left or
        // top). The free space of the axis is split at random into the two outer margins and the
        // extra gap beyond `minimumGap`; across the axis the offset stays within half the
        // separation so the named relation is the dominant one.
        let firstIsA = relation == .leftOf || relation == .above
        let sA = drawSize(), sB = drawSize()
        let (s1, s2) = firstIsA ? (sA, sB) : (sB, sA)
        let free = max(0, (hi - lo) - s1 - s2 - minimumGap)
        let u = rng.unit(), v = rng.unit()
        let (cut1, cut2) = (min(u, v) * free, max(u, v) * free)
        let c1 = lo + cut1 + s1 / 2
        let c2 = lo + s1 + minimumGap + cut2 + s2 / 2
        let separation = c2 - c1
        let p1 = uniform(lo + s1 / 2, hi - s1 / 2)
        let p2 = uniform(max(lo + s2 / 2, p1 - separation / 2), min(hi - s2 / 2, p1 + separation / 2))
        func place(_ o: PromptObject, _ s: Double, along: Double, across: Double) -> SceneObject {
            relation.isHorizontal
                ? SceneObject(shape: o.shape, color: o.color, size: s, x: along, y: across)
                : SceneObject(shape: o.shape, color: o.color, size: s, x: across, y: along)
        }
        let first = place(facts.objects[firstIsA ? 0 : 1], s1, along: c1, across: p1)
        let second = place(facts.objects[firstIsA ? 1 : 0], s2, along: c2, across: p2)
        return Scene(unchecked: firstIsA ? [first, second] : [second, first], relation: relation)
    }

    /// The rendered image: 32x32 RGB, row-major HWC, 3 bytes per pixel. Each pixel averages
    /// 4x4 point samples (deterministic anti-aliasing); later objects paint over earlier ones.
    public func render() -> [UInt8] {
        let n = Scene.size, ss = Scene.supersampling
        let bg = Scene.background
        let colors = objects.map { $0.color.rgb }
        var out = [UInt8](repeating: 0, count: n * n * 3)
        let step = 1.0 / Double(ss)
        for py in 0..<n {
            for px in 0..<n {
                var r = 0, g = 0, b = 0
                for j in 0..<ss {
                    let sy = Double(py) + (Double(j) + 0.5) * step
                    for i in 0..<ss {
                        let sx = Double(px) + (Double(i) + 0.5) * step
                        var c = bg
                        for (k, o) in objects.enumerated() where o.contains(sx, sy) { c = colors[k] }
                        r += Int(c.red)
                        g += Int(c.green)
                        b += Int(c.blue)
                    }
                }
                let count = ss * ss, o = (py * n + px) * 3
                out[o] = UInt8((r + count / 2) / count)
                out[o + 1] = UInt8((g + count / 2) / count)
                out[o + 2] = UInt8((b + count / 2) / count)
            }
        }
        return out
    }

    /// The rendered image as a float tensor of shape [3, 32, 32] (CHW), values in [-1, 1].
    public func renderTensor() -> HostTensor {
        // The pixels are valid by construction.
        try! Scene.tensor(rgb: render(), width: Scene.size, height: Scene.size)
    }

    /// HWC RGB bytes to a CHW float tensor with values `v / 127.5 - 1` in [-1, 1].
    public static func tensor(rgb: [UInt8], width: Int = size, height: Int = size) throws -> HostTensor {
        try require(width > 0 && height > 0, "image size \(width)x\(height) must be positive")
        try require(rgb.count == width * height * 3,
                    "expected \(width)x\(height)x3 = \(width * height * 3) bytes of RGB, got \(rgb.count)")
        let plane = width * height
        var data = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 { data[c * plane + p] = Float(rgb[p * 3 + c]) / 127.5 - 1 }
        }
        return HostTensor(shape: [3, height, width], data: data)
    }

    /// A CHW float tensor ([3, H, W], values in [-1, 1], clamped) back to HWC RGB bytes, rounding
    /// to nearest; e.g. a diffusion model's sample before `Reward.evaluate`.
    public static func rgb(tensor: HostTensor) throws -> [UInt8] {
        try require(tensor.shape.count == 3 && tensor.shape[0] == 3 && tensor.shape[1] > 0 && tensor.shape[2] > 0,
                    "expected an image tensor of shape [3, H, W], got \(tensor.shape)")
        let plane = tensor.shape[1] * tensor.shape[2]
        try require(tensor.data.count == 3 * plane, "tensor of shape \(tensor.shape) holds \(tensor.data.count) values")
        var out = [UInt8](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 {
                let v = tensor.data[c * plane + p]
                let scaled = v.isNaN ? 0 : min(max((v + 1) * 127.5, 0), 255)
                out[p * 3 + c] = UInt8(scaled.rounded())
            }
        }
        return out
    }
}

/// SplitMix64: small, fast and fully deterministic (unlike the standard library's generator).
struct ShapesRNG: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in 0..<n (n > 0), by multiply-shift (negligible bias for the small n used here).
    mutating func below(_ n: Int) -> Int { Int((next().multipliedFullWidth(by: UInt64(n))).high) }
}

/// 64-bit FNV-1a of a string's UTF-8 bytes: a stable hash (Swift's `Hasher` is seeded per process).
func fnv1a64(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h &*= 0x0000_0100_0000_01B3
    }
    return h
}
