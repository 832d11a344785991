import Foundation

/// A one-line progress bar on standard error, redrawn in place on a terminal and silent
/// otherwise (or when quiet).
final class ProgressBar {
    let total: Int
    let label: String
    let enabled: Bool
    let start = Date()
    private var lastDraw = Date.distantPast

    init(total: Int, label: String, quiet: Bool) {
        self.total = max(total, 1)
        self.label = label
        enabled = !quiet && isatty(STDERR_FILENO) != 0
    }

    /// Draws `done` of `total` with a suffix (e.g. loss); at most ten redraws a second.
    func update(_ done: Int, _ suffix: String = "") {
        guard enabled else { return }
        let now = Date()
        if done < total && now.timeIntervalSince(lastDraw) < 0.1 { return }
        lastDraw = now
        let width = 28
        let filled = width * min(done, total) / total
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let elapsed = now.timeIntervalSince(start)
        let rate = done > 0 ? elapsed / Double(done) : 0
        let eta = rate * Double(total - done)
        let line = String(format: "\r%@ [%@] %d/%d %.2fs/it eta %@ %@", label, bar, done, total, rate,
                          Self.clock(eta), suffix)
        FileHandle.standardError.write(Data(line.utf8))
        if done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    /// Erases the bar's line (before a note), so the note starts on a clean line.
    func clear() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        lastDraw = .distantPast
    }

    static func clock(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}

/// A line on standard error (progress messages for non-terminal runs).
func note(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// A result line on standard output, written at once (unbuffered), for lines of a long run that a
/// log file should show as they happen.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
