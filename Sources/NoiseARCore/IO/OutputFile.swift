import Foundation

/// Writing a user's output path without losing data.
///
/// - A regular file (or nothing) at the path is replaced atomically: the bytes go to a temporary
///   file in the same folder, are flushed, take the old file's permission bits, and are renamed
///   over the path, so a failure or a kill leaves the old file as it was.
/// - A symbolic link is followed (the link stays a link; what it points to is written by the same
///   rules).
/// - A character device (`/dev/null`, a terminal) or a FIFO is written into as it is: it is never
///   replaced by a regular file. Opening a FIFO waits for a reader, as any Unix program does.
/// - Anything else (a folder, a block device, a socket) is refused.
///
/// `checkWritable` runs the same checks without touching anything, so commands can fail before
/// spending time on work whose result could not be saved.
public enum OutputFile {
    /// What is at a path, symbolic links followed.
    enum Kind: Equatable {
        case absent
        case regular(mode: mode_t)
        case stream  // character device or FIFO
        case other(String)
    }

    /// The path with symbolic links followed (also a dangling link's target), at most 40 deep.
    static func resolved(_ path: String) throws -> String {
        var p = path
        for _ in 0..<40 {
            var st = stat()
            guard lstat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return p }
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(p, &buf, Int(PATH_MAX))
            guard n > 0 else { throw NoiseError.io("cannot read the symbolic link \(p): \(errnoText())") }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            p = target.hasPrefix("/") ? target : (p as NSString).deletingLastPathComponent + "/" + target
        }
        throw NoiseError.io("\(path): too many levels of symbolic links")
    }

    static func kind(_ path: String) -> Kind {
        var st = stat()
        guard stat(path, &st) == 0 else { return .absent }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .regular(mode: st.st_mode & 0o7777)
        case S_IFCHR, S_IFIFO: return .stream
        case S_IFDIR: return .other("a folder")
        case S_IFBLK: return .other("a block device")
        case S_IFSOCK: return .other("a socket")
        default: return .other("not a regular file")
        }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    static func folder(of path: String) -> String {
        let dir = (path as NSString).deletingLastPathComponent
        return dir.isEmpty ? "." : dir
    }

    /// Checks that `url` can be written, touching nothing: its extension (lower-cased, without
    /// the dot) is one of `extensions` when given, the folder exists and is writable, and what is
    /// at the path is a writable regular file, character device or FIFO, or nothing.
    public static func checkWritable(_ url: URL, extensions: [String]? = nil, option: String = "--out") throws {
        let path = url.relativePath
        if let extensions {
            let ext = url.pathExtension.lowercased()
            guard extensions.contains(ext) else {
                let list = extensions.map { "." + $0 }.joined(separator: " or ")
                throw NoiseError.invalidArgument("\(option) \(Text.quoted(path)): the file name must end in \(list)")
            }
        }
        if url.hasDirectoryPath { throw NoiseError.io("cannot write \(path)/: the name ends in '/', which names a folder") }
        let target = try resolved(path)
        switch kind(target) {
        case .absent:
            let dir = folder(of: target)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                throw NoiseError.io("cannot write \(path): the folder \(dir) does not exist")
            }
            guard access(dir, W_OK | X_OK) == 0 else {
                throw NoiseError.io("cannot write \(path): the folder \(dir) is not writable")
            }
        case .regular:
            guard access(target, W_OK) == 0 else { throw NoiseError.io("cannot write \(path): \(errnoText())") }
            guard access(folder(of: target), W_OK | X_OK) == 0 else {
                throw NoiseError.io("cannot write \(path): its folder is not writable (the file is replaced atomically)")
            }
        case .stream:
            guard access(target, W_OK) == 0 else { throw NoiseError.io("cannot write \(path): \(errnoText())") }
        case .other(let what):
            throw NoiseError.io("cannot write \(path): it is \(what)")
        }
    }

    /// Writes `data` to `url` by the rules above.
    public static func write(_ data: Data, to url: URL) throws {
        let path = url.relativePath
        if url.hasDirectoryPath { throw NoiseError.io("cannot write \(path)/: the name ends in '/', which names a folder") }
        let target = try resolved(path)
        switch kind(target) {
        case .absent: try replace(target, with: data, mode: nil, shownAs: path)
        case .regular(let mode): try replace(target, with: data, mode: mode, shownAs: path)
        case .stream: try stream(target, data, shownAs: path)
        case .other(let what): throw NoiseError.io("cannot write \(path): it is \(what)")
        }
    }

    /// Temporary file in the same folder, flushed, then renamed over `target`. Temporaries that
    /// killed writers of the same path left behind are removed first.
    private static func replace(_ target: String, with data: Data, mode: mode_t?, shownAs path: String) throws {
        removeStaleTemporaries(of: URL(fileURLWithPath: target), keepingOwn: true)
        let dir = folder(of: target)
        let name = (target as NSString).lastPathComponent
        let tmp = dir + "/.\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func failure(_ what: String) -> NoiseError { .io("cannot write \(path): \(what): \(errnoText())") }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw failure("cannot create a temporary file in \(dir)") }
        var failed: NoiseError?
        if let mode, fchmod(fd, mode) != 0 { failed = failure("cannot keep the file's permissions") }
        if failed == nil && !writeAll(fd, data) { failed = failure("write failed") }
        if failed == nil && fsync(fd) != 0 { failed = failure("fsync failed") }
        if close(fd) != 0 && failed == nil { failed = failure("close failed") }
        if failed == nil && rename(tmp, target) != 0 { failed = failure("rename failed") }
        if let failed {
            unlink(tmp)
            throw failed
        }
    }

    /// Writes into a character device or FIFO as it is.
    private static func stream(_ target: String, _ data: Data, shownAs path: String) throws {
        let fd = open(target, O_WRONLY | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw NoiseError.io("cannot write \(path): \(errnoText())") }
        let ok = writeAll(fd, data)
        let err = errnoText()
        close(fd)
        guard ok else { throw NoiseError.io("cannot write \(path): write failed: \(err)") }
    }

    /// Writes every byte (retrying short writes and EINTR).
    static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            guard var p = raw.baseAddress else { return true }
            var left = raw.count
            while left > 0 {
                let n = Foundation.write(fd, p, left)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                p += n
                left -= n
            }
            return true
        }
    }

    /// Removes temporary files `.NAME.tmp-*` that an interrupted write of `url` left in its
    /// folder (those of live processes are kept, and this process's own with `keepingOwn`), and
    /// a `.NAME.lock` of an `OutputClaim` that no process holds. Returns how many were removed.
    @discardableResult
    public static func removeStaleTemporaries(of url: URL, keepingOwn: Bool = false) -> Int {
        guard let target = try? resolved(url.path) else { return 0 }
        let dir = folder(of: target)
        let prefix = ".\((target as NSString).lastPathComponent).tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return 0 }
        var removed = 0
        // Earlier versions named them .NAME.UUID.tmp.
        let oldPrefix = ".\((target as NSString).lastPathComponent)."
        for name in names where !name.hasPrefix(prefix) && name.hasPrefix(oldPrefix) && name.hasSuffix(".tmp")
            && name.count == oldPrefix.count + 36 + 4 && UUID(uuidString: String(name.dropFirst(oldPrefix.count).prefix(36))) != nil {
            if unlink(dir + "/" + name) == 0 { removed += 1 }
        }
        for name in names where name.hasPrefix(prefix) {
            // .NAME.tmp-PID-RANDOM: keep the files of a process that is still running.
            let pidText = name.dropFirst(prefix.count).split(separator: "-").first.map(String.init) ?? ""
            if let pid = Int32(pidText), pid == getpid() ? keepingOwn : (kill(pid, 0) == 0 || errno == EPERM) { continue }
            if unlink(dir + "/" + name) == 0 { removed += 1 }
        }
        let lock = dir + "/" + OutputClaim.lockName(of: target)
        if names.contains(OutputClaim.lockName(of: target)) {
            let fd = open(lock, O_RDWR | O_CLOEXEC)
            if fd >= 0 {
                // Unheld: its holder was killed. Removed while locked, so no one can take it meanwhile.
                if flock(fd, LOCK_EX | LOCK_NB) == 0, unlink(lock) == 0 { removed += 1 }
                close(fd)
            }
        }
        return removed
    }
}

