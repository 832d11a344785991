import Foundation

/// What a file is, told by its first bytes, so that a reader handed the wrong kind of file says
/// what it got ("a PNG image, not a safetensors file") instead of a parse error about bytes that
/// were never meant for it.
public enum FileKind: Equatable, Sendable {
    case empty
    /// 8-byte little-endian header length, then a JSON object.
    case safetensors
    /// PyTorch 1.6+ `torch.save` files are zip archives.
    case zip
    /// A pickle of protocol 2 or later: a legacy (pre-1.6) PyTorch checkpoint starts like this.
    case pickle
    /// The oldest `torch.save` format.
    case tar
    case npy
    case png
    case gzip
    case json
    /// Something else: its first bytes in hex.
    case unknown(String)

    /// How messages name the kind ("a PNG image").
    public var name: String {
        switch self {
        case .empty: return "an empty file (0 bytes)"
        case .safetensors: return "a safetensors file"
        case .zip: return "a zip archive (a PyTorch checkpoint?)"
        case .pickle: return "a pickle (a legacy PyTorch checkpoint?)"
        case .tar: return "a tar archive"
        case .npy: return "a .npy array"
        case .png: return "a PNG image"
        case .gzip: return "a gzip stream"
        case .json: return "JSON text"
        case .unknown(let head): return "a file of unknown kind (it starts with bytes \(head))"
        }
    }

    public static func of(_ data: Data) -> FileKind {
        data.withUnsafeBytes { of(ByteView(raw: $0)) }
    }

    static func of(_ b: ByteView) -> FileKind {
        guard b.count > 0 else { return .empty }
        if b.u32(0) == ZipArchive.localSignature || b.u32(0) == 0x0605_4B50 { return .zip }
        // Before the pickle test: a header length whose low byte is 0x80 is not a pickle.
        if let n = b.u64(0), n <= UInt64(b.count - 8), let c = b.u8(8), c == UInt8(ascii: "{") || c == UInt8(ascii: " ") {
            return .safetensors
        }
        if b.u8(0) == 0x80, let p = b.u8(1), (2 ... 5).contains(p) { return .pickle }
        if let magic = b.slice(257, 5), Array(magic) == Array("ustar".utf8) { return .tar }
        if let m = b.slice(0, 6), Array(m) == [0x93] + Array("NUMPY".utf8) { return .npy }
        if let m = b.slice(0, 8), Array(m) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        if b.u8(0) == 0x1F, b.u8(1) == 0x8B { return .gzip }
        if b.u8(0) == UInt8(ascii: "{") || b.u8(0) == UInt8(ascii: "[") { return .json }
        let head = b.slice(0, min(8, b.count)).map { Array($0) } ?? []
        return .unknown(head.map { String(format: "%02x", $0) }.joined(separator: " "))
    }
}
