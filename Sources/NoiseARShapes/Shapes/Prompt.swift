import Foundation
import NoiseARCore
import NoiseARModels

// The prompt grammar of the shapes world:
//
//   prompt   := object | object relation object
//   object   := "a" colour shape            ("an" is accepted too)
//   colour   := "red" | "green" | "blue" | "yellow"
//   shape    := "circle" | "square" | "triangle"
//   relation := "to the left of" | "to the right of" | "above" | "below"
//                                           ("left of" / "right of" without "to the" accepted)
//
// Parsing ignores case, surrounding and repeated white space and one trailing full stop. The two
// objects of a pair must differ (colour or shape). Canonical text: lower case, single spaces,
// article "a", e.g. "a blue square to the left of a yellow triangle".

/// An object as a prompt names it: a colour and a shape.
public struct PromptObject: Sendable, Hashable, Codable, CustomStringConvertible {
    public var color: ShapeColor
    public var shape: ShapeKind

    public init(color: ShapeColor, shape: ShapeKind) {
        self.color = color
        self.shape = shape
    }

    /// "a red circle".
    public var phrase: String { "a \(color.rawValue) \(shape.rawValue)" }
    public var description: String { phrase }

    /// The 12 objects, colour-major: red circle, red square, red triangle, green circle, ...
    public static let all: [PromptObject] = ShapeColor.allCases.flatMap { c in
        ShapeKind.allCases.map { PromptObject(color: c, shape: $0) }
    }
}

/// The facts a prompt states: one object, or two different objects and the relation of the first
/// to the second.
public struct PromptFacts: Sendable, Hashable, CustomStringConvertible {
    public private(set) var objects: [PromptObject]
    public private(set) var relation: Relation?

    /// A single object.
    public init(_ object: PromptObject) {
        objects = [object]
        relation = nil
    }

    /// Two objects: `first relation second`, e.g. (red circle, .above, blue square). Throws when
    /// both are the same object.
    public init(_ first: PromptObject, _ relation: Relation, _ second: PromptObject) throws {
        try require(first != second, "the two objects of a prompt must differ (both are \(first.phrase))")
        objects = [first, second]
        self.relation = relation
    }

    init(unchecked objects: [PromptObject], relation: Relation?) {
        self.objects = objects
        self.relation = relation
    }

    /// The canonical prompt text.
    public var prompt: String {
        if let relation, objects.count == 2 {
            return "\(objects[0].phrase) \(relation.phrase) \(objects[1].phrase)"
        }
        return objects.map(\.phrase).joined(separator: " and ")
    }

    public var description: String { prompt }

    /// The same facts stated from the other object ("A left of B" -> "B right of A"); a single
    /// object is its own mirror.
    public var mirrored: PromptFacts {
        guard let relation, objects.count == 2 else { return self }
        return PromptFacts(unchecked: [objects[1], objects[0]], relation: relation.inverse)
    }

    /// Every prompt of the grammar: the 12 single objects, then the 12 * 11 * 4 = 528 ordered
    /// pairs (first object, relation, second object), 540 in all. "A left of B" and "B right of A"
    /// are both listed: they are different texts for the same scenes (see `PromptSplit`).
    public static let all: [PromptFacts] = {
        var out = PromptObject.all.map { PromptFacts($0) }
        for a in PromptObject.all {
            for r in Relation.allCases {
                for b in PromptObject.all where b != a {
                    out.append(PromptFacts(unchecked: [a, b], relation: r))
                }
            }
        }
        return out
    }()

