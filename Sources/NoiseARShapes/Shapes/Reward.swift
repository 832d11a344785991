import Foundation
import NoiseARCore
import NoiseARModels

/// One object found in an image by `Reward.detect`.
public struct DetectedObject: Sendable, Equatable, Codable {
    public var color: ShapeColor
    /// The classified shape (best template fit); nil when the component fits none (best fit under
    /// `Reward.minShapeFit` or too elongated).
    public var shape: ShapeKind?
    /// Pixels in the connected component.
    public var area: Int
    /// Centroid in pixel coordinates (pixel `i` covers `[i, i+1)`).
    public var centroidX: Double
    public var centroidY: Double
    /// Inclusive bounding box in pixels.
    public var minX: Int, minY: Int, maxX: Int, maxY: Int
    /// area / bounding-box area: square ~1, circle ~0.785, triangle ~0.5 (descriptive).
    public var fill: Double
    /// Centroid height within the bounding box, 0 = top, 1 = bottom: 0.5 for circle and square,
    /// 2/3 for the upward triangle (descriptive).
    public var centroidDepth: Double
    /// Fit (intersection over union) of each shape template of the same area at the same centroid.
    public var circleFit: Double
    public var squareFit: Double
    public var triangleFit: Double

    /// "red circle" (or "red object of unclear shape").
    public var label: String { "\(color.rawValue) \(shape?.rawValue ?? "object of unclear shape")" }
}

/// One checked fact of a prompt.
public struct RewardFact: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// An object of the named colour is present.
        case color
        /// The object of the named colour has the named shape (bound to the colour).
        case shape
        /// The two objects stand in the named relation.
        case relation
        /// The image holds exactly as many objects as the prompt names.
        case count
    }

    public var kind: Kind
    /// Index of the prompt object the fact is about (color, shape), nil for relation and count.
    public var object: Int?
    /// What the fact states, e.g. "a red object is present".
    public var description: String
    /// What was found, e.g. "red square (62 px at 12.4, 20.1)".
    public var found: String
    public var holds: Bool
}

/// The result of `Reward.evaluate`.
public struct RewardResult: Sendable, Equatable, Codable {
    /// The prompt's canonical text.
    public var prompt: String
    /// Fraction of the facts that hold, in [0, 1].
    public var score: Double
    public var satisfied: Int
    public var total: Int
    /// Per-fact breakdown, in the order: for each object its colour and shape facts, then the
    /// relation (pairs only), then the object count.
    public var facts: [RewardFact]
    /// Every object found in the image, largest first.
    public var detected: [DetectedObject]

    /// Whether every fact holds.
    public var allHold: Bool { satisfied == total }
}

/// Exact prompt-fidelity checker for shapes-world images.
///
/// Facts: a prompt of one object has 3 facts, a pair 6:
/// - per object, `color` ("an object of that colour is present") and `shape` ("the object of that
///   colour has that shape"; the shape is bound to the colour, so it fails when the colour is
///   missing) — colour and shape count as separate facts, giving partial credit;
/// - for a pair, `relation`: both colours are present and the centroids are ordered along the
///   relation's axis by at least `relationMargin` pixels, with the separation along that axis
///   larger than the offset across it (the named relation is the dominant direction);
/// - `count`: the image holds exactly as many objects as the prompt names (extra objects cost).
/// The score is the fraction of facts that hold. Prompt objects are matched to distinct detected
/// objects by the assignment that satisfies the most facts.
///
/// Method: each pixel is compared with the blend line from the background to each palette colour
/// (what anti-aliasing and blur produce): its coverage `alpha` is the projection onto the line and
/// its distance the residual off it. A pixel takes the colour with the smallest residual if that is
/// at most `maxResidual` and `alpha >= minCoverage`, else it is background. Pixels of one colour
/// form 8-connected components; components under `minArea` pixels (scaled with the image area
/// from 32x32) are specks and ignored. A component's shape is the best-fitting template: a circle,
/// a square and an upward triangle, each of the component's area placed at its centroid, compared
/// by intersection over union (robust to blurred corners and noisy edge pixels, unlike the fill of
/// the bounding box); no shape when the best fit is under `minShapeFit` or the bounding box's
/// aspect ratio is over `maxAspect`.
public enum Reward {
    /// Largest distance (RGB units) of a pixel from a colour's blend line.
    public static let maxResidual = 70.0
    /// Smallest coverage (position along the blend line) of an object pixel.
    public static let minCoverage = 0.5
    /// Smallest component (pixels at 32x32) that counts as an object.
    public static let minArea = 12
    /// Smallest centroid separation (pixels at 32x32) along the relation's axis.
    public static let relationMargin = 2.0
    /// Largest bounding-box aspect ratio of a shape.
    public static let maxAspect = 1.6
    /// Smallest template fit (intersection over union) for a shape.
    public static let minShapeFit = 0.6

