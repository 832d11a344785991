import Foundation

/// User-supplied text inside one-line messages.
public enum Text {
    /// `value` in quotes (double by default) with control characters escaped (`\n`, `\t`, `\u{1B}`, ...) and
    /// cut to `limit` characters (an ellipsis and the full length follow a cut), so an error line
    /// stays one line and cannot carry terminal escape sequences.
    public static func quoted(_ value: String, limit: Int = 80, quote: Character = "\"") -> String {
        var out = ""
        var shown = 0
        for ch in value {
            if shown == limit {
                return "\(quote)\(out)...\(quote) (\(value.count) characters)"
            }
            shown += 1
            for scalar in ch.unicodeScalars {
                switch scalar {
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\"" where quote == "\"", "'" where quote == "'": out += "\\" + String(scalar)
                case "\\": out += "\\\\"
                default:
                    if scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format
                        || scalar.properties.generalCategory == .lineSeparator || scalar.properties.generalCategory == .paragraphSeparator {
                        out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
        }
        return "\(quote)\(out)\(quote)"
    }
}
