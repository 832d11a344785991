import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A host-side float32 tensor: a row-major shape and its contiguous values.
public struct HostTensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        self.shape = shape
        self.data = data
    }
}

/// A safetensors file held in memory, every tensor converted to float32.
///
/// Format: an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON mapping each tensor
/// name to `{"dtype", "shape", "data_offsets"}` (offsets relative to byte `8 + N`) plus an optional
/// `"__metadata__"` string map, then the data section.
public struct SafeTensorsFile: Sendable {
    public var tensors: [String: HostTensor]
    public var metadata: [String: String]
    /// Original dtype of each tensor as read ("F32", "F16", "BF16", "F64"). Tensors skipped by
    /// `skippingUnsupported: true` are listed here with their dtype but are absent from `tensors`.
    public var dtypes: [String: String]
    /// Where the file came from (its path, or "<memory>"); used in error messages.
    public var source: String

    public init(tensors: [String: HostTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
        self.dtypes = tensors.mapValues { _ in "F32" }
        self.source = "<memory>"
    }

    /// The largest header accepted (bytes).
    public static let maxHeaderLength = 100_000_000

    /// Reads and parses a file. Errors name the path.
    ///
    /// - Parameter skippingUnsupported: when true, tensors of a known but unsupported dtype
    ///   (integers, BOOL, F8) are validated, then left out of `tensors` (their dtype stays in
    ///   `dtypes`) instead of failing the whole file.
    /// The `__metadata__` of a file (the whole file is checked as `read` checks it).
    public static func readMetadata(_ url: URL) throws -> [String: String] {
        try read(url, skippingUnsupported: true).metadata
    }

    public static func read(_ url: URL, skippingUnsupported: Bool = false) throws -> SafeTensorsFile {
        try parse(InputFile.contents(of: url), source: url.path, skippingUnsupported: skippingUnsupported)
    }

    /// Parses the bytes of a safetensors file. `source` names the file in error messages.
    public static func parse(_ data: Data, source: String = "<memory>",
                             skippingUnsupported: Bool = false) throws -> SafeTensorsFile {
        try data.withUnsafeBytes { raw in
            try parse(raw, source: source, skippingUnsupported: skippingUnsupported)
        }
    }

    /// How tensors are stored when written.
    public enum Storage: String, Sendable {
        case f32 = "F32"
        /// IEEE half precision (round to nearest even): half the size, for shipped weights.
        case f16 = "F16"
        var bytes: Int { self == .f32 ? 4 : 2 }
    }

    /// The file as bytes: every tensor as F32 (or F16), tensors in sorted key order, the header
    /// padded with spaces to a multiple of 8 bytes, `__metadata__` first when non-empty.
    public func serialized(as storage: Storage = .f32) throws -> Data {
        let names = tensors.keys.sorted()
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += Self.jsonString("__metadata__") + ":{"
            var firstMeta = true
            for key in metadata.keys.sorted() {
                if !firstMeta { header += "," }
                firstMeta = false
                header += Self.jsonString(key) + ":" + Self.jsonString(metadata[key] ?? "")
            }
            header += "}"
            first = false
        }
        var offset = 0
        for name in names {
            guard let t = tensors[name] else { continue }
            if name == "__metadata__" {
                throw NoiseError.invalidArgument("cannot serialize a tensor named __metadata__")
            }
            guard let count = Self.elementCount(t.shape) else {
                throw NoiseError.shapeMismatch(
                    "tensor '\(name)': shape \(t.shape) has a negative dimension or too many elements")
            }
            guard count == t.data.count else {
                throw NoiseError.shapeMismatch(
                    "tensor '\(name)': shape \(t.shape) needs \(count) values, has \(t.data.count)")
            }
            let end = offset + count * storage.bytes
            if !first { header += "," }
            first = false
            header += Self.jsonString(name) + ":{\"dtype\":\"\(storage.rawValue)\",\"shape\":["
                + t.shape.map(String.init).joined(separator: ",")
                + "],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        var out = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        for name in names {
            guard let t = tensors[name] else { continue }
            if storage == .f16 {
                let half = t.data.map { Float16($0).bitPattern.littleEndian }
                half.withUnsafeBytes { out.append(contentsOf: $0) }
                continue
            }
            #if _endian(little)
            t.data.withUnsafeBytes { out.append(contentsOf: $0) }
            #else
            var le = [UInt32](repeating: 0, count: t.data.count)
            for i in 0..<t.data.count { le[i] = t.data[i].bitPattern.littleEndian }
            le.withUnsafeBytes { out.append(contentsOf: $0) }
            #endif
        }
        return out
    }

    /// Writes the file by `OutputFile`'s rules: a regular file is replaced atomically (temporary
    /// file in the same folder, then a rename), a device or FIFO is written into.
    public func write(to url: URL, as storage: Storage = .f32) throws {
        try OutputFile.write(try serialized(as: storage), to: url)
    }

    public subscript(_ name: String) -> HostTensor? { tensors[name] }

