import Foundation
import NoiseARGPU
import Testing

// MARK: - Helpers (file-private so they cannot clash with other test files)

/// A file from a raw header text and data bytes; the header length field is the header's byte
/// count unless overridden.
private func rawFile(_ header: String, data: [UInt8] = [], headerLength: UInt64? = nil) -> Data {
    rawFile(Array(header.utf8), data: data, headerLength: headerLength)
}

private func rawFile(_ header: [UInt8], data: [UInt8] = [], headerLength: UInt64? = nil) -> Data {
    var out = Data()
    withUnsafeBytes(of: (headerLength ?? UInt64(header.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: header)
    out.append(contentsOf: data)
    return out
}

/// One hand-built tensor entry: dtype, shape and its raw little-endian payload.
private struct RawTensor {
    var name: String
    var dtype: String
    var shape: [Int]
    var bytes: [UInt8]
}

/// A well-formed file from raw entries laid out contiguously in the given order.
private func buildFile(_ tensors: [RawTensor], metadata: [String: String] = [:]) -> Data {
    var parts: [String] = []
    if !metadata.isEmpty {
        let m = metadata.keys.sorted().map { "\"\($0)\":\"\(metadata[$0] ?? "")\"" }.joined(separator: ",")
        parts.append("\"__metadata__\":{\(m)}")
    }
    var offset = 0
    var data: [UInt8] = []
    for t in tensors {
        let shape = t.shape.map(String.init).joined(separator: ",")
        parts.append("\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
        offset += t.bytes.count
        data += t.bytes
    }
    return rawFile("{" + parts.joined(separator: ",") + "}", data: data)
}

private func leBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * MemoryLayout<T>.size)
    for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    return out
}

/// Float equality that treats NaN == NaN and tells -0 from +0.
private func sameFloat(_ a: Float, _ b: Float) -> Bool {
    a.isNaN ? b.isNaN : a.bitPattern == b.bitPattern
}

/// The message of a `.safetensors` error thrown by `body`, or nil (after recording an issue).
private func safetensorsError(_ body: () throws -> Void,
                              sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do {
        try body()
        Issue.record("expected a .safetensors error, but it succeeded", sourceLocation: sourceLocation)
    } catch let error as NoiseError {
        if case .safetensors(let message) = error { return message }
        Issue.record("expected a .safetensors error, got \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a NoiseError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

private func makeTemporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("noisear-safetensors-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// `NOISEAR_FIXTURES`, else `<package root>/../shared/fixtures`.
private func safetensorsFixturesDirectory(filePath: String = #filePath) -> URL {
    if let env = ProcessInfo.processInfo.environment["NOISEAR_FIXTURES"], !env.isEmpty {
        return URL(fileURLWithPath: env, isDirectory: true)
    }
    let packageRoot = URL(fileURLWithPath: filePath)
        .deletingLastPathComponent()  // NoiseARGPUTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
    return packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared/fixtures", isDirectory: true)
}

/// A malformed-file case for the parameterised test.
struct MalformedSafeTensorsCase: Sendable, CustomStringConvertible {
    var label: String
    var data: Data
    /// Substrings the error message must contain.
    var mentions: [String]
    var description: String { label }
}

private func entry(_ name: String, _ body: String) -> String { "{\"\(name)\":\(body)}" }

private let malformedCases: [MalformedSafeTensorsCase] = {
    let four = [UInt8](repeating: 0, count: 4)
    let okEntry = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
    func c(_ label: String, _ data: Data, _ mentions: String...) -> MalformedSafeTensorsCase {
        MalformedSafeTensorsCase(label: label, data: data, mentions: mentions)
    }
    func t(_ label: String, _ body: String, data: [UInt8] = four, _ mentions: String...) -> MalformedSafeTensorsCase {
        MalformedSafeTensorsCase(label: label, data: rawFile(entry("w", body), data: data), mentions: mentions)
    }
    return [
        c("empty file", Data(), "an empty file (0 bytes)"),
        c("7-byte file", Data([8, 0, 0, 0, 0, 0, 0]), "shorter"),
        c("header length past end", rawFile("{}", headerLength: 100), "past the end"),
        c("header length absurd", rawFile("{}", headerLength: 200_000_000), "limit"),
        c("header length UInt64.max", rawFile("{}", headerLength: .max), "limit"),
        c("empty header", rawFile(""), "JSON"),
        c("header not UTF-8", rawFile([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]), "UTF-8"),
        c("header not JSON", rawFile(#"{"w": {"dtype": "#), "JSON"),
        c("header is an array", rawFile("[1,2,3]"), "object"),
        c("header is a string", rawFile(#""hello""#), "JSON"),
        t("entry is a number", "5", "'w'", "object"),
        t("entry is an array", "[1,2]", "'w'", "object"),
        t("missing dtype", #"{"shape":[1],"data_offsets":[0,4]}"#, "'w'", "dtype"),
        t("dtype not a string", #"{"dtype":4,"shape":[1],"data_offsets":[0,4]}"#, "'w'", "dtype"),
        t("unknown dtype", #"{"dtype":"F128","shape":[1],"data_offsets":[0,4]}"#, "'w'", "F128"),
        t("unsupported I64", #"{"dtype":"I64","shape":[1],"data_offsets":[0,8]}"#,
          data: [UInt8](repeating: 0, count: 8), "'w'", "I64"),
        t("unsupported U8", #"{"dtype":"U8","shape":[4],"data_offsets":[0,4]}"#, "'w'", "U8"),
        t("unsupported BOOL", #"{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}"#, "'w'", "BOOL"),
        t("missing shape", #"{"dtype":"F32","data_offsets":[0,4]}"#, "'w'", "shape"),
        t("shape not an array", #"{"dtype":"F32","shape":1,"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("negative dimension", #"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("fractional dimension", #"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("float-notation dimension", #"{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("boolean dimension", #"{"dtype":"F32","shape":[true],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("string dimension", #"{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("null dimension", #"{"dtype":"F32","shape":[null],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("huge dimension", #"{"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,4]}"#, "'w'", "shape"),
        t("shape overflow", #"{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}"#,
          "'w'", "too many"),
        t("byte size overflow", #"{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}"#, "'w'"),
        // Empty tensors whose other dimensions overflow: callers multiply dimensions, so these
        // are refused too.
        t("empty, other dims overflow", #"{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}"#,
          data: [], "'w'", "overflow"),
        t("empty in the middle, dims overflow", #"{"dtype":"F16","shape":[4294967296,0,4294967296],"data_offsets":[0,0]}"#,
          data: [], "'w'", "overflow"),
        t("byte size overflow F32", #"{"dtype":"F32","shape":[2305843009213693952,2],"data_offsets":[0,4]}"#, "'w'"),
        t("dimension Int.max", #"{"dtype":"BF16","shape":[9223372036854775807],"data_offsets":[0,4]}"#, "'w'"),
        t("end Int.max", #"{"dtype":"F32","shape":[1],"data_offsets":[0,9223372036854775807]}"#, "'w'", "beyond"),
        t("begin and end Int.max", #"{"dtype":"F32","shape":[0],"data_offsets":[9223372036854775807,9223372036854775807]}"#,
          "'w'", "beyond"),
        t("offset UInt64.max", #"{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}"#, "'w'", "data_offsets"),
        t("offset beyond UInt64", #"{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}"#, "'w'", "data_offsets"),
        t("offset in exponent notation", #"{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]}"#, "'w'", "data_offsets"),
        t("missing data_offsets", #"{"dtype":"F32","shape":[1]}"#, "'w'", "data_offsets"),
        t("data_offsets not an array", #"{"dtype":"F32","shape":[1],"data_offsets":4}"#, "'w'", "data_offsets"),
        t("one offset", #"{"dtype":"F32","shape":[1],"data_offsets":[4]}"#, "'w'", "data_offsets"),
        t("three offsets", #"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#, "'w'", "data_offsets"),
        t("negative offset", #"{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}"#, "'w'", "data_offsets"),
        t("fractional offset", #"{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}"#, "'w'", "data_offsets"),
        t("boolean offset", #"{"dtype":"F32","shape":[1],"data_offsets":[false,4]}"#, "'w'", "data_offsets"),
        t("begin after end", #"{"dtype":"F32","shape":[1],"data_offsets":[4,0]}"#, "'w'", "begin > end"),
        t("end past data", #"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, "'w'", "beyond"),
        t("end far past data", #"{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775800,9223372036854775804]}"#,
          "'w'", "beyond"),
        t("size too small", #"{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#,
          data: [UInt8](repeating: 0, count: 8), "'w'", "bytes"),
        t("size too large", #"{"dtype":"F16","shape":[1],"data_offsets":[0,4]}"#, "'w'", "bytes"),
        t("zero-size with bytes", #"{"dtype":"F32","shape":[0,3],"data_offsets":[0,4]}"#, "'w'", "bytes"),
        c("overlapping tensors",
          rawFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                  data: [UInt8](repeating: 0, count: 12)), "overlap", "'a'", "'b'"),
        c("identical ranges",
          rawFile(#"{"a":\#(okEntry),"b":\#(okEntry)}"#, data: four), "overlap"),
        c("metadata not an object", rawFile(#"{"__metadata__":"x","w":\#(okEntry)}"#, data: four), "__metadata__"),
        c("metadata value a number", rawFile(#"{"__metadata__":{"k":1},"w":\#(okEntry)}"#, data: four),
          "__metadata__", "'k'"),
        c("metadata value an object", rawFile(#"{"__metadata__":{"k":{"x":"y"}},"w":\#(okEntry)}"#, data: four),
          "__metadata__", "'k'"),
        c("metadata value a boolean", rawFile(#"{"__metadata__":{"k":true}}"#), "__metadata__"),
    ]
}()

// MARK: - Tests

@Suite("SafeTensors")
struct SafeTensorsTests {
    private func sampleFile() -> SafeTensorsFile {
        var rng = TestRNG(42)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 97 } }
        return SafeTensorsFile(
            tensors: [
                "encoder.0.weight": HostTensor(shape: [3, 5], data: values(15)),
                "encoder.0.bias": HostTensor(shape: [5], data: values(5)),
                "scalar": HostTensor(shape: [], data: [-2.5]),
                "odd/shape \"quoted\"": HostTensor(shape: [1, 3, 1, 7], data: values(21)),
                "empty": HostTensor(shape: [0, 4], data: []),
                "specials": HostTensor(shape: [6], data: [.infinity, -.infinity, -0.0,
                                                          .leastNonzeroMagnitude, .greatestFiniteMagnitude, .nan]),
            ],
            metadata: ["config": #"{"latent": 8, "heads": [1, 2]}"#, "source": "unit test",
                       "note": "tab\there, newline\nthere, back\\slash, \u{1} ctl, ünï"])
    }

    private func expectSameTensors(_ a: [String: HostTensor], _ b: [String: HostTensor],
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.keys.sorted() == b.keys.sorted(), sourceLocation: sourceLocation)
        for (name, t) in a {
            guard let u = b[name] else { continue }
            #expect(t.shape == u.shape, "\(name)", sourceLocation: sourceLocation)
            #expect(t.data.count == u.data.count && zip(t.data, u.data).allSatisfy { sameFloat($0, $1) },
                    "\(name)", sourceLocation: sourceLocation)
        }
    }

    @Test func roundTripThroughTemporaryDirectory() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("sample.safetensors")
        let original = sampleFile()

        try original.write(to: url)
        let back = try SafeTensorsFile.read(url)
        expectSameTensors(original.tensors, back.tensors)
        #expect(back.metadata == original.metadata)
        #expect(back.dtypes.count == original.tensors.count)
        #expect(back.dtypes.values.allSatisfy { $0 == "F32" })
        #expect(back["scalar"] == HostTensor(shape: [], data: [-2.5]))
        #expect(back["missing"] == nil)
        #expect(try back.tensor("empty") == HostTensor(shape: [0, 4], data: []))

        // Layout: header length is a multiple of 8, data follows; reading it again is identical.
        let bytes = try Data(contentsOf: url)
        #expect(bytes == (try original.serialized()))
        let headerLength = bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        #expect(headerLength % 8 == 0)
        let floats = original.tensors.values.reduce(0) { $0 + $1.data.count }
        #expect(bytes.count == 8 + Int(headerLength) + 4 * floats)

        // Overwriting in place works and leaves no temporary files behind.
        var changed = original
        changed.tensors["scalar"] = HostTensor(shape: [], data: [7])
        changed.metadata = [:]
        try changed.write(to: url)
        let again = try SafeTensorsFile.read(url)
        #expect(again["scalar"]?.data == [7])
        #expect(again.metadata.isEmpty)
        let listing = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(listing == ["sample.safetensors"])

        // An in-memory round trip without metadata keeps `__metadata__` out of the header.
        let plain = SafeTensorsFile(tensors: ["x": HostTensor(shape: [2], data: [1, 2])])
        let plainBytes = try plain.serialized()
        #expect(String(decoding: plainBytes.dropFirst(8), as: UTF8.self).contains("__metadata__") == false)
        #expect(try SafeTensorsFile.parse(plainBytes).tensors == plain.tensors)
    }

    @Test func serializationRejectsInconsistentTensors() throws {
        let bad = SafeTensorsFile(tensors: ["x": HostTensor(shape: [2, 2], data: [1, 2, 3])])
        #expect(throws: NoiseError.self) { try bad.serialized() }
        let negative = SafeTensorsFile(tensors: ["x": HostTensor(shape: [-1], data: [])])
        #expect(throws: NoiseError.self) { try negative.serialized() }
    }

    @Test func ioErrorsNameThePath() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("nope.safetensors")
        do {
            _ = try SafeTensorsFile.read(missing)
            Issue.record("reading a missing file succeeded")
        } catch let error as NoiseError {
            guard case .io(let message) = error else { Issue.record("expected .io, got \(error)"); return }
            #expect(message.contains(missing.path))
        }
        let unwritable = dir.appendingPathComponent("no/such/dir/x.safetensors")
        #expect(throws: NoiseError.self) { try SafeTensorsFile().write(to: unwritable) }

        // Parse errors from `read` name the path too.
        let garbage = dir.appendingPathComponent("garbage.safetensors")
        try Data([1, 2, 3]).write(to: garbage)
        let message = safetensorsError { _ = try SafeTensorsFile.read(garbage) }
        #expect(message?.contains(garbage.path) == true)
    }

    @Test func float16DecodesExactly() throws {
        let cases: [(UInt16, Float)] = [
            (0x0000, 0), (0x8000, -0.0), (0x3C00, 1), (0xBC00, -1), (0xC000, -2), (0x3555, 0.333251953125),
            (0x7BFF, 65504), (0xFBFF, -65504), (0x0400, 0x1p-14), (0x0001, 0x1p-24), (0x8001, -0x1p-24),
            (0x03FF, 1023 * 0x1p-24), (0x0200, 0x1p-15), (0x7C00, .infinity), (0xFC00, -.infinity),
            (0x7E00, .nan), (0x7C01, .nan), (0xFFFF, .nan),
        ]
        let file = try SafeTensorsFile.parse(buildFile([
            RawTensor(name: "h", dtype: "F16", shape: [cases.count], bytes: leBytes(cases.map { $0.0 })),
        ]))
        let got = try file.tensor("h").data
        #expect(file.dtypes["h"] == "F16")
        for (i, (bits, want)) in cases.enumerated() {
            #expect(sameFloat(got[i], want), "0x\(String(bits, radix: 16)) -> \(got[i]), want \(want)")
        }

        // Every one of the 65536 patterns against the standard library's conversion.
        #if !(os(macOS) && arch(x86_64))
        let all = (0...UInt16.max).map { $0 }
        let every = try SafeTensorsFile.parse(buildFile([
            RawTensor(name: "all", dtype: "F16", shape: [256, 256], bytes: leBytes(all)),
        ]))
        let decoded = try every.tensor("all").data
        var mismatches = 0
        for (i, bits) in all.enumerated() {
            let want = Float(Float16(bitPattern: bits))
            if !(want.isNaN ? decoded[i].isNaN : decoded[i].bitPattern == want.bitPattern) { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #endif
    }

    @Test func bfloat16DecodesExactly() throws {
        let cases: [(UInt16, Float)] = [
            (0x0000, 0), (0x8000, -0.0), (0x3F80, 1), (0xC040, -3), (0x3E20, 0.15625),
            (0x7F7F, Float(bitPattern: 0x7F7F_0000)), (0x0080, .leastNormalMagnitude),
            (0x0001, Float(bitPattern: 0x0001_0000)), (0x8001, -Float(bitPattern: 0x0001_0000)),
            (0x7F80, .infinity), (0xFF80, -.infinity), (0x7FC0, .nan), (0xFFC1, .nan),
        ]
        let file = try SafeTensorsFile.parse(buildFile([
            RawTensor(name: "b", dtype: "BF16", shape: [cases.count], bytes: leBytes(cases.map { $0.0 })),
        ]))
        let got = try file.tensor("b").data
        #expect(file.dtypes["b"] == "BF16")
        for (i, (bits, want)) in cases.enumerated() {
            #expect(sameFloat(got[i], want), "0x\(String(bits, radix: 16)) -> \(got[i]), want \(want)")
        }
    }

    @Test func float64AndMixedFilesDecode() throws {
        let doubles: [Double] = [1, -0.0, 0.1, 3.141592653589793, 1e300, -1e300, 1e-50, .infinity, -.infinity,
                                 .nan, Double(Float.leastNonzeroMagnitude), Double(Float.greatestFiniteMagnitude), -65504.25]
        let f32: [Float] = [1.5, -2.25]
        let file = try SafeTensorsFile.parse(buildFile([
            RawTensor(name: "d", dtype: "F64", shape: [doubles.count], bytes: leBytes(doubles.map(\.bitPattern))),
            RawTensor(name: "f", dtype: "F32", shape: [2, 1], bytes: leBytes(f32.map(\.bitPattern))),
            RawTensor(name: "s", dtype: "F16", shape: [], bytes: leBytes([UInt16(0x4200)])),
            RawTensor(name: "z", dtype: "BF16", shape: [3, 0, 2], bytes: []),
        ], metadata: ["config": "{}", "k": "v"]))
        let d = try file.tensor("d").data
        for (i, v) in doubles.enumerated() {
            #expect(sameFloat(d[i], Float(v)), "\(v) -> \(d[i])")
        }
        #expect(d[4] == .infinity && d[5] == -.infinity && d[6] == 0 && d[9].isNaN)
        #expect(file["f"] == HostTensor(shape: [2, 1], data: f32))
        #expect(file["s"] == HostTensor(shape: [], data: [3]))
        #expect(file["z"] == HostTensor(shape: [3, 0, 2], data: []))
        #expect(file.dtypes == ["d": "F64", "f": "F32", "s": "F16", "z": "BF16"])
        #expect(file.metadata == ["config": "{}", "k": "v"])

        // Offsets need not follow key order; padding spaces after the JSON are fine; null metadata is none.
        let shuffled = rawFile(#"{"__metadata__":null,"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}   "#,
                               data: leBytes([Float(2).bitPattern, Float(1).bitPattern]))
        let s = try SafeTensorsFile.parse(shuffled)
        #expect(s["a"]?.data == [1] && s["b"]?.data == [2] && s.metadata.isEmpty)
    }

    @Test func unsupportedDtypesCanBeSkipped() throws {
        let data = buildFile([
            RawTensor(name: "count", dtype: "I64", shape: [], bytes: leBytes([Int64(7)])),
            RawTensor(name: "w", dtype: "F32", shape: [1], bytes: leBytes([Float(4).bitPattern])),
        ])
        let strict = safetensorsError { _ = try SafeTensorsFile.parse(data, source: "ckpt.safetensors") }
        #expect(strict?.contains("I64") == true && strict?.contains("'count'") == true)
        #expect(strict?.contains("ckpt.safetensors") == true)

        let lenient = try SafeTensorsFile.parse(data, source: "ckpt.safetensors", skippingUnsupported: true)
        #expect(lenient["w"]?.data == [4])
        #expect(lenient["count"] == nil)
        #expect(lenient.dtypes["count"] == "I64")
        let message = safetensorsError { _ = try lenient.tensor("count") }
        #expect(message?.contains("I64") == true)

        // Skipped tensors are still validated.
        let badSize = buildFile([RawTensor(name: "count", dtype: "I64", shape: [2], bytes: leBytes([Int64(7)]))])
        _ = safetensorsError { _ = try SafeTensorsFile.parse(badSize, skippingUnsupported: true) }
    }

    /// A tensor skipped for its dtype is reported as such by `tensor(_:)`, not as missing.
    @Test func skippedTensorIsNamedWithItsDtype() throws {
        let data = buildFile([
            RawTensor(name: "prompt_embeds", dtype: "I32", shape: [2], bytes: leBytes([Int32(1), 2])),
            RawTensor(name: "noise", dtype: "F32", shape: [1], bytes: leBytes([Float(1).bitPattern])),
        ])
        let file = try SafeTensorsFile.parse(data, source: "embeds.safetensors", skippingUnsupported: true)
        #expect(file["prompt_embeds"] == nil)
        #expect(file.dtypes["prompt_embeds"] == "I32")
        let message = safetensorsError { _ = try file.tensor("prompt_embeds") }
        #expect(message == "embeds.safetensors: tensor 'prompt_embeds' exists with unsupported dtype I32 (supported: F32, F16, BF16, F64)",
                "\(message ?? "")")
        #expect(try file.tensor("noise").data == [1])
    }

    @Test func missingTensorErrorListsAvailableNames() throws {
        let file = try SafeTensorsFile.parse(try sampleFile().serialized(), source: "model.safetensors")
        let message = safetensorsError { _ = try file.tensor("encoder.0.wieght") }
        #expect(message?.contains("'encoder.0.wieght'") == true)
        #expect(message?.contains("'encoder.0.weight'") == true)
        #expect(message?.contains("model.safetensors") == true)
        #expect(message?.contains("\n") == false)
    }

    @Test(arguments: malformedCases)
    func malformedFileIsRejected(_ testCase: MalformedSafeTensorsCase) throws {
        let message = safetensorsError { _ = try SafeTensorsFile.parse(testCase.data, source: "case.safetensors") }
        guard let message else { return }
        #expect(!message.contains("\n"), "multi-line message: \(message)")
        #expect(message.contains("case.safetensors"), "\(message)")
        for m in testCase.mentions {
            #expect(message.contains(m), "message '\(message)' should mention \(m)")
        }
    }

    @Test func fuzzedFilesNeverCrash() throws {
        var rng = TestRNG(0x5AFE_7E45_0125)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 100 } }
        let base = try SafeTensorsFile(
            tensors: [
                "layer.weight": HostTensor(shape: [4, 6], data: values(24)),
                "layer.bias": HostTensor(shape: [6], data: values(6)),
                "scale": HostTensor(shape: [], data: [0.5]),
                "grid": HostTensor(shape: [2, 3, 2], data: values(12)),
            ],
            metadata: ["config": #"{"dim": 6, "depth": 1}"#, "source": "fuzz"]
        ).serialized()
        // A second seed file exercising the F16 / BF16 / F64 decoders.
        let mixed = buildFile([
            RawTensor(name: "h", dtype: "F16", shape: [2, 2], bytes: leBytes([UInt16(0x3C00), 0x7C00, 0x0001, 0xFE00])),
            RawTensor(name: "b", dtype: "BF16", shape: [3], bytes: leBytes([UInt16(0x3F80), 0xFF80, 0x7FC1])),
            RawTensor(name: "d", dtype: "F64", shape: [2], bytes: leBytes([Double(1e-3).bitPattern, Double.nan.bitPattern])),
            RawTensor(name: "f", dtype: "F32", shape: [], bytes: leBytes([Float(9).bitPattern])),
        ], metadata: ["config": "{}"])
        // A third seed file with empty tensors, whose dimensions the number mutation can blow up.
        let empty = buildFile([
            RawTensor(name: "e", dtype: "F32", shape: [0, 3, 5], bytes: []),
            RawTensor(name: "g", dtype: "F16", shape: [7, 0, 2], bytes: []),
            RawTensor(name: "f", dtype: "F32", shape: [2], bytes: leBytes([Float(1).bitPattern, Float(2).bitPattern])),
        ])
        let structural = Array(#"{}[]",:0123456789-.eE tfnul"#.utf8)
        // Numbers that overflow Int (or its products with other dimensions / dtype sizes).
        let hostile = ["9223372036854775807", "9223372036854775808", "18446744073709551615", "4294967296",
                       "4611686018427387904", "2305843009213693952", "-1", "1e400", "0", "3037000500"]

        var accepted = 0, rejected = 0
        for iteration in 0..<3000 {
            var bytes = [UInt8](iteration % 4 == 3 ? mixed : iteration % 4 == 2 ? empty : base)
            let headerEnd = 8 + Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
            let mutations = 1 + rng.below(3)
            for _ in 0..<mutations where !bytes.isEmpty {
                switch rng.below(10) {
                case 0:  // flip bits in the header
                    let i = 8 + rng.below(max(1, min(headerEnd, bytes.count) - 8))
                    if i < bytes.count { bytes[i] ^= UInt8(1) << UInt8(rng.below(8)) }
                case 1:  // flip a data byte
                    if bytes.count > headerEnd { bytes[headerEnd + rng.below(bytes.count - headerEnd)] ^= rng.byte() | 1 }
                case 2:  // truncate
                    bytes.removeLast(bytes.count - rng.below(bytes.count))
                case 3:  // random header-length field
                    let candidates: [UInt64] = [rng.next(), UInt64(rng.below(bytes.count + 16)),
                                                UInt64(max(0, headerEnd - 8 + rng.below(17) - 8)), 100_000_001, 0]
                    let value = candidates[rng.below(candidates.count)]
                    if bytes.count < 8 { bytes += [UInt8](repeating: 0, count: 8 - bytes.count) }
                    withUnsafeBytes(of: value.littleEndian) { for k in 0..<8 { bytes[k] = $0[k] } }
                case 4:  // insert junk
                    let junk = (0..<(1 + rng.below(16))).map { _ in rng.byte() }
                    bytes.insert(contentsOf: junk, at: rng.below(bytes.count + 1))
                case 5:  // swap two bytes
                    bytes.swapAt(rng.below(bytes.count), rng.below(bytes.count))
                case 6:  // a JSON-significant character somewhere in the header
                    let i = 8 + rng.below(max(1, min(headerEnd, bytes.count) - 8))
                    if i < bytes.count { bytes[i] = structural[rng.below(structural.count)] }
                case 8, 9:  // replace a number of the header (a dimension, an offset) with a hostile one
                    let end = min(headerEnd, bytes.count)
                    var runs: [Range<Int>] = []
                    var i = 8
                    while i < end {
                        if (48...57).contains(bytes[i]) {
                            var j = i
                            while j < end && (48...57).contains(bytes[j]) { j += 1 }
                            runs.append(i..<j)
                            i = j
                        } else {
                            i += 1
                        }
                    }
                    guard !runs.isEmpty else { break }
                    let run = runs[rng.below(runs.count)]
                    let replacement = Array(hostile[rng.below(hostile.count)].utf8)
                    bytes.replaceSubrange(run, with: replacement)
                    // Keep the header length field in step so the JSON still parses.
                    if run.upperBound <= headerEnd {
                        let newLength = UInt64(headerEnd - 8 + replacement.count - run.count)
                        withUnsafeBytes(of: newLength.littleEndian) { for k in 0..<8 { bytes[k] = $0[k] } }
                    }
                default:  // delete a run of bytes
                    let start = rng.below(bytes.count)
                    bytes.removeSubrange(start..<min(bytes.count, start + 1 + rng.below(8)))
                }
            }
            do {
                let file = try SafeTensorsFile.parse(Data(bytes), source: "fuzz#\(iteration)")
                accepted += 1
                for (name, t) in file.tensors {
                    // Every accepted shape multiplies out without overflow, empty or not.
                    var product = 1, overflow = false, zero = false
                    for d in t.shape {
                        if d == 0 { zero = true; continue }
                        let (r, o) = product.multipliedReportingOverflow(by: d)
                        if o { overflow = true; break }
                        product = r
                    }
                    #expect(!overflow && t.shape.allSatisfy { $0 >= 0 }, "fuzz#\(iteration) \(name) \(t.shape)")
                    #expect(overflow || (zero ? 0 : product) == t.data.count, "fuzz#\(iteration) \(name)")
                }
            } catch let error as NoiseError {
                rejected += 1
                if case .safetensors = error {} else { Issue.record("fuzz#\(iteration): unexpected case \(error)") }
            } catch {
                Issue.record("fuzz#\(iteration): non-NoiseError \(error)")
            }
        }
        print("SafeTensors fuzz: \(rejected) rejected, \(accepted) accepted of 3000")
        #expect(rejected + accepted == 3000)
        #expect(rejected > 0)
        #expect(accepted > 0)
    }

    @Test func referenceFixturesParse() throws {
        let dir = safetensorsFixturesDirectory()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            print("SafeTensors fixtures: skipped, no directory at \(dir.path) (set NOISEAR_FIXTURES)")
            return
        }
        guard let enumerator = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil) else {
            print("SafeTensors fixtures: skipped, cannot list \(dir.path)")
            return
        }
        let files = enumerator.compactMap { $0 as? URL }.filter { $0.pathExtension == "safetensors" }
            .sorted { $0.path < $1.path }
        if files.isEmpty {
            print("SafeTensors fixtures: skipped, no .safetensors files under \(dir.path)")
            return
        }
        for url in files {
            let start = Date()
            // Checkpoints may carry integer buffers (BatchNorm's num_batches_tracked, I64): the
            // strict reader refuses those by name, the lenient one skips them.
            let file: SafeTensorsFile
            do {
                file = try SafeTensorsFile.read(url)
            } catch NoiseError.safetensors(let message) where message.contains("unsupported dtype") {
                #expect(message.contains(url.path))
                file = try SafeTensorsFile.read(url, skippingUnsupported: true)
            }
            let elapsed = Date().timeIntervalSince(start)
            #expect(!file.tensors.isEmpty, "\(url.lastPathComponent)")
            if !file.metadata.isEmpty {
                let config = file.metadata["config"]
                #expect(config != nil, "\(url.lastPathComponent) has metadata but no config")
                if let config {
                    // Python's json writes -Infinity / Infinity / NaN bare (e.g. diffusers'
                    // lambda_min_clipped), which strict JSON does not allow: accept those tokens.
                    let strict = (try? JSONSerialization.jsonObject(with: Data(config.utf8))) != nil
                    let relaxed = config.replacingOccurrences(of: "-Infinity", with: "0")
                        .replacingOccurrences(of: "Infinity", with: "0").replacingOccurrences(of: "NaN", with: "0")
                    let parsed = (try? JSONSerialization.jsonObject(with: Data(relaxed.utf8))) is [String: Any]
                    #expect(parsed, "\(url.lastPathComponent): config is not a JSON object")
                    if !strict { print("SafeTensors fixture \(url.lastPathComponent): config uses Python's non-standard Infinity/NaN") }
                }
            }
            for (name, t) in file.tensors {
                #expect(t.shape.reduce(1, *) == t.data.count, "\(url.lastPathComponent) \(name)")
                let finite = t.data.allSatisfy { $0.isFinite }
                #expect(finite, "\(url.lastPathComponent) \(name) has non-finite values")
            }
            let skipped = file.dtypes.keys.filter { file.tensors[$0] == nil }.sorted()
            let skippedNote = skipped.isEmpty ? "" : ", skipped \(skipped.map { "\($0) (\(file.dtypes[$0] ?? "?"))" })"
            let relative = url.path.replacingOccurrences(of: dir.path + "/", with: "")
            let ms = String(format: "%.1f", elapsed * 1000)
            print("SafeTensors fixture \(relative): \(file.tensors.count) tensors, \(ms) ms\(skippedNote)")
        }
    }
}
