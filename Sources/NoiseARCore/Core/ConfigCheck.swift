/// Checks of model config fields, run before anything is divided by or allocated from them.
/// Every error is one line naming the file (or model), the field by its JSON key path and its
/// value: "shapes-diffusion.safetensors: config unet.heads = 0: must be at least 1".
package struct ConfigCheck {
    /// The file (or the model, for a config built in code) the config belongs to.
    package let source: String
    /// Prepended to every field name ("unet.", "swin.").
    package var prefix = ""

    /// The widest a channel, feature or embedding field may be.
    package static let maxWidth = 1 << 16
    /// The most elements one tensor derived from a config (a weight, an embedding table, a
    /// constant) may have.
    package static let maxElements = 1 << 31

    package init(source: String, prefix: String = "") {
        self.source = source
        self.prefix = prefix
    }

    /// The same checks for a nested config ("unet." then "unet.heads").
    package func nested(_ name: String) -> ConfigCheck { ConfigCheck(source: source, prefix: prefix + name) }

    /// A field's full name.
    package func name(_ field: String) -> String { prefix + field }

    package func error(_ field: String, _ value: String, _ rule: String) -> NoiseError {
        .invalidArgument("\(source): config \(prefix)\(field) = \(value): \(rule)")
    }

    /// An integer field in `lo...hi`.
    package func int(_ field: String, _ v: Int, min lo: Int = 1, max hi: Int) throws {
        if v < lo { throw error(field, "\(v)", "must be at least \(lo)") }
        if v > hi { throw error(field, "\(v)", "must be at most \(hi)") }
    }

    /// `v` is a multiple of the (already checked, positive) field `other`.
    package func multiple(_ field: String, _ v: Int, of other: String, _ w: Int) throws {
        if w > 0 && v % w != 0 { throw error(field, "\(v)", "must be a multiple of \(name(other)) = \(w)") }
    }

    /// `v` (already checked positive) divides `total`, which `what` describes.
    package func divides(_ field: String, _ v: Int, _ what: String, _ total: Int) throws {
        if v > 0 && total % v != 0 { throw error(field, "\(v)", "must divide \(what) = \(total)") }
    }

    /// A list field with a count in `lo...hi`.
    package func count(_ field: String, _ n: Int, min lo: Int = 1, max hi: Int) throws {
        if n < lo { throw error(field, "a list of \(n)", "must have at least \(lo) entr\(lo == 1 ? "y" : "ies")") }
        if n > hi { throw error(field, "a list of \(n)", "must have at most \(hi) entries") }
    }

    /// Two list fields of equal length.
    package func sameCount(_ field: String, _ n: Int, as other: String, _ m: Int) throws {
        if n != m { throw error(field, "a list of \(n)", "must have as many entries as \(name(other)) (\(m))") }
    }

    /// A floating-point field that is finite and satisfies `rule` (described by `text`).
    package func float(_ field: String, _ v: Double, _ text: String, _ rule: (Double) -> Bool) throws {
        if !v.isFinite || !rule(v) { throw error(field, "\(v)", text) }
    }

    /// A positive, finite epsilon.
    package func epsilon(_ field: String, _ v: Double) throws {
        try float(field, v, "must be a finite number > 0") { $0 > 0 }
    }

    /// The product of `factors` (sizes derived from the fields named by `what`), checked for
    /// overflow and against `hi`.
    @discardableResult
    package func product(_ what: String, _ factors: [Int], max hi: Int = ConfigCheck.maxElements) throws -> Int {
        guard let p = checkedProduct(factors), p <= hi else {
            let shown = factors.map(String.init).joined(separator: " x ")
            throw NoiseError.invalidArgument(
                "\(source): config \(what) = \(shown) is too large: must be at most \(hi)")
        }
        return p
    }
}

/// The product of non-negative factors, or nil on a negative factor or overflow.
package func checkedProduct(_ factors: [Int]) -> Int? {
    var p = 1
    for f in factors {
        guard f >= 0 else { return nil }
        let (r, overflow) = p.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        p = r
    }
    return p
}

/// The integer r >= 0 with r * r == n, or nil when n is negative or not a perfect square.
package func exactSquareRoot(_ n: Int) -> Int? {
    guard n >= 0 else { return nil }
    let guess = Int(Double(n).squareRoot().rounded())
    for r in [guess - 1, guess, guess + 1] where r >= 0 {
        let (sq, overflow) = r.multipliedReportingOverflow(by: r)
        if !overflow && sq == n { return r }
    }
    return nil
}
