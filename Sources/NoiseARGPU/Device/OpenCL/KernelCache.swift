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
/// Entries are written atomically (temp file + rename) and carry a checksum, so a torn or
/// corrupt entry is detected and rebuilt.
struct KernelDiskCache {
    static let magic = Data("NOISEAR-CLBIN-1\n".utf8)
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

    /// The stored binary, or nil when absent or failing its checksum.
    func load(_ key: String) -> Data? {
        guard let url = url(key), let data = try? Data(contentsOf: url),
            data.count > Self.magic.count + 64, data.prefix(Self.magic.count) == Self.magic
        else { return nil }
        let sumStart = Self.magic.count
        let sum = String(decoding: data[sumStart..<(sumStart + 64)], as: UTF8.self)
        let binary = data.suffix(from: sumStart + 64)
        guard sha256Hex(Data(binary)) == sum else { return nil }
        return Data(binary)
    }

    /// Stores a binary; failures are ignored (the cache is an optimisation).
    func store(_ key: String, _ binary: Data) {
        guard let directory, let url = url(key) else { return }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var blob = Self.magic
            blob.append(Data(sha256Hex(binary).utf8))
            blob.append(binary)
            try blob.write(to: url, options: .atomic)
        } catch {
            return
        }
    }
}