/// An exclusive claim on an output path (a training checkpoint) held for as long as the object
/// lives: a second process that claims the same path is refused at once, with the holder's
/// process id, instead of both writing it in turn. The claim is an advisory lock (`flock`) on a
/// hidden `.NAME.lock` beside the path, so the kernel releases it when the holder exits or is
/// killed; the file is removed on release (and a killed holder's by the next claim or write).
public final class OutputClaim: @unchecked Sendable {
    public let path: String
    private let lockPath: String
    private var fd: Int32 = -1
    private let lock = NSLock()

    static func lockName(of target: String) -> String { ".\((target as NSString).lastPathComponent).lock" }

    /// Claims `url`; `what` finishes the refusal's message (e.g. "choose another --checkpoint").
    public init(_ url: URL, what: String) throws {
        path = url.relativePath
        let target = try OutputFile.resolved(path)
        lockPath = OutputFile.folder(of: target) + "/" + Self.lockName(of: target)
        for _ in 0 ..< 100 {
            let f = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard f >= 0 else {
                throw NoiseError.io("cannot claim \(path): cannot create \(lockPath): \(OutputFile.errnoText())")
            }
            guard flock(f, LOCK_EX | LOCK_NB) == 0 else {
                var buf = [UInt8](repeating: 0, count: 32)
                let n = pread(f, &buf, 31, 0)
                close(f)
                let holder = n > 0 ? String(decoding: buf[0 ..< n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
                throw NoiseError.io("\(path) is being written by another run (process \(holder)): \(what)")
            }
            // The last holder may have removed the file between our open and our lock: then the
            // lock is on a file no one else will see; try again on the new one.
            var held = stat(), named = stat()
            if fstat(f, &held) == 0, stat(lockPath, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev {
                let pid = Data("\(getpid())\n".utf8)
                _ = ftruncate(f, 0)
                _ = OutputFile.writeAll(f, pid)
                fd = f
                return
            }
            close(f)
        }
        throw NoiseError.io("cannot claim \(path): its lock file \(lockPath) keeps changing")
    }

    /// Gives the claim up (also on deinit).
    public func release() {
        lock.lock()
        defer { lock.unlock() }
        guard fd >= 0 else { return }
        unlink(lockPath)
        close(fd)
        fd = -1
    }

    deinit { release() }
}

/// Reading a user's input file (memory-mapped where safe) with errors in words (missing, a
/// folder, unreadable) instead of Foundation's error domains and numbers.
public enum InputFile {
    public static func contents(of url: URL) throws -> Data {
        let path = url.relativePath
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw NoiseError.io("cannot read \(path): \(errno == ENOENT ? "no such file" : OutputFile.errnoText())")
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw NoiseError.io("cannot read \(path): it is a folder, not a file")
        case S_IFCHR, S_IFBLK: throw NoiseError.io("cannot read \(path): it is a device, not a regular file")
        case S_IFIFO: throw NoiseError.io("cannot read \(path): it is a pipe (FIFO), not a regular file")
        case S_IFSOCK: throw NoiseError.io("cannot read \(path): it is a socket, not a regular file")
        default: throw NoiseError.io("cannot read \(path): not a regular file")
        }
        guard access(path, R_OK) == 0 else { throw NoiseError.io("cannot read \(path): \(OutputFile.errnoText())") }
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw NoiseError.io("cannot read \(path): \(error.localizedDescription)")
        }
    }
}