    /// Scores a 32x32 RGB image (HWC bytes) against a prompt. Throws for a bad prompt or image.
    public static func evaluate(image: [UInt8], prompt: String) throws -> RewardResult {
        try evaluate(image: image, width: Scene.size, height: Scene.size, prompt: prompt)
    }

    /// Scores an RGB image of any size (HWC bytes; thresholds scale from 32x32) against a prompt.
    public static func evaluate(image: [UInt8], width: Int, height: Int, prompt: String) throws -> RewardResult {
        let facts = try PromptFacts.parse(prompt)
        return try evaluate(image: image, width: width, height: height, facts: facts)
    }

    /// Scores a CHW image tensor ([3, H, W], values in [-1, 1]) against a prompt.
    public static func evaluate(tensor: HostTensor, prompt: String) throws -> RewardResult {
        let rgb = try Scene.rgb(tensor: tensor)
        return try evaluate(image: rgb, width: tensor.shape[2], height: tensor.shape[1], prompt: prompt)
    }

    /// Scores an RGB image against parsed facts.
    public static func evaluate(image: [UInt8], width: Int, height: Int, facts: PromptFacts) throws -> RewardResult {
        let detected = try detect(image: image, width: width, height: height)
        let scale = Double(min(width, height)) / Double(Scene.size)
        return score(facts: facts, detected: detected, margin: relationMargin * scale)
    }

    /// The objects in an RGB image (HWC bytes), largest first.
    public static func detect(image: [UInt8], width: Int, height: Int) throws -> [DetectedObject] {
        try require(width > 0 && height > 0, "image size \(width)x\(height) must be positive")
        try require(image.count == width * height * 3,
                    "expected \(width)x\(height)x3 = \(width * height * 3) bytes of RGB, got \(image.count)")
        let labels = classifyPixels(image, count: width * height)
        let minPixels = max(3, Int((Double(minArea) * Double(width * height) / Double(Scene.size * Scene.size)).rounded()))
        var seen = [Bool](repeating: false, count: width * height)
        var out: [DetectedObject] = []
        var stack: [Int] = []
        var members: [Int] = []
        for start in 0..<(width * height) where labels[start] >= 0 && !seen[start] {
            let label = labels[start]
            seen[start] = true
            stack.append(start)
            members.removeAll(keepingCapacity: true)
            while let p = stack.popLast() {
                members.append(p)
                let px = p % width, py = p / width
                for dy in -1...1 {
                    let y = py + dy
                    if y < 0 || y >= height { continue }
                    for dx in -1...1 {
                        let x = px + dx
                        if x < 0 || x >= width { continue }
                        let q = y * width + x
                        if !seen[q] && labels[q] == label {
                            seen[q] = true
                            stack.append(q)
                        }
                    }
                }
            }
            if members.count < minPixels { continue }
            out.append(describe(members, color: ShapeColor.allCases[label], width: width))
        }
        // Largest first; ties by position so the order is deterministic.
        out.sort { ($0.area, -$0.minY, -$0.minX) > ($1.area, -$1.minY, -$1.minX) }
        return out
    }