    /// The named tensor, or an error naming the missing key and a few available ones.
    public func tensor(_ name: String) throws -> HostTensor {
        if let t = tensors[name] { return t }
        if let dtype = dtypes[name] {
            throw NoiseError.safetensors(
                "\(source): tensor '\(name)' exists with unsupported dtype \(dtype) (supported: \(Self.supportedDtypes))")
        }
        // Suggest the names sharing the longest prefix with the requested one.
        func commonPrefix(_ a: String) -> Int {
            zip(a.utf8, name.utf8).prefix { $0 == $1 }.count
        }
        let ranked = tensors.keys.sorted { a, b in
            let pa = commonPrefix(a), pb = commonPrefix(b)
            return pa != pb ? pa > pb : a < b
        }
        let shown = ranked.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
        let more = ranked.count > 5 ? ", ..." : ""
        throw NoiseError.safetensors(
            "\(source): no tensor named '\(name)' (\(tensors.count) tensors, e.g. \(shown)\(more))")
    }
}

// MARK: - Parsing

extension SafeTensorsFile {
    /// Byte size of each dtype this reader knows. Only F32/F16/BF16/F64 are converted.
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
        "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1,
        "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]
    static let convertible: Set<String> = ["F64", "F32", "F16", "BF16"]
    /// The convertible dtypes as error messages list them.
    static let supportedDtypes = "F32, F16, BF16, F64"

    private struct Entry {
        var name: String
        var dtype: String
        var shape: [Int]
        var count: Int
        var begin: Int
        var end: Int
    }

    private static func parse(_ raw: UnsafeRawBufferPointer, source: String,
                              skippingUnsupported: Bool) throws -> SafeTensorsFile {
        func fail(_ message: String) -> NoiseError { .safetensors("\(source): \(message)") }
        switch FileKind.of(ByteView(raw: raw)) {
        case .safetensors, .unknown: break
        case let kind: throw fail("this is \(kind.name), not a safetensors file")
        }

        guard raw.count >= 8 else {
            throw fail("file is \(raw.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength64 = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength64 <= UInt64(maxHeaderLength) else {
            throw fail("header length \(headerLength64) exceeds the limit of \(maxHeaderLength) bytes")
        }
        let headerLength = Int(headerLength64)
        guard headerLength <= raw.count - 8 else {
            throw fail("header length \(headerLength) runs past the end of the file (\(raw.count) bytes)")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: raw[8..<(8 + headerLength)])
        guard isValidUTF8(headerBytes) else {
            throw fail("header is not valid UTF-8")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw fail("header is not valid JSON (\(error.localizedDescription))")
        }
        guard let object = json as? [String: Any] else {
            throw fail("header is not a JSON object")
        }

        let dataStart = 8 + headerLength
        let dataSize = raw.count - dataStart
        var file = SafeTensorsFile()
        file.source = source

        var entries: [Entry] = []
        entries.reserveCapacity(object.count)
        for (name, value) in object {
            if name == "__metadata__" {
                file.metadata = try parseMetadata(value, fail: fail)
                continue
            }
            guard let entry = value as? [String: Any] else {
                throw fail("tensor '\(name)': entry is not a JSON object")
            }
            guard let dtypeValue = entry["dtype"] else {
                throw fail("tensor '\(name)': missing dtype")
            }
            guard let dtype = dtypeValue as? String, !(dtypeValue is NSNumber) else {
                throw fail("tensor '\(name)': dtype is not a string")
            }
            guard let size = dtypeSizes[dtype] else {
                throw fail("tensor '\(name)': unknown dtype \(dtype)")
            }
            if !convertible.contains(dtype) && !skippingUnsupported {
                throw fail("tensor '\(name)': unsupported dtype \(dtype) (supported: \(supportedDtypes))")
            }
            guard let shapeValue = entry["shape"] else {
                throw fail("tensor '\(name)': missing shape")
            }
            guard let shapeArray = shapeValue as? [Any] else {
                throw fail("tensor '\(name)': shape is not an array")
            }
            var shape: [Int] = []
            shape.reserveCapacity(shapeArray.count)
            for d in shapeArray {
                guard let v = jsonNonNegativeInt(d) else {
                    throw fail("tensor '\(name)': shape \(describe(shapeArray)) must hold non-negative integers")
                }
                shape.append(v)
            }
            guard let count = elementCount(shape) else {
                throw fail("tensor '\(name)': shape \(shape) has too many elements (its dimensions' product overflows)")
            }
            guard let offsetsValue = entry["data_offsets"] else {
                throw fail("tensor '\(name)': missing data_offsets")
            }
            guard let offsets = offsetsValue as? [Any], offsets.count == 2,
                  let begin = jsonNonNegativeInt(offsets[0]), let end = jsonNonNegativeInt(offsets[1])
            else {
                throw fail("tensor '\(name)': data_offsets must be two non-negative integers, got \(describe(offsetsValue))")
            }
            guard begin <= end else {
                throw fail("tensor '\(name)': data_offsets [\(begin), \(end)] has begin > end")
            }
            guard end <= dataSize else {
                throw fail("tensor '\(name)': data_offsets end \(end) is beyond the data section (\(dataSize) bytes)")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow, bytes == end - begin else {
                throw fail("tensor '\(name)': \(end - begin) bytes for \(dtype) shape \(shape) (expected \(count) x \(size))")
            }
            file.dtypes[name] = dtype
            entries.append(Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end))
        }

        // Overlapping byte ranges (empty ranges cannot overlap anything).
        let ranges = entries.filter { $0.end > $0.begin }.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }
        for i in ranges.indices.dropFirst() where ranges[i].begin < ranges[i - 1].end {
            let a = ranges[i - 1], b = ranges[i]
            throw fail("tensors '\(a.name)' [\(a.begin), \(a.end)) and '\(b.name)' [\(b.begin), \(b.end)) overlap")
        }

        for e in entries where convertible.contains(e.dtype) {
            let base = dataStart + e.begin
            let values = [Float](unsafeUninitializedCapacity: e.count) { buf, initialized in
                convert(raw, from: base, dtype: e.dtype, count: e.count, into: buf)
                initialized = e.count
            }
            file.tensors[e.name] = HostTensor(shape: e.shape, data: values)
        }
        return file
    }

