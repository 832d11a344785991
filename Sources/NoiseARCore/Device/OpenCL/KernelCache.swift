import CCrypto
import Foundation

/// Kernel sources (embedded at build time, or read from `NOISEAR_KERNEL_DIR`) and the on-disk
/// cache of compiled program binaries.
enum KernelSources {
    /// The text of `Kernels/<file>`: from `NOISEAR_KERNEL_DIR` when set, else embedded.
    static func text(_ file: String,
                     environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> String
    {
        if let dir = environment["NOISEAR_KERNEL_DIR"], !dir.isEmpty {
            let path = URL(fileURLWithPath: dir).appendingPathComponent(file).path
            guard let data = FileManager.default.contents(atPath: path) else {
                throw NoiseError.io("NOISEAR_KERNEL_DIR: cannot read \(path)")
            }
            return String(decoding: data, as: UTF8.self)
        }
        guard let text = EmbeddedKernels.sources[file] else {
            throw NoiseError.io("no embedded kernel file \(file)")
        }
        return text
    }

    /// A program's full source: the shared header, then the file.
    static func program(_ file: String, environment: [String: String]) throws -> String {
        try text("common.h", environment: environment) + "\n" + text(file, environment: environment)
    }
}

/// SHA-256 hex digest.
func sha256Hex(_ data: Data) -> String {
    var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
    data.withUnsafeBytes { raw in
        _ = SHA256(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &digest)
    }
    return digest.map { String(format: "%02x", $0) }.joined()
}

/// On-disk program binaries, keyed by SHA-256 of (source, options, device, driver, platform).
///
/// An entry is `<key>.bin`:
///
///     "NOISEAR-CLBIN-2\n"   16 bytes, format version
///     key                   64 hex digits, the entry's own key
///     size                  16 hex digits, the binary's length in bytes
///     checksum              64 hex digits, SHA-256 of the three fields above and the binary
///     binary
///
/// `load` accepts an entry only when all of it checks out (version, key, exact length,
/// checksum), so a torn, truncated, corrupt, old-format or misfiled entry never reaches the
/// driver: it is ignored, rebuilt from source and overwritten. Writes are atomic (temp file +
/// rename).
struct KernelDiskCache {
    static let magic = Data("NOISEAR-CLBIN-2\n".utf8)
    static let keyLength = 64, sizeLength = 16, sumLength = 64
    static var headerLength: Int { magic.count + keyLength + sizeLength + sumLength }
    let directory: URL?

    /// From `NOISEAR_KERNEL_CACHE` (off | DIR), else `$XDG_CACHE_HOME/noisear-gpu/kernels`
    /// or `~/.cache/noisear-gpu/kernels`.
    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let setting = environment["NOISEAR_KERNEL_CACHE"] ?? ""
        if setting == "off" || setting == "0" {
            directory = nil
        } else if !setting.isEmpty {
            directory = URL(fileURLWithPath: setting)
        } else if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty {
            directory = URL(fileURLWithPath: xdg).appendingPathComponent("noisear-gpu/kernels")
        } else {
            let home = environment["HOME"] ?? NSTemporaryDirectory()
            directory = URL(fileURLWithPath: home).appendingPathComponent(".cache/noisear-gpu/kernels")
        }
    }

    static func key(source: String, options: String, device: DeviceInfo) -> String {
        let parts = [source, options, device.name, device.vendor, device.driverVersion, device.platform]
        return sha256Hex(Data(parts.joined(separator: "\u{0}").utf8))
    }

    func url(_ key: String) -> URL? { directory?.appendingPathComponent(key + ".bin") }

    /// The stored binary, or nil when absent or failing any check.
    func load(_ key: String) -> Data? {
        guard let url = url(key), let data = try? Data(contentsOf: url) else { return nil }
        return Self.decode(data, key: key)
    }

    /// An entry's bytes for `binary` under `key`.
    static func encode(key: String, binary: Data) -> Data {
        var head = magic
        head.append(Data(key.utf8))
        head.append(Data(String(format: "%016llx", UInt64(binary.count)).utf8))
        var summed = head
        summed.append(binary)
        var blob = head
        blob.append(Data(sha256Hex(summed).utf8))
        blob.append(binary)
        return blob
    }

    /// The binary of an entry when it is a well-formed entry for `key`, else nil.
    static func decode(_ stored: Data, key: String) -> Data? {
        let data = Data(stored)  // zero-based indices
        let keyStart = magic.count, sizeStart = keyStart + keyLength
        let sumStart = sizeStart + sizeLength, binStart = sumStart + sumLength
        guard data.count >= binStart, data.prefix(magic.count) == magic,
            key.utf8.count == keyLength,
            data[keyStart..<sizeStart].elementsEqual(key.utf8),
            let size = UInt64(String(decoding: data[sizeStart..<sumStart], as: UTF8.self), radix: 16),
            size > 0, size == UInt64(data.count - binStart)
        else { return nil }
        var summed = Data(data[0..<sumStart])
        summed.append(data[binStart...])
        guard data[sumStart..<binStart].elementsEqual(sha256Hex(summed).utf8) else { return nil }
        return Data(data[binStart...])
    }

    /// Stores a binary; failures are ignored (the cache is an optimisation).
    func store(_ key: String, _ binary: Data) {
        guard let directory, let url = url(key) else { return }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Self.encode(key: key, binary: binary).write(to: url, options: .atomic)
        } catch {
            return
        }
    }
}
