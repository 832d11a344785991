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

    /// Writes atomically.
    public static func write(_ tensor: HostTensor, to url: URL) throws {
        do {
            try serialized(tensor).write(to: url, options: .atomic)
        } catch {
            throw NoiseError.io("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    /// Reads a little-endian float32 or float64 C-order array as float32.
    public static func read(_ url: URL) throws -> HostTensor {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw NoiseError.io("cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parse(data, source: url.path)
    }

    public static func parse(_ data: Data, source: String) throws -> HostTensor {
        let bytes = [UInt8](data)
        func bad(_ why: String) -> NoiseError { .io("\(source): not a supported .npy file: \(why)") }
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else { throw bad("bad magic") }
        let major = bytes[6]
        let lenBytes = major == 1 ? 2 : 4
        guard major >= 1 && major <= 3, bytes.count >= 8 + lenBytes else { throw bad("version \(major)") }
        var headerLen = 0
        for i in 0..<lenBytes { headerLen |= Int(bytes[8 + i]) << (8 * i) }
        let start = 8 + lenBytes
        guard bytes.count >= start + headerLen else { throw bad("truncated header") }
        let header = String(decoding: bytes[start..<start + headerLen], as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr") else { throw bad("no descr") }
        let width: Int
        if descr.hasPrefix("'<f4'") || descr.hasPrefix("'=f4'") { width = 4 }
        else if descr.hasPrefix("'<f8'") || descr.hasPrefix("'=f8'") { width = 8 }
        else { throw bad("dtype \(descr.prefix(6)) (only little-endian float32/float64)") }
        if let f = field("fortran_order"), f.hasPrefix("True") { throw bad("Fortran order") }
        guard let s = field("shape"), let open = s.firstIndex(of: "("), let close = s.firstIndex(of: ")") else {
            throw bad("no shape")
        }
        let dims = try s[s.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { (t: String) -> Int in
                guard let v = Int(t), v >= 0 else { throw bad("shape entry '\(t)'") }
                return v
            }
        let count = dims.reduce(1, *)
        let body = start + headerLen
        guard bytes.count - body >= count * width else { throw bad("\(bytes.count - body) data bytes for \(count) values") }
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
        return HostTensor(shape: dims, data: values)
    }
}