    /// Per pixel: the palette index (0..<4) or -1 for background.
    static func classifyPixels(_ image: [UInt8], count: Int) -> [Int] {
        let bg = Scene.background
        let b = (Double(bg.red), Double(bg.green), Double(bg.blue))
        let dirs = ShapeColor.allCases.map { c -> (Double, Double, Double, Double) in
            let v = c.rgb
            let d = (Double(v.red) - b.0, Double(v.green) - b.1, Double(v.blue) - b.2)
            return (d.0, d.1, d.2, d.0 * d.0 + d.1 * d.1 + d.2 * d.2)
        }
        let maxR2 = maxResidual * maxResidual
        var labels = [Int](repeating: -1, count: count)
        for p in 0..<count {
            let r = Double(image[p * 3]) - b.0, g = Double(image[p * 3 + 1]) - b.1, bl = Double(image[p * 3 + 2]) - b.2
            var best = -1
            var bestResidual = Double.infinity
            for (k, d) in dirs.enumerated() {
                let alpha = (r * d.0 + g * d.1 + bl * d.2) / d.3
                let er = r - alpha * d.0, eg = g - alpha * d.1, eb = bl - alpha * d.2
                let residual = er * er + eg * eg + eb * eb
                if alpha >= minCoverage && residual <= maxR2 && residual < bestResidual {
                    best = k
                    bestResidual = residual
                }
            }
            labels[p] = best
        }
        return labels
    }

    static func describe(_ members: [Int], color: ShapeColor, width: Int) -> DetectedObject {
        var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
        var sx = 0.0, sy = 0.0
        for p in members {
            let x = p % width, y = p / width
            minX = min(minX, x); maxX = max(maxX, x)
            minY = min(minY, y); maxY = max(maxY, y)
            sx += Double(x) + 0.5
            sy += Double(y) + 0.5
        }
        let n = Double(members.count)
        let w = Double(maxX - minX + 1), h = Double(maxY - minY + 1)
        let cx = sx / n, cy = sy / n
        let fit = templateFit(members, width: width, cx: cx, cy: cy, box: (minX, minY, maxX, maxY))
        var shape: ShapeKind?
        var best = minShapeFit
        for (k, iou) in zip(ShapeKind.allCases, [fit.circle, fit.square, fit.triangle]) where iou >= best {
            shape = k
            best = iou
        }
        if max(w, h) / min(w, h) > maxAspect { shape = nil }
        return DetectedObject(
            color: color, shape: shape, area: members.count, centroidX: cx, centroidY: cy,
            minX: minX, minY: minY, maxX: maxX, maxY: maxY, fill: n / (w * h), centroidDepth: (cy - Double(minY)) / h,
            circleFit: fit.circle, squareFit: fit.square, triangleFit: fit.triangle)
    }

    /// Intersection over union of the component with each shape template of the same area placed
    /// at the same centroid (the triangle's centroid lies a sixth of its size below its box centre).
    /// A template pixel is one at least half covered (4x4 samples).
    static func templateFit(_ members: [Int], width: Int, cx: Double, cy: Double,
                            box: (Int, Int, Int, Int)) -> (circle: Double, square: Double, triangle: Double) {
        let n = Double(members.count)
        let templates = [
            SceneObject(shape: .circle, color: .red, size: 2 * (n / Double.pi).squareRoot(), x: cx, y: cy),
            SceneObject(shape: .square, color: .red, size: n.squareRoot(), x: cx, y: cy),
            SceneObject(shape: .triangle, color: .red, size: (2 * n).squareRoot(), x: cx, y: cy - (2 * n).squareRoot() / 6),
        ]
        // Window: the component's box and every template's box.
        var x0 = box.0, y0 = box.1, x1 = box.2, y1 = box.3
        for t in templates {
            x0 = min(x0, Int((t.x - t.size / 2).rounded(.down)) - 1)
            y0 = min(y0, Int((t.y - t.size / 2).rounded(.down)) - 1)
            x1 = max(x1, Int((t.x + t.size / 2).rounded(.up)) + 1)
            y1 = max(y1, Int((t.y + t.size / 2).rounded(.up)) + 1)
        }
        let ww = x1 - x0 + 1, wh = y1 - y0 + 1
        var mask = [Bool](repeating: false, count: ww * wh)
        for p in members { mask[(p / width - y0) * ww + (p % width - x0)] = true }
        var out = [Double]()
        for t in templates {
            var inter = 0, union = 0
            for y in 0..<wh {
                for x in 0..<ww {
                    var covered = 0
                    for j in 0..<4 {
                        for i in 0..<4 where t.contains(Double(x0 + x) + (Double(i) + 0.5) / 4, Double(y0 + y) + (Double(j) + 0.5) / 4) {
                            covered += 1
                        }
                    }
                    let inT = covered >= 8, inP = mask[y * ww + x]
                    if inT && inP { inter += 1 }
                    if inT || inP { union += 1 }
                }
            }
            out.append(union == 0 ? 0 : Double(inter) / Double(union))
        }
        return (out[0], out[1], out[2])
    }