    private static func parseMetadata(_ value: Any, fail: (String) -> NoiseError) throws -> [String: String] {
        if value is NSNull { return [:] }
        guard let map = value as? [String: Any] else {
            throw fail("__metadata__ is not a JSON object")
        }
        var out: [String: String] = [:]
        for (k, v) in map {
            guard let s = v as? String, !(v is NSNumber) else {
                throw fail("__metadata__ value for '\(k)' is not a string")
            }
            out[k] = s
        }
        return out
    }

    /// A JSON integer >= 0. Rejects booleans, non-integral or fractional-notation numbers, and
    /// integers beyond `Int`.
    private static func jsonNonNegativeInt(_ value: Any) -> Int? {
        guard let n = value as? NSNumber, !(n is NSDecimalNumber) else { return nil }
        let code = UInt8(bitPattern: n.objCType.pointee)
        // 'c' is how JSON booleans (and only those) come back; 'f'/'d' are numbers with a
        // fraction or exponent.
        guard code != UInt8(ascii: "c"), code != UInt8(ascii: "f"), code != UInt8(ascii: "d") else {
            return nil
        }
        guard let i = n as? Int, i >= 0 else { return nil }
        return i
    }

    private static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    private static func describe(_ value: Any) -> String {
        let text = String(describing: value).replacingOccurrences(of: "\n", with: " ")
        return text.count > 80 ? String(text.prefix(80)) + "..." : text
    }

    /// Product of the dimensions, or nil on a negative dimension or when the product of the
    /// non-zero dimensions overflows `Int` (even for an empty tensor: callers multiply the
    /// dimensions of a shape, and every partial product of an accepted shape fits).
    static func elementCount(_ shape: [Int]) -> Int? {
        var nonZero = 1
        var empty = false
        for d in shape {
            guard d >= 0 else { return nil }
            if d == 0 {
                empty = true
                continue
            }
            let (p, overflow) = nonZero.multipliedReportingOverflow(by: d)
            guard !overflow else { return nil }
            nonZero = p
        }
        return empty ? 0 : nonZero
    }

    /// Converts `count` little-endian values of `dtype` starting at byte `offset` of `raw`.
    /// The caller has checked the range lies inside `raw`.
    private static func convert(_ raw: UnsafeRawBufferPointer, from offset: Int, dtype: String,
                                count: Int, into out: UnsafeMutableBufferPointer<Float>) {
        guard count > 0, let src = raw.baseAddress.map({ $0 + offset }), let dst = out.baseAddress else {
            return
        }
        switch dtype {
        case "F32":
            #if _endian(little)
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
            #else
            for i in 0..<count {
                dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
            }
            #endif
        case "F64":
            for i in 0..<count {
                let bits = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                dst[i] = Float(Double(bitPattern: bits))
            }
        case "F16":
            for i in 0..<count {
                dst[i] = floatFromHalfBits(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
            }
        case "BF16":
            for i in 0..<count {
                let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
                dst[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        default:
            dst.initialize(repeating: 0, count: count)
        }
    }

    /// IEEE 754 binary16 bits to Float, exactly: zeros, subnormals, normals, infinities and NaNs
    /// (the NaN payload is kept in the top mantissa bits).
    static func floatFromHalfBits(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32((h >> 10) & 0x1F)
        var mantissa = UInt32(h & 0x3FF)
        switch exponent {
        case 0:
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal: mantissa * 2^-24. Normalise so the leading 1 lands on bit 10.
            var e: UInt32 = 127 - 14
            while mantissa & 0x400 == 0 {
                mantissa <<= 1
                e -= 1
            }
            return Float(bitPattern: sign | (e << 23) | ((mantissa & 0x3FF) << 13))
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | ((exponent + 127 - 15) << 23) | (mantissa << 13))
        }
    }

    /// A JSON string literal.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
