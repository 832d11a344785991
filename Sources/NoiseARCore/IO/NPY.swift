import Foundation

/// NumPy `.npy` files (version 1.0, little-endian float32 or float64, C order): what host
/// pipelines in Python load with `numpy.load`.
public enum NPY {
    /// The bytes of a float32 `.npy` holding `tensor`.
    public static func serialized(_ tensor: HostTensor) -> Data {
        let shape = tensor.shape.map(String.init).joined(separator: ", ") + (tensor.shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape)), }"
        // magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let n = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(n & 0xff), UInt8(n >> 8)])
        data.append(contentsOf: Array(header.utf8))
        tensor.data.withUnsafeBufferPointer { data.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress)?
            .assumingMemoryBound(to: UInt8.self), count: $0.count * 4)) }
        return data
    }

    /// Writes by `OutputFile`'s rules (a regular file is replaced atomically).
    public static func write(_ tensor: HostTensor, to url: URL) throws {
        try OutputFile.write(serialized(tensor), to: url)
    }

    /// Reads a little-endian float32 or float64 C-order array as float32.
    public static func read(_ url: URL) throws -> HostTensor {
        try parse(InputFile.contents(of: url), source: url.path)
    }

    /// Parses a .npy file's bytes. Every size is checked (a hostile header cannot make it trap or
    /// allocate more than the file holds); Fortran-order arrays are transposed to C order.
    public static func parse(_ data: Data, source: String) throws -> HostTensor {
        let bytes = [UInt8](data)
        func bad(_ why: String) -> NoiseError { .format("\(source): not a supported .npy file: \(why)") }
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else { throw bad("bad magic") }
        let major = bytes[6]
        guard major >= 1 && major <= 3 else { throw bad("version \(major)") }
        let lenBytes = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lenBytes else { throw bad("truncated header") }
        var headerLen = 0
        for i in 0..<lenBytes { headerLen |= Int(bytes[8 + i]) << (8 * i) }
        let start = 8 + lenBytes
        guard bytes.count - start >= headerLen else { throw bad("truncated header") }
        let header = String(decoding: bytes[start..<start + headerLen], as: UTF8.self)
        /// The text after `'key':` (or `"key":`), leading spaces removed.
        func field(_ key: String) -> Substring? {
            for q in ["'", "\""] {
                if let r = header.range(of: "\(q)\(key)\(q)") {
                    var rest = header[r.upperBound...].drop(while: { $0 == " " })
                    guard rest.first == ":" else { continue }
                    rest = rest.dropFirst().drop(while: { $0 == " " })
                    return rest
                }
            }
            return nil
        }
        guard let descr = field("descr") else { throw bad("no descr") }
        let width: Int
        let dtype = descr.prefix(5).replacingOccurrences(of: "\"", with: "'")
        if dtype == "'<f4'" || dtype == "'=f4'" { width = 4 }
        else if dtype == "'<f8'" || dtype == "'=f8'" { width = 8 }
        else { throw bad("dtype \(Text.quoted(String(descr.prefix(8)), limit: 8)) (only little-endian float32/float64)") }
        var fortran = false
        if let f = field("fortran_order") {
            if f.hasPrefix("True") { fortran = true }
            else if !f.hasPrefix("False") { throw bad("fortran_order is neither True nor False") }
        }
        guard let s = field("shape"), s.first == "(", let close = s.firstIndex(of: ")") else { throw bad("no shape") }
        let dims = try s[s.index(after: s.startIndex)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { (t: String) -> Int in
                guard let v = Int(t), v >= 0 else { throw bad("shape entry \(Text.quoted(t, limit: 24))") }
                return v
            }
        guard let count = MemoryBudget.product(dims) else { throw bad("shape \(dims) has more elements than can be counted") }
        let body = start + headerLen
        let (needed, overflow) = count.multipliedReportingOverflow(by: width)
        guard !overflow, bytes.count - body >= needed else {
            throw bad("\(bytes.count - body) data bytes for \(count) values of \(width) bytes")
        }
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                if width == 4 {
                    values[i] = Float(bitPattern: raw.loadUnaligned(fromByteOffset: body + 4 * i, as: UInt32.self).littleEndian)
                } else {
                    values[i] = Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: body + 8 * i, as: UInt64.self).littleEndian))
                }
            }
        }
        if fortran && dims.count > 1 && count > 0 { values = transposedFromFortran(values, dims) }
        return HostTensor(shape: dims, data: values)
    }

    /// Column-major (first index fastest) values in row-major order.
    static func transposedFromFortran(_ values: [Float], _ dims: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: values.count)
        var index = [Int](repeating: 0, count: dims.count)  // row-major multi-index of `c`
        for c in 0..<values.count {
            var f = 0, stride = 1
            for d in 0..<dims.count {
                f += index[d] * stride
                stride *= dims[d]
            }
            out[c] = values[f]
            var d = dims.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < dims[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return out
    }
}