    static func relationHolds(_ relation: Relation, _ a: DetectedObject, _ b: DetectedObject, margin: Double) -> Bool {
        let dx = b.centroidX - a.centroidX, dy = b.centroidY - a.centroidY
        let along: Double, across: Double
        switch relation {
        case .leftOf: (along, across) = (dx, dy)
        case .rightOf: (along, across) = (-dx, dy)
        case .above: (along, across) = (dy, dx)
        case .below: (along, across) = (-dy, dx)
        }
        return along >= margin && along > abs(across)
    }

    static func score(facts: PromptFacts, detected: [DetectedObject], margin: Double) -> RewardResult {
        let objects = facts.objects
        // Candidate assignments: each prompt object to a distinct detected object or to none.
        // Only the 8 largest detections take part (more is never needed for 2 objects).
        let candidates = Array(detected.prefix(8))
        let options = [nil] + candidates.indices.map { Optional($0) }
        var best: [RewardFact] = []
        var bestCount = -1
        func evaluate(_ assignment: [Int?]) {
            var out: [RewardFact] = []
            var colorOK: [Bool] = []
            for (i, o) in objects.enumerated() {
                let d = assignment[i].map { candidates[$0] }
                let hasColor = d?.color == o.color
                let hasShape = hasColor && d?.shape == o.shape
                colorOK.append(hasColor)
                let foundText = hasColor ? describeFound(d!) : "no \(o.color.rawValue) object"
                out.append(RewardFact(kind: .color, object: i, description: "a \(o.color.rawValue) object is present",
                                      found: foundText, holds: hasColor))
                out.append(RewardFact(kind: .shape, object: i,
                                      description: "the \(o.color.rawValue) object is a \(o.shape.rawValue)",
                                      found: foundText, holds: hasShape))
            }
            if let relation = facts.relation, objects.count == 2 {
                let holds: Bool
                let found: String
                if colorOK[0] && colorOK[1], let a = assignment[0], let b = assignment[1] {
                    let da = candidates[a], db = candidates[b]
                    holds = relationHolds(relation, da, db, margin: margin)
                    found = String(format: "centroids (%.1f, %.1f) and (%.1f, %.1f)",
                                   da.centroidX, da.centroidY, db.centroidX, db.centroidY)
                } else {
                    holds = false
                    found = "an object is missing"
                }
                out.append(RewardFact(kind: .relation, object: nil, description: facts.prompt, found: found, holds: holds))
            }
            let n = objects.count
            out.append(RewardFact(kind: .count, object: nil, description: "exactly \(n) object\(n == 1 ? "" : "s")",
                                  found: "\(detected.count) object\(detected.count == 1 ? "" : "s")",
                                  holds: detected.count == n))
            let count = out.filter(\.holds).count
            if count > bestCount {
                bestCount = count
                best = out
            }
        }
        if objects.count == 1 {
            for a in options { evaluate([a]) }
        } else {
            for a in options {
                for b in options where b == nil || b != a { evaluate([a, b]) }
            }
        }
        return RewardResult(prompt: facts.prompt, score: Double(bestCount) / Double(best.count),
                            satisfied: bestCount, total: best.count, facts: best, detected: detected)
    }

    static func describeFound(_ d: DetectedObject) -> String {
        "\(d.label) (\(d.area) px at " + String(format: "%.1f, %.1f)", d.centroidX, d.centroidY)
    }
}