    /// Parses a prompt of the grammar. Throws `NoiseError.invalidArgument` naming the problem: an
    /// empty prompt, an unknown word, a missing or misplaced word, trailing words.
    public static func parse(_ text: String) throws -> PromptFacts {
        var trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasSuffix(".") { trimmed.removeLast() }
        let words = trimmed.lowercased().split(whereSeparator: { $0.isWhitespace }).map(String.init)
        guard !words.isEmpty else {
            throw NoiseError.invalidArgument("empty prompt: expected e.g. \"a red circle\" or \"a red circle above a blue square\"")
        }
        for w in words where !PromptTokenizer.grammarWords.contains(w) {
            throw NoiseError.invalidArgument(
                "unknown word \(Text.quoted(w, limit: 40, quote: "'")) in prompt \(Text.quoted(text)) (known words: \(PromptTokenizer.grammarWords.joined(separator: " ")))")
        }
        var i = 0
        func fail(_ what: String) -> NoiseError {
            let after = i == 0 ? "at the start" : "after \(Text.quoted(words[0..<i].joined(separator: " "), limit: 60, quote: "'"))"
            let found = i < words.count ? "found \(Text.quoted(words[i], limit: 40, quote: "'"))" : "found the end of the prompt"
            return .invalidArgument("expected \(what) \(after) in prompt \(Text.quoted(text)), \(found)")
        }
        func object() throws -> PromptObject {
            guard i < words.count, words[i] == "a" || words[i] == "an" else { throw fail("'a'") }
            i += 1
            guard i < words.count, let color = ShapeColor(rawValue: words[i]) else {
                throw fail("a colour (red, green, blue, yellow)")
            }
            i += 1
            guard i < words.count, let shape = ShapeKind(rawValue: words[i]) else {
                throw fail("a shape (circle, square, triangle)")
            }
            i += 1
            return PromptObject(color: color, shape: shape)
        }
        func relation() throws -> Relation {
            let relationWords = "'to the left of', 'to the right of', 'above' or 'below'"
            guard i < words.count else { throw fail(relationWords) }
            switch words[i] {
            case "above": i += 1; return .above
            case "below": i += 1; return .below
            default: break
            }
            let start = i
            if words[i] == "to" {
                guard i + 1 < words.count, words[i + 1] == "the" else { i += 1; throw fail("'the'") }
                i += 2
            }
            guard i < words.count, words[i] == "left" || words[i] == "right" else {
                if i == start { throw fail(relationWords) }
                throw fail("'left' or 'right'")
            }
            let left = words[i] == "left"
            i += 1
            guard i < words.count, words[i] == "of" else { throw fail("'of'") }
            i += 1
            return left ? .leftOf : .rightOf
        }
        let first = try object()
        if i == words.count { return PromptFacts(first) }
        let rel = try relation()
        let second = try object()
        guard i == words.count else {
            throw NoiseError.invalidArgument(
                "unexpected \(Text.quoted(words[i...].joined(separator: " "), limit: 40, quote: "'")) after the end of prompt \(Text.quoted(text)) "
                    + "(a prompt names one object or two objects and a relation)")
        }
        guard first != second else {
            throw NoiseError.invalidArgument("prompt \(Text.quoted(text)) names the same object twice (\(first.phrase))")
        }
        return PromptFacts(unchecked: [first, second], relation: rel)
    }
}

/// Word-level tokenizer for a small text encoder over the grammar's words.
///
/// Ids: 0 = `<pad>`, 1 = `<unk>`, then the grammar's words in a fixed order (see `vocabulary`).
/// `tokenize` lower-cases, splits on anything that is not a letter, maps each word (unknown words
/// to `<unk>`) and pads with `<pad>` (or truncates) to `length`. The longest prompt of the
/// grammar has 10 words, so the default length 12 always holds a whole prompt.
public enum PromptTokenizer {
    public static let padID = 0
    public static let unknownID = 1
    public static let length = 12

    /// The words a prompt of the grammar may contain.
    static let grammarWords: [String] =
        ["a", "an"] + ShapeColor.allCases.map(\.rawValue) + ShapeKind.allCases.map(\.rawValue)
        + ["to", "the", "left", "right", "of", "above", "below"]

    /// Token strings by id: `["<pad>", "<unk>", "a", "an", "red", ..., "below"]` (18 entries).
    public static let vocabulary: [String] = ["<pad>", "<unk>"] + grammarWords

    static let ids: [String: Int] = Dictionary(uniqueKeysWithValues: vocabulary.enumerated().map { ($1, $0) })

    /// Token ids of a prompt, padded with `padID` or truncated to `length` ids.
    public static func tokenize(_ prompt: String, length: Int = PromptTokenizer.length) -> [Int] {
        let words = prompt.lowercased().split(whereSeparator: { !$0.isLetter })
        var out = words.prefix(max(0, length)).map { ids[String($0)] ?? unknownID }
        if out.count < length { out += [Int](repeating: padID, count: length - out.count) }
        return out
    }

    /// The words of token ids (padding dropped); `<unk>` for unknown ids and `<unk>` itself.
    public static func decode(_ tokens: [Int]) -> String {
        tokens.filter { $0 != padID }
            .map { $0 >= 0 && $0 < vocabulary.count ? vocabulary[$0] : vocabulary[unknownID] }
            .joined(separator: " ")
    }
}
