import Foundation
import NoiseARCore
import NoiseARModels

/// The fixed train / held-out split of the 540 prompts of the grammar (`PromptFacts.all`).
///
/// Equivalent prompts ("A to the left of B" and "B to the right of A"; "A above B" and "B below
/// A") describe the same scenes, so both texts are kept but always fall on the same side: the
/// split is over the 264 pair classes (unordered pair of objects, axis and order along it) and the
/// 12 single objects, never leaking a held-out scene through its mirrored wording. Each class is
/// ranked by a stable 64-bit FNV-1a hash of "shapes-split-v1|" + its canonical text (the
/// left-of / above form); the `heldOutPairClasses` lowest-ranked pair classes (2 prompts each) and
/// the `heldOutSingles` lowest-ranked single objects are held out: 2 + 90 = 92 prompts (17%),
/// 448 train. Both lists keep the order of `PromptFacts.all`.
public enum PromptSplit {
    /// Held-out single-object prompts.
    public static let heldOutSingles = 2
    /// Held-out pair classes (each 2 prompts).
    public static let heldOutPairClasses = 45
    static let salt = "shapes-split-v1|"

    /// Every prompt of the grammar (canonical text), in the order of `PromptFacts.all`.
    public static let all: [String] = PromptFacts.all.map(\.prompt)

    /// The held-out prompts, for evaluating generalisation to unseen combinations.
    public static let heldOut: [String] = all.filter { heldOutSet.contains($0) }

    /// The training prompts.
    public static let train: [String] = all.filter { !heldOutSet.contains($0) }

    /// Whether a prompt (any accepted wording) is held out; throws for a bad prompt.
    public static func isHeldOut(_ prompt: String) throws -> Bool {
        heldOutSet.contains(try PromptFacts.parse(prompt).prompt)
    }

    /// The two-object prompts of `prompts` in one wording per pair class (left-of or above), in
    /// their order: the 45 held-out pair classes, or the train split's 219.
    public static func pairClasses(_ prompts: [String]) -> [String] {
        prompts.filter { p in
            guard let f = try? PromptFacts.parse(p), let r = f.relation else { return false }
            return r == .leftOf || r == .above
        }
    }

    /// `count` prompts spread evenly over `prompts` (all of them when there are no more).
    public static func spread(_ prompts: [String], count: Int) -> [String] {
        guard count > 0, count < prompts.count else { return prompts }
        return (0..<count).map { prompts[$0 * prompts.count / count] }
    }

    /// The class representative of a prompt: the pair stated as left-of or above.
    static func canonicalClass(_ f: PromptFacts) -> PromptFacts {
        guard let r = f.relation else { return f }
        return r == .rightOf || r == .below ? f.mirrored : f
    }

    static let heldOutSet: Set<String> = {
        func rank(_ classes: [PromptFacts]) -> [PromptFacts] {
            classes.map { (fnv1a64(salt + $0.prompt), $0) }
                .sorted { ($0.0, $0.1.prompt) < ($1.0, $1.1.prompt) }
                .map(\.1)
        }
        let singles = PromptFacts.all.filter { $0.relation == nil }
        var seen = Set<PromptFacts>()
        var pairClasses: [PromptFacts] = []
        for f in PromptFacts.all where f.relation != nil {
            let c = canonicalClass(f)
            if seen.insert(c).inserted { pairClasses.append(c) }
        }
        var out = Set<String>()
        for f in rank(singles).prefix(heldOutSingles) { out.insert(f.prompt) }
        for c in rank(pairClasses).prefix(heldOutPairClasses) {
            out.insert(c.prompt)
            out.insert(c.mirrored.prompt)
        }
        return out
    }()
}
