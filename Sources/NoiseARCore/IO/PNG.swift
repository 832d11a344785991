import CPNG
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An 8-bit RGB image with PNG text chunks, read and written through libpng.
///
/// Pixels go through libpng's simplified `png_image` API (which keeps libpng's longjmp error
/// handling inside the library). Text chunks are handled on the byte stream: written as `tEXt`
/// (Latin-1 text) or uncompressed `iTXt` (anything else, UTF-8) chunks right after `IHDR`, read
/// from `tEXt`, `zTXt` and `iTXt` chunks (a chunk with a bad CRC is skipped).
///
/// Reading expands every PNG kind to 8-bit RGB: gray, palette, 16-bit (treated as sRGB-encoded
/// when the file has no gamma information) and alpha (composited over black).
public struct PNGImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// Row-major RGB bytes (HWC), `width * height * 3`.
    public var pixels: [UInt8]
    /// Text chunks: key (1-79 Latin-1 characters, no leading, trailing or double spaces) to value.
    public var text: [String: String]

    /// Largest width or height accepted on read.
    public static let maxDimension = 1 << 15
    /// Largest pixel count accepted on read.
    public static let maxPixels = 1 << 27

    public init(width: Int, height: Int, pixels: [UInt8], text: [String: String] = [:]) {
        self.width = width
        self.height = height
        self.pixels = pixels
        self.text = text
    }

    // MARK: Writing

    /// The PNG file's bytes. Throws `invalidArgument` for a bad size, pixel count or text key.
    public func encoded() throws -> Data {
        try require(width > 0 && height > 0 && width <= PNGImage.maxDimension && height <= PNGImage.maxDimension,
                    "PNG size \(width)x\(height) must be 1...\(PNGImage.maxDimension) on each side")
        try require(pixels.count == width * height * 3,
                    "expected \(width)x\(height)x3 = \(width * height * 3) bytes of RGB, got \(pixels.count)")
        let chunks = try text.sorted { $0.key < $1.key }.map { try PNGImage.textChunk(key: $0.key, value: $0.value) }

        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_RGB)
        var size = 0
        let stride = Int32(width * 3)
        var ok = pixels.withUnsafeBytes { png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, stride, nil) }
        guard ok != 0, size > 0 else {
            throw NoiseError.io("libpng could not encode the image: \(PNGImage.message(&image))")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        ok = pixels.withUnsafeBytes { src in
            bytes.withUnsafeMutableBytes { dst in
                png_image_write_to_memory(&image, dst.baseAddress, &size, 0, src.baseAddress, stride, nil)
            }
        }
        guard ok != 0 else { throw NoiseError.io("libpng could not encode the image: \(PNGImage.message(&image))") }
        png_image_free(&image)
        bytes.removeSubrange(size...)
        // Signature (8) + IHDR (4 length + 4 type + 13 data + 4 CRC) = 33.
        guard bytes.count > 33, Array(bytes[12..<16]) == Array("IHDR".utf8) else {
            throw NoiseError.io("libpng produced a PNG stream without a leading IHDR chunk")
        }
        bytes.insert(contentsOf: chunks.joined(), at: 33)
        return Data(bytes)
    }

    /// Writes the PNG by `OutputFile`'s rules: a regular file is replaced atomically, a device or
    /// FIFO is written into. Throws `io` naming the path when it cannot be written.
    public func write(to url: URL) throws {
        try OutputFile.write(try encoded(), to: url)
    }

    // MARK: Reading

    /// Reads a PNG file. Throws `io` for a missing or unreadable file, `format` for a corrupt one.
    public static func read(from url: URL) throws -> PNGImage {
        try decode(InputFile.contents(of: url), source: url.path)
    }

    /// Decodes PNG bytes; `source` names them in errors. Throws `format` for corrupt data.
    public static func decode(_ data: Data, source: String = "<memory>") throws -> PNGImage {
        let bytes = [UInt8](data)
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else {
            throw NoiseError.format("\(source): not a PNG file (bad signature)")
        }
        try checkChunkLengths(bytes, source: source)
        let text = textChunks(bytes)
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        return try bytes.withUnsafeBytes { raw -> PNGImage in
            // libpng reads from this memory in both calls; it stays alive for the whole closure.
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else {
                throw NoiseError.format("\(source): corrupt PNG: \(message(&image))")
            }
            let w = Int(image.width), h = Int(image.height)
            // Overflow-checked: the limits keep these small, but a hostile header must never trap.
            let (count, overflow) = w.multipliedReportingOverflow(by: h)
            let (bytes, overflow3) = count.multipliedReportingOverflow(by: 3)
            let (rowBytes, overflowRow) = w.multipliedReportingOverflow(by: 3)
            guard w > 0, h > 0, w <= maxDimension, h <= maxDimension, !overflow, !overflow3, !overflowRow,
                  count <= maxPixels, rowBytes <= Int(Int32.max) else {
                png_image_free(&image)
                throw NoiseError.format("\(source): PNG size \(w)x\(h) is beyond the supported \(maxDimension) per side / \(maxPixels) pixels")
            }
            image.format = UInt32(PNG_FORMAT_RGB)
            image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
            var pixels = [UInt8](repeating: 0, count: bytes)
            var background = png_color(red: 0, green: 0, blue: 0)
            let ok = pixels.withUnsafeMutableBytes { dst in
                png_image_finish_read(&image, &background, dst.baseAddress, Int32(rowBytes), nil)
            }
            guard ok != 0 else {
                let m = message(&image)
                png_image_free(&image)
                throw NoiseError.format("\(source): corrupt PNG: \(m)")
            }
            png_image_free(&image)
            return PNGImage(width: w, height: h, pixels: pixels, text: text)
        }
    }

    /// The image enlarged `factor` times by pixel repetition (nearest), keeping its text.
    public func scaled(by factor: Int) throws -> PNGImage {
        try require(factor >= 1, "scale factor must be at least 1, got \(factor)")
        if factor == 1 { return self }
        let w = width * factor, h = height * factor
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let src = ((y / factor) * width + x / factor) * 3, dst = (y * w + x) * 3
                out[dst] = pixels[src]; out[dst + 1] = pixels[src + 1]; out[dst + 2] = pixels[src + 2]
            }
        }
        return PNGImage(width: w, height: h, pixels: out, text: text)
    }

    // MARK: Grid

    /// Tiles equally sized images into one image, row-major, `columns` per row (default: the
    /// ceiling of the square root of the count), `spacing` pixels of `background` between tiles and
    /// around the edge. The grid carries `text`.
    public static func grid(_ images: [PNGImage], columns: Int? = nil, spacing: Int = 2,
                            background: (red: UInt8, green: UInt8, blue: UInt8) = (255, 255, 255),
                            text: [String: String] = [:]) throws -> PNGImage {
        guard let first = images.first else { throw NoiseError.invalidArgument("a grid needs at least one image") }
        let w = first.width, h = first.height
        for (i, im) in images.enumerated() {
            try require(im.width == w && im.height == h,
                        "grid images must share one size: image 0 is \(w)x\(h), image \(i) is \(im.width)x\(im.height)")
            try require(im.pixels.count == w * h * 3, "image \(i) holds \(im.pixels.count) bytes, not \(w * h * 3)")
        }
        try require(spacing >= 0, "grid spacing must be at least 0, got \(spacing)")
        let cols = columns ?? Int(Double(images.count).squareRoot().rounded(.up))
        try require(cols >= 1, "grid columns must be at least 1, got \(cols)")
        let rows = (images.count + cols - 1) / cols
        let gw = cols * w + (cols + 1) * spacing, gh = rows * h + (rows + 1) * spacing
        try require(gw <= maxDimension && gh <= maxDimension, "grid of \(gw)x\(gh) pixels is too large")
        var out = [UInt8](repeating: 0, count: gw * gh * 3)
        for p in 0..<(gw * gh) {
            out[p * 3] = background.red
            out[p * 3 + 1] = background.green
            out[p * 3 + 2] = background.blue
        }
        for (i, im) in images.enumerated() {
            let x0 = spacing + (i % cols) * (w + spacing), y0 = spacing + (i / cols) * (h + spacing)
            for y in 0..<h {
                let dst = ((y0 + y) * gw + x0) * 3
                out.replaceSubrange(dst..<(dst + w * 3), with: im.pixels[(y * w * 3)..<((y + 1) * w * 3)])
            }
        }
        return PNGImage(width: gw, height: gh, pixels: out, text: text)
    }

    // MARK: Chunks

    static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]

    static func crc(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
    }

    static func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + body
        let n = UInt32(body.count), c = crc(typed)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + typed
            + [UInt8(c >> 24), UInt8((c >> 16) & 0xFF), UInt8((c >> 8) & 0xFF), UInt8(c & 0xFF)]
    }

    /// Latin-1 bytes of a string, or nil when it has characters beyond U+00FF.
    static func latin1(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        for u in s.unicodeScalars {
            guard u.value <= 0xFF else { return nil }
            out.append(UInt8(u.value))
        }
        return out
    }

    static func textChunk(key: String, value: String) throws -> [UInt8] {
        guard let k = latin1(key), (1...79).contains(k.count),
              k.allSatisfy({ (32...126).contains($0) || $0 >= 161 }),
              k.first != 32, k.last != 32, !key.contains("  ")
        else {
            throw NoiseError.invalidArgument(
                "PNG text key \"\(key)\" must be 1-79 printable Latin-1 characters without leading, trailing or double spaces")
        }
        try require(!value.unicodeScalars.contains("\0"), "PNG text value for \"\(key)\" contains a NUL character")
        if let v = latin1(value) { return chunk("tEXt", k + [0] + v) }
        // iTXt: key, NUL, compression flag 0, method 0, empty language tag, NUL, empty translated key, NUL, UTF-8 text.
        return chunk("iTXt", k + [0, 0, 0, 0, 0] + Array(value.utf8))
    }

    /// The text chunks of a PNG byte stream (signature already checked). Malformed text chunks
    /// are skipped; structural damage is left for libpng to report.
    /// Every chunk's declared length must lie inside the file: libpng allocates a chunk's
    /// declared size before it reads it, so a 116-byte file declaring a 134 MB text chunk would
    /// cost that much memory (and more) before failing.
    static func checkChunkLengths(_ bytes: [UInt8], source: String) throws {
        var pos = 8
        while pos < bytes.count {
            guard pos + 12 <= bytes.count else {
                throw NoiseError.format("\(source): corrupt PNG: a truncated chunk at byte \(pos) (the file has \(bytes.count) bytes)")
            }
            let n = Int(bytes[pos]) << 24 | Int(bytes[pos + 1]) << 16 | Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
            let type = String(decoding: bytes[(pos + 4)..<(pos + 8)].map { (0x20 ... 0x7E).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            guard n <= bytes.count - pos - 12 else {
                throw NoiseError.format("\(source): corrupt PNG: chunk '\(type)' at byte \(pos) declares \(n) bytes, past the end of the file (\(bytes.count) bytes)")
            }
            pos += 12 + n
            if type == "IEND" { return }
        }
    }

    static func textChunks(_ bytes: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        var pos = 8
        while pos + 12 <= bytes.count {
            let n = Int(bytes[pos]) << 24 | Int(bytes[pos + 1]) << 16 | Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
            let type = String(decoding: bytes[(pos + 4)..<(pos + 8)], as: UTF8.self)
            guard n <= bytes.count - pos - 12 else { break }
            let body = Array(bytes[(pos + 8)..<(pos + 8 + n)])
            let stored = UInt32(bytes[pos + 8 + n]) << 24 | UInt32(bytes[pos + 9 + n]) << 16
                | UInt32(bytes[pos + 10 + n]) << 8 | UInt32(bytes[pos + 11 + n])
            pos += 12 + n
            if type == "IEND" { break }
            guard type == "tEXt" || type == "zTXt" || type == "iTXt",
                  crc(Array(type.utf8) + body) == stored,
                  let nul = body.firstIndex(of: 0), nul > 0
            else { continue }
            let key = String(body[..<nul].map { Character(Unicode.Scalar($0)) })
            let rest = Array(body[(nul + 1)...])
            switch type {
            case "tEXt":
                out[key] = String(rest.map { Character(Unicode.Scalar($0)) })
            case "zTXt":
                guard rest.first == 0, let inflated = inflate(Array(rest.dropFirst())) else { continue }
                out[key] = String(inflated.map { Character(Unicode.Scalar($0)) })
            default:  // iTXt
                guard rest.count >= 2 else { continue }
                let compressed = rest[0] == 1
                var tail = Array(rest[2...])
                // Skip the language tag and the translated keyword.
                guard let l = tail.firstIndex(of: 0) else { continue }
                tail = Array(tail[(l + 1)...])
                guard let t = tail.firstIndex(of: 0) else { continue }
                tail = Array(tail[(t + 1)...])
                if compressed {
                    guard rest[1] == 0, let inflated = inflate(tail) else { continue }
                    tail = inflated
                }
                guard let s = String(validating: tail, as: UTF8.self) else { continue }
                out[key] = s
            }
        }
        return out
    }

    /// zlib-inflates a text chunk's body (at most 16 MiB out), nil on failure.
    static func inflate(_ input: [UInt8]) -> [UInt8]? {
        var capacity = max(256, input.count * 4)
        while capacity <= 16 << 20 {
            var out = [UInt8](repeating: 0, count: capacity)
            var outLen = uLongf(capacity)
            let rc = out.withUnsafeMutableBufferPointer { o in
                input.withUnsafeBufferPointer { i in uncompress(o.baseAddress, &outLen, i.baseAddress, uLong(i.count)) }
            }
            if rc == Z_OK { return Array(out[0..<Int(outLen)]) }
            if rc != Z_BUF_ERROR { return nil }
            capacity *= 4
        }
        return nil
    }

    /// The png_image's error message.
    static func message(_ image: inout png_image) -> String {
        let m = withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return m.isEmpty ? "unknown libpng error" : m
    }
}
