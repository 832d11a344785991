import Foundation
import NoiseARGPU
import Testing

// MARK: - Helpers (file-private so they cannot clash with other test files)

/// The reference fixtures; missing fixtures fail the test (CI always has them).
private func pthFixtures() throws -> URL {
    try #require(fixturesDirectory(), "the reference fixtures are missing")
}

/// The `weights.`-prefixed tensors of a safetensors twin, prefix removed.
private func twinWeights(_ relativePath: String) throws -> [String: HostTensor] {
    let file = try SafeTensorsFile.read(try pthFixtures().appendingPathComponent(relativePath), skippingUnsupported: true)
    var out: [String: HostTensor] = [:]
    for (k, v) in file.tensors where k.hasPrefix("weights.") { out[String(k.dropFirst("weights.".count))] = v }
    return out
}

/// The message of the NoiseError thrown by `body`, or nil (after recording an issue).
private func checkpointError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do {
        try body()
        Issue.record("expected an error, but it succeeded", sourceLocation: sourceLocation)
    } catch let error as NoiseError {
        let message = error.description
        #expect(!message.contains("\n"), "error message spans lines: \(message)", sourceLocation: sourceLocation)
        return message
    } catch {
        Issue.record("expected a NoiseError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
    withUnsafeBytes(of: v.littleEndian) { Array($0) }
}

private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        crc ^= UInt32(b)
        for _ in 0 ..< 8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

/// A zip archive of stored entries. `localOffsetOverride` replaces an entry's local-header
/// offset in the central directory; `method` its compression method.
private func makeZip(_ entries: [(String, [UInt8])], localOffsetOverride: [String: UInt32] = [:],
                     method: [String: UInt16] = [:], badCRC: Set<String> = []) -> [UInt8] {
    var out: [UInt8] = []
    var central: [UInt8] = []
    for (name, data) in entries {
        let offset = UInt32(out.count)
        let n = Array(name.utf8)
        let crc = badCRC.contains(name) ? crc32(data) ^ 1 : crc32(data)
        let m = method[name] ?? 0
        out += le(UInt32(0x0403_4B50)) + le(UInt16(20)) + le(UInt16(0)) + le(m) + le(UInt16(0)) + le(UInt16(0))
        out += le(crc) + le(UInt32(data.count)) + le(UInt32(data.count)) + le(UInt16(n.count)) + le(UInt16(0))
        out += n + data
        central += le(UInt32(0x0201_4B50)) + le(UInt16(20)) + le(UInt16(20)) + le(UInt16(0)) + le(m)
        central += le(UInt16(0)) + le(UInt16(0)) + le(crc) + le(UInt32(data.count)) + le(UInt32(data.count))
        central += le(UInt16(n.count)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt32(0))
        central += le(localOffsetOverride[name] ?? offset) + n
    }
    let cdOffset = UInt32(out.count)
    out += central
    out += le(UInt32(0x0605_4B50)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(entries.count)) + le(UInt16(entries.count))
    out += le(UInt32(central.count)) + le(cdOffset) + le(UInt16(0))
    return out
}

/// Writes pickle opcodes (protocol 2), the way torch.save lays out a state dict.
private struct PickleWriter {
    var bytes: [UInt8] = [0x80, 2]

    mutating func op(_ o: UInt8) { bytes.append(o) }
    mutating func global(_ module: String, _ name: String) { bytes += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        bytes += [0x58] + le(UInt32(u.count)) + u
    }
    mutating func int(_ v: Int) {
        if (0 ... 255).contains(v) { bytes += [0x4B, UInt8(v)] }
        else if (0 ... 65535).contains(v) { bytes += [0x4D] + le(UInt16(v)) }
        else if let v32 = Int32(exactly: v) { bytes += [0x4A] + le(v32) }
        else { bytes += [0x8A, 8] + le(Int64(v)) }
    }
    mutating func ints(_ v: [Int]) {
        op(0x28)
        for x in v { int(x) }
        op(0x74)
    }

    /// A `_rebuild_tensor_v2` call on a storage; `legacyView` adds the legacy sixth field
    /// (nil: None).
    mutating func tensor(storageClass: String, key: String, numel: Int, offset: Int, size: [Int], stride: [Int],
                         legacy: Bool = false, legacyView: (String, Int, Int)? = nil) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(0x28)
        op(0x28)
        string("storage")
        global("torch", storageClass)
        string(key)
        string("cpu")
        int(numel)
        if legacy {
            if let (k, o, n) = legacyView {
                string(k)
                int(o)
                int(n)
                op(0x87)
            } else {
                op(0x4E)
            }
        }
        op(0x74)
        op(0x51)
        int(offset)
        ints(size)
        ints(stride)
        op(0x89)
        global("collections", "OrderedDict")
        op(0x29)
        op(0x52)
        op(0x74)
        op(0x52)
    }
}

/// One tensor of a hand-made checkpoint.
private struct FakeTensor {
    var name: String
    var storageClass = "FloatStorage"
    var key: String
    var numel: Int
    var offset = 0
    var size: [Int]
    var stride: [Int]
    var legacyView: (String, Int, Int)? = nil
}

/// The main pickle of a hand-made OrderedDict state dict.
private func stateDictPickle(_ tensors: [FakeTensor], legacy: Bool) -> [UInt8] {
    var w = PickleWriter()
    w.global("collections", "OrderedDict")
    w.op(0x29)
    w.op(0x52)
    w.op(0x28)
    for t in tensors {
        w.string(t.name)
        w.tensor(storageClass: t.storageClass, key: t.key, numel: t.numel, offset: t.offset, size: t.size,
                 stride: t.stride, legacy: legacy, legacyView: t.legacyView)
    }
    w.op(0x75)
    w.op(0x2E)
    return w.bytes
}

/// A zip-format checkpoint from a main pickle and storages (key -> raw bytes).
private func zipCheckpoint(_ pickle: [UInt8], _ storages: [(String, [UInt8])], folder: String = "archive",
                           extra: [(String, [UInt8])] = []) -> [UInt8] {
    var entries: [(String, [UInt8])] = [("\(folder)/data.pkl", pickle), ("\(folder)/byteorder", Array("little".utf8))]
    for (k, v) in storages { entries.append(("\(folder)/data/\(k)", v)) }
    return makeZip(entries + extra)
}

/// A legacy-format checkpoint: magic, protocol version, system info, main pickle, keys, storages
/// (key, element count written in the header, raw bytes).
private func legacyCheckpoint(_ main: [UInt8], _ storages: [(String, UInt64, [UInt8])]) -> [UInt8] {
    var out: [UInt8] = [0x80, 2, 0x8A, 10, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
    out += [0x80, 2, 0x4D] + le(UInt16(1001)) + [0x2E]
    var info = PickleWriter()
    info.op(0x7D)
    info.op(0x28)
    info.string("little_endian")
    info.op(0x88)
    info.op(0x75)
    info.op(0x2E)
    out += info.bytes + main
    var keys = PickleWriter()
    keys.op(0x5D)
    keys.op(0x28)
    for (k, _, _) in storages { keys.string(k) }
    keys.op(0x65)
    keys.op(0x2E)
    out += keys.bytes
    for (_, n, data) in storages { out += le(n) + data }
    return out
}

private func floats(_ v: [Float]) -> [UInt8] { v.flatMap { le($0.bitPattern) } }

private func bf16RoundedToNearestEven(_ x: Float) -> Float {
    let bits = x.bitPattern
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return Float(bitPattern: rounded & 0xFFFF_0000)
}

// MARK: - Tests

@Suite struct TorchCheckpointTests {
    /// Every entry of `loaded` equals the twin's `weights.` tensor after `round`.
    private static func expectSame(_ loaded: SafeTensorsFile, _ twin: [String: HostTensor], file: String,
                                   round: (Float) -> Float = { $0 }, tolerance: Float = 0) {
        let sameKeys = Set(loaded.tensors.keys) == Set(twin.keys)
        #expect(sameKeys,
                "\(file): keys differ: only in pth \(Set(loaded.tensors.keys).subtracting(twin.keys).sorted().prefix(5)), only in twin \(Set(twin.keys).subtracting(loaded.tensors.keys).sorted().prefix(5))")
        var worst: Float = 0
        var inexact = 0
        for (name, want) in twin {
            guard let got = loaded.tensors[name] else { continue }
            #expect(got.shape == want.shape, "\(file) \(name): shape \(got.shape) vs \(want.shape)")
            guard got.data.count == want.data.count else { continue }
            for (a, b) in zip(got.data, want.data) {
                let r = round(b)
                if a.bitPattern != r.bitPattern {
                    inexact += 1
                    worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
                }
            }
        }
        if tolerance == 0 {
            #expect(inexact == 0, "\(file): \(inexact) values differ from the twin (worst relative \(worst))")
        } else {
            #expect(worst <= tolerance, "\(file): worst relative difference \(worst) > \(tolerance)")
            print("\(file): \(inexact) values not bit-identical to the twin rounded the same way; worst relative \(worst)")
        }
    }

    @Test func noisearFixturesMatchTheSafetensorsTwin() throws {
        let dir = try pthFixtures().appendingPathComponent("pth")
        let twin = try twinWeights("noisear/noisear_tiny.safetensors")
        #expect(twin.count > 10)
        for name in ["noisear_tiny", "noisear_tiny_wrapped", "noisear_tiny_legacy"] {
            let url = dir.appendingPathComponent(name + ".pth")
            let file = try TorchCheckpoint.read(url)
            #expect(file.source == url.path)
            #expect(Set(file.dtypes.values) == ["F32"], "\(name): \(Set(file.dtypes.values))")
            Self.expectSame(file, twin, file: name)
        }
        let f16 = try TorchCheckpoint.read(dir.appendingPathComponent("noisear_tiny_f16.pth"))
        #expect(Set(f16.dtypes.values) == ["F16"])
        Self.expectSame(f16, twin, file: "noisear_tiny_f16", round: { Float(Float16($0)) }, tolerance: 1.0 / 2048)
        let bf16 = try TorchCheckpoint.read(dir.appendingPathComponent("noisear_tiny_bf16.pth"))
        #expect(Set(bf16.dtypes.values) == ["BF16"])
        Self.expectSame(bf16, twin, file: "noisear_tiny_bf16", round: bf16RoundedToNearestEven, tolerance: 1.0 / 256)
    }

    @Test func npnetFixturesMatchTheSafetensorsTwin() throws {
        let dir = try pthFixtures().appendingPathComponent("pth")
        let twin = try twinWeights("npnet/npnet_tiny.safetensors")
        #expect(twin["alpha"] != nil && twin["beta"] != nil && twin.keys.contains { $0.hasPrefix("unet_svd.") })
        // BatchNorm's int64 step counter is in the checkpoints (the twin, like
        // tools/convert_pth.py, drops integer buffers).
        let counter = "unet_svd.bn.num_batches_tracked"
        let plain = try TorchCheckpoint.read(dir.appendingPathComponent("npnet_tiny.pth"))
        #expect(Set(plain.tensors.keys).subtracting(twin.keys) == [counter])
        #expect(plain.dtypes[counter] == "I64" && plain.tensors[counter]?.shape == [])
        var plainFloats = plain
        plainFloats.tensors[counter] = nil
        Self.expectSame(plainFloats, twin, file: "npnet_tiny")

        let old = try TorchCheckpoint.read(dir.appendingPathComponent("npnet_tiny_oldtimm.pth"))
        let extra = Set(old.tensors.keys).subtracting(twin.keys).subtracting([counter])
        #expect(extra.count == 8)
        #expect(extra.allSatisfy { $0.hasSuffix(".relative_position_index") }, "\(extra.sorted())")
        var same = old
        for k in extra.union([counter]) { same.tensors[k] = nil }
        Self.expectSame(same, twin, file: "npnet_tiny_oldtimm")
        for k in extra {
            let t = try #require(old.tensors[k])
            #expect(old.dtypes[k] == "I64")
            try #require(t.shape.count == 2 && t.shape[0] == t.shape[1], "\(k): \(t.shape)")
            // timm: a [w*w, w*w] index into the (2w-1)^2 relative-position table.
            let w = Int(Double(t.shape[0]).squareRoot().rounded())
            #expect(w * w == t.shape[0])
            // timm: index[i][j] = (y_i - y_j + w - 1) * (2w - 1) + (x_i - x_j + w - 1).
            var want: [Float] = []
            for i in 0 ..< w * w {
                for j in 0 ..< w * w {
                    want.append(Float((i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1)))
                }
            }
            #expect(t.data == want, "\(k)")
        }
    }

    /// The networks built from the checkpoints (CPU) reproduce the fixtures' outputs; the
    /// config (NoiseAR's head count is not in the weights) comes from the twin's metadata.
    @Test func networksFromCheckpointsReproduceTheFixtures() throws {
        let fx = try pthFixtures()
        let dev = Device.cpuDevice()
        let ar = try SafeTensorsFile.read(fx.appendingPathComponent("noisear/noisear_tiny.safetensors"))
        for name in ["noisear_tiny", "noisear_tiny_legacy", "noisear_tiny_wrapped"] {
            var weights = try WeightsFile.read(fx.appendingPathComponent("pth/\(name).pth"), skippingUnsupported: true)
            weights.metadata = ar.metadata
            let net = try NoiseARNet.load(weights, device: dev)
            let (mu, lv) = try net.predict(noise: try Tensor(ar.tensor("input.noise"), on: dev),
                                           text: try Tensor(ar.tensor("input.text_emb"), on: dev))
            let eMu = maxRelative(try mu.toArray(), try ar.tensor("output.mu").data)
            let eLv = maxRelative(try lv.toArray(), try ar.tensor("output.logvar").data)
            #expect(eMu < 1e-4 && eLv < 1e-4, "\(name): mu \(eMu), logvar \(eLv)")
        }
        let np = try SafeTensorsFile.read(fx.appendingPathComponent("npnet/npnet_tiny.safetensors"), skippingUnsupported: true)
        for name in ["npnet_tiny", "npnet_tiny_oldtimm"] {
            var weights = try WeightsFile.read(fx.appendingPathComponent("pth/\(name).pth"), skippingUnsupported: true)
            weights.metadata = np.metadata
            let net = try NPNet.load(weights, device: dev)
            try dev.noGrad {
                let out = try net(noise: try Tensor(np.tensor("input.noise"), on: dev),
                                  promptEmbeds: try Tensor(np.tensor("input.prompt_embeds"), on: dev),
                                  svdFactors: (try Tensor(np.tensor("intermediate.svd_U"), on: dev),
                                               try Tensor(np.tensor("intermediate.svd_S"), on: dev),
                                               try Tensor(np.tensor("intermediate.svd_Vh"), on: dev)))
                let e = maxRelative(try out.golden.toArray(), try np.tensor("output.golden_noise").data)
                #expect(e < 1e-4, "\(name): golden noise relative error \(e)")
            }
        }
    }

    @Test func weightsFileDispatchesByContent() throws {
        let fx = try pthFixtures()
        let safetensors = fx.appendingPathComponent("noisear/noisear_tiny.safetensors")
        let viaDispatch = try WeightsFile.read(safetensors, skippingUnsupported: true)
        let direct = try SafeTensorsFile.read(safetensors, skippingUnsupported: true)
        #expect(viaDispatch.tensors == direct.tensors && viaDispatch.metadata == direct.metadata)
        #expect(try WeightsFile.format(of: Data(contentsOf: safetensors)) == .safetensors)
        for (name, format) in [("noisear_tiny", WeightsFile.Format.torchZip), ("noisear_tiny_legacy", .torchLegacy)] {
            let url = fx.appendingPathComponent("pth/\(name).pth")
            #expect(try WeightsFile.format(of: Data(contentsOf: url)) == format)
            let a = try WeightsFile.read(url), b = try TorchCheckpoint.read(url)
            #expect(a.tensors == b.tensors && a.source == url.path)
        }
        // A safetensors header length whose low byte is 0x80 is not taken for a pickle.
        var tricky = Data(le(UInt64(0x280)))
        tricky.append(contentsOf: Array(repeating: UInt8(ascii: " "), count: 0x280))
        #expect(try WeightsFile.format(of: tricky) == .safetensors)
    }

    @Test func evilPickleIsRefusedAndNothingRuns() throws {
        let url = try pthFixtures().appendingPathComponent("pth/evil.pth")
        let marker = "/tmp/pth_pwned"
        let existedBefore = FileManager.default.fileExists(atPath: marker)
        let message = checkpointError { _ = try TorchCheckpoint.read(url) }
        print("TorchCheckpoint evil.pth: \(message ?? "no error")")
        #expect(message?.contains("posix.system") == true, "\(message ?? "")")
        #expect(message?.contains(url.path) == true)
        #expect(message?.contains("refused") == true)
        let viaDispatch = checkpointError { _ = try WeightsFile.read(url) }
        #expect(viaDispatch == message)
        if !existedBefore { #expect(!FileManager.default.fileExists(atPath: marker)) }

        // Other forbidden globals, through GLOBAL and STACK_GLOBAL, anywhere in the pickle.
        for (module, name) in [("builtins", "eval"), ("os", "system"), ("torch", "load"), ("torch.storage", "_load_from_bytes")] {
            var w = PickleWriter()
            w.op(0x7D)
            w.string("x")
            w.global(module, name)
            w.string("print(1)")
            w.op(0x85)
            w.op(0x52)
            w.op(0x73)
            w.op(0x2E)
            let m = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(w.bytes, [])), source: "g.pth") }
            #expect(m?.contains("\(module).\(name)") == true, "\(m ?? "")")
            var s = PickleWriter()
            s.bytes = [0x80, 4, 0x8C, UInt8(module.utf8.count)] + Array(module.utf8) + [0x8C, UInt8(name.utf8.count)]
                + Array(name.utf8) + [0x93, 0x2E]
            let m2 = checkpointError { _ = try TorchCheckpoint.parse(Data(legacyCheckpoint(s.bytes, [])), source: "s.pth") }
            #expect(m2?.contains("\(module).\(name)") == true, "\(m2 ?? "")")
        }
    }

    @Test func handMadeCheckpointsViewsAndDtypes() throws {
        // A 2x3 storage read through a transposed view, an offset strided view and a scalar.
        let values: [Float] = [0, 1, 2, 3, 4, 5]
        let tensors = [
            FakeTensor(name: "module.t", key: "0", numel: 6, size: [3, 2], stride: [1, 3]),
            FakeTensor(name: "module.s", key: "0", numel: 6, offset: 1, size: [2], stride: [2]),
            FakeTensor(name: "module.c", key: "0", numel: 6, offset: 5, size: [], stride: []),
            FakeTensor(name: "module.e", key: "0", numel: 6, offset: 0, size: [1, 3], stride: [100, 1]),
            FakeTensor(name: "module.z", key: "0", numel: 6, offset: 0, size: [0, 4], stride: [4, 1]),
            FakeTensor(name: "module.d", storageClass: "DoubleStorage", key: "1", numel: 2, size: [2], stride: [1]),
            FakeTensor(name: "module.h", storageClass: "HalfStorage", key: "2", numel: 2, size: [2], stride: [1]),
            FakeTensor(name: "module.b", storageClass: "BFloat16Storage", key: "3", numel: 2, size: [2], stride: [1]),
            FakeTensor(name: "module.i", storageClass: "LongStorage", key: "4", numel: 2, size: [2], stride: [1]),
            FakeTensor(name: "module.k", storageClass: "IntStorage", key: "5", numel: 2, size: [2], stride: [1]),
        ]
        let storages: [(String, [UInt8])] = [
            ("0", floats(values)),
            ("1", le(Double(0.25).bitPattern) + le(Double(-3).bitPattern)),
            ("2", le(Float16(1.5).bitPattern) + le(Float16(-2).bitPattern)),
            ("3", le(UInt16(0x3FC0)) + le(UInt16(0xC000))),
            ("4", le(Int64(7)) + le(Int64(-9))),
            ("5", le(Int32(-1)) + le(Int32(65536))),
        ]
        let zip = zipCheckpoint(stateDictPickle(tensors, legacy: false), storages)
        let legacy = legacyCheckpoint(stateDictPickle(tensors, legacy: true),
                                      storages.map { ($0.0, UInt64($0.1.count / (["0": 4, "1": 8, "4": 8, "5": 4][$0.0] ?? 2)), $0.1) })
        for (what, bytes) in [("zip", zip), ("legacy", legacy)] {
            let f = try TorchCheckpoint.parse(Data(bytes), source: what)
            #expect(f.tensors["t"] == HostTensor(shape: [3, 2], data: [0, 3, 1, 4, 2, 5]), "\(what)")
            #expect(f.tensors["s"] == HostTensor(shape: [2], data: [1, 3]))
            #expect(f.tensors["c"] == HostTensor(shape: [], data: [5]))
            #expect(f.tensors["e"] == HostTensor(shape: [1, 3], data: [0, 1, 2]))
            #expect(f.tensors["z"] == HostTensor(shape: [0, 4], data: []))
            #expect(f.tensors["d"]?.data == [0.25, -3] && f.dtypes["d"] == "F64")
            #expect(f.tensors["h"]?.data == [1.5, -2] && f.dtypes["h"] == "F16")
            #expect(f.tensors["b"]?.data == [1.5, -2] && f.dtypes["b"] == "BF16")
            #expect(f.tensors["i"]?.data == [7, -9] && f.dtypes["i"] == "I64")
            #expect(f.tensors["k"]?.data == [-1, 65536] && f.dtypes["k"] == "I32")
            #expect(f.tensors.count == 10)
        }

        // Big-endian zip checkpoints are byte-swapped.
        let be = makeZip([("a/data.pkl", stateDictPickle([FakeTensor(name: "w", key: "0", numel: 2, size: [2], stride: [1])], legacy: false)),
                          ("a/byteorder", Array("big".utf8)),
                          ("a/data/0", [0x3F, 0x80, 0, 0, 0xC0, 0, 0, 0])])
        #expect(try TorchCheckpoint.parse(Data(be)).tensors["w"]?.data == [1, -2])

        // Legacy views: (view key, element offset, element count) inside a root storage.
        let view = FakeTensor(name: "v", key: "r", numel: 6, offset: 1, size: [2], stride: [1], legacyView: ("v0", 2, 3))
        let lv = try TorchCheckpoint.parse(Data(legacyCheckpoint(stateDictPickle([view], legacy: true), [("r", 6, floats(values))])))
        #expect(lv.tensors["v"]?.data == [3, 4])
        let badView = FakeTensor(name: "v", key: "r", numel: 6, offset: 0, size: [2], stride: [1], legacyView: ("v0", 5, 3))
        let m = checkpointError { _ = try TorchCheckpoint.parse(Data(legacyCheckpoint(stateDictPickle([badView], legacy: true), [("r", 6, floats(values))]))) }
        #expect(m?.contains("view") == true, "\(m ?? "")")
    }

    @Test func wrappersNestingAndScalars() throws {
        func tensorValue(_ w: inout PickleWriter, key: String) {
            w.tensor(storageClass: "FloatStorage", key: key, numel: 1, offset: 0, size: [1], stride: [1])
        }
        // {"epoch": 3, "state_dict": {"module.a": t0}, "optimizer": {"state": {0: {"x": t1}}}, "alpha": 0.5}
        var w = PickleWriter()
        w.op(0x7D)
        w.op(0x28)
        w.string("epoch"); w.int(3)
        w.string("optimizer"); w.op(0x7D); w.op(0x28); w.string("state"); w.op(0x7D); w.int(0); w.op(0x7D)
        w.string("x"); tensorValue(&w, key: "1"); w.op(0x73); w.op(0x73); w.op(0x75)
        w.string("state_dict"); w.op(0x7D); w.string("module.a"); tensorValue(&w, key: "0"); w.op(0x73)
        w.op(0x75)
        w.op(0x2E)
        let f = try TorchCheckpoint.parse(Data(zipCheckpoint(w.bytes, [("0", floats([2])), ("1", floats([3]))])))
        #expect(f.tensors == ["a": HostTensor(shape: [1], data: [2])])

        // NPNet-style: nested dicts flattened, alpha/beta as plain floats become [1] tensors.
        var n = PickleWriter()
        n.op(0x7D)
        n.op(0x28)
        n.string("unet_svd"); n.op(0x7D); n.string("mlp.weight"); tensorValue(&n, key: "0"); n.op(0x73)
        n.string("alpha"); n.op(0x47); n.bytes += withUnsafeBytes(of: Double(0.5).bitPattern.bigEndian) { Array($0) }
        n.string("beta"); n.int(2)
        n.op(0x75)
        n.op(0x2E)
        let g = try TorchCheckpoint.parse(Data(zipCheckpoint(n.bytes, [("0", floats([7]))])))
        #expect(g.tensors == ["unet_svd.mlp.weight": HostTensor(shape: [1], data: [7]),
                              "alpha": HostTensor(shape: [1], data: [0.5]), "beta": HostTensor(shape: [1], data: [2])])

        // Names that collide after flattening, no tensors at all, a bare tensor.
        var c = PickleWriter()
        c.op(0x7D); c.op(0x28)
        c.string("a.b"); tensorValue(&c, key: "0")
        c.string("a"); c.op(0x7D); c.string("b"); tensorValue(&c, key: "0"); c.op(0x73)
        c.op(0x75); c.op(0x2E)
        let m1 = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(c.bytes, [("0", floats([1]))]))) }
        #expect(m1?.contains("twice") == true, "\(m1 ?? "")")
        let m2 = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint([0x80, 2, 0x7D, 0x58, 1, 0, 0, 0, 0x61, 0x4B, 1, 0x73, 0x2E], []))) }
        #expect(m2?.contains("no tensors") == true, "\(m2 ?? "")")
        var t = PickleWriter()
        tensorValue(&t, key: "0")
        t.op(0x2E)
        let m3 = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(t.bytes, [("0", floats([1]))]))) }
        #expect(m3?.contains("single unnamed tensor") == true, "\(m3 ?? "")")
    }

    @Test func hostileStoragesAndSizes() throws {
        func zipError(_ t: FakeTensor, storage: [UInt8]) -> String? {
            checkpointError {
                _ = try TorchCheckpoint.parse(Data(zipCheckpoint(stateDictPickle([t], legacy: false), [("0", storage)])), source: "h.pth")
            }
        }
        let four = floats([1, 2, 3, 4])
        // Offset / size beyond the storage.
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, offset: 3, size: [2], stride: [1]), storage: four)?
            .contains("reaches element 4") == true)
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, offset: 0, size: [2, 2], stride: [3, 1]), storage: four)?
            .contains("reaches element") == true)
        // Element counts and index arithmetic that overflow.
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, size: [1 << 40, 1 << 40], stride: [0, 0]), storage: four)?
            .contains("more elements than can be counted") == true)
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, size: [3], stride: [Int.max / 2 + 1]), storage: four)?
            .contains("overflows") == true)
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, offset: Int.max, size: [2], stride: [1]), storage: four)?
            .contains("overflows") == true)
        // A size-1 dimension with a huge stride is harmless.
        let ok = try TorchCheckpoint.parse(Data(zipCheckpoint(stateDictPickle(
            [FakeTensor(name: "w", key: "0", numel: 4, size: [1, 4], stride: [Int.max, 1])], legacy: false), [("0", four)])))
        #expect(ok.tensors["w"]?.data == [1, 2, 3, 4])
        // Storage element counts that disagree with the record or overflow in bytes.
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 5, size: [4], stride: [1]), storage: four)?
            .contains("16 bytes") == true)
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: Int.max / 2, size: [4], stride: [1]), storage: four)?
            .contains("too large") == true)
        #expect(zipError(FakeTensor(name: "w", key: "9", numel: 4, size: [4], stride: [1]), storage: four)?
            .contains("no record") == true)
        // Broadcast views may not blow up without bound.
        #expect(zipError(FakeTensor(name: "w", key: "0", numel: 4, size: [1 << 30], stride: [0]), storage: four)?
            .contains("values") == true)
        // The same storage as two types.
        let twoTypes = [FakeTensor(name: "a", key: "0", numel: 4, size: [4], stride: [1]),
                        FakeTensor(name: "b", storageClass: "IntStorage", key: "0", numel: 4, size: [4], stride: [1])]
        let m = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(stateDictPickle(twoTypes, legacy: false), [("0", four)]))) }
        #expect(m?.contains("referenced as") == true, "\(m ?? "")")

        // Legacy: element-count headers that disagree, huge, or run past the end.
        let main = stateDictPickle([FakeTensor(name: "w", key: "k", numel: 4, size: [4], stride: [1])], legacy: true)
        #expect(try TorchCheckpoint.parse(Data(legacyCheckpoint(main, [("k", 4, four)]))).tensors["w"]?.data == [1, 2, 3, 4])
        for (header, data, expected) in [(UInt64(5), four, "holds 5"), (UInt64.max, four, "holds"),
                                         (UInt64(4), Array(four.prefix(10)), "past the end")] {
            let e = checkpointError { _ = try TorchCheckpoint.parse(Data(legacyCheckpoint(main, [("k", header, data)]))) }
            #expect(e?.contains(expected) == true, "\(e ?? "")")
        }
        let huge = stateDictPickle([FakeTensor(name: "w", key: "k", numel: 1 << 61, size: [4], stride: [1])], legacy: true)
        let e = checkpointError { _ = try TorchCheckpoint.parse(Data(legacyCheckpoint(huge, [("k", 1 << 61, four)]))) }
        #expect(e?.contains("too large") == true, "\(e ?? "")")
    }

    @Test func hostileZipArchives() throws {
        let pickle = stateDictPickle([FakeTensor(name: "w", key: "0", numel: 1, size: [1], stride: [1])], legacy: false)
        let good = zipCheckpoint(pickle, [("0", floats([1]))])
        #expect(try TorchCheckpoint.parse(Data(good)).tensors["w"]?.data == [1])
        let cases: [([UInt8], String)] = [
            (makeZip([("a/data.pkl", pickle), ("a/data/0", floats([1]))], localOffsetOverride: ["a/data/0": 0x7FFF_FFF0]), "beyond the end"),
            (makeZip([("a/data.pkl", pickle), ("a/data/0", floats([1]))], localOffsetOverride: ["a/data/0": 3]), "no local header"),
            (makeZip([("a/data.pkl", pickle), ("a/data/0", floats([1]))], method: ["a/data/0": 8]), "deflate"),
            (makeZip([("a/data.pkl", pickle), ("a/data/0", floats([1]))], badCRC: ["a/data/0"]), "CRC"),
            (makeZip([("a/data.pkl", pickle), ("a/data/0", floats([1])), ("a/data/0", floats([1]))]), "twice"),
            (makeZip([("data.pkl", pickle)]), "data.pkl"),
            (makeZip([("a/data.pkl", pickle), ("b/data.pkl", pickle)]), "2 data.pkl"),
            (Array(good.prefix(good.count - 10)), "end-of-central-directory"),
        ]
        for (bytes, expected) in cases {
            let m = checkpointError { _ = try TorchCheckpoint.parse(Data(bytes), source: "z.pth") }
            #expect(m?.contains(expected) == true, "expected \(expected): \(m ?? "")")
        }
        // Entries whose stored sizes run past the end of the file: every central entry's sizes
        // patched to 0x10000000.
        var long = good
        var i = 0
        while i + 46 <= long.count {
            if Array(long[i ..< i + 4]) == [0x50, 0x4B, 0x01, 0x02] {
                for k in 0 ..< 4 { long[i + 20 + k] = k == 3 ? 0x10 : 0; long[i + 24 + k] = k == 3 ? 0x10 : 0 }
            }
            i += 1
        }
        let m = checkpointError { _ = try TorchCheckpoint.parse(Data(long), source: "z.pth") }
        #expect(m?.contains("past the end") == true || m?.contains("beyond") == true, "\(m ?? "")")
    }

    @Test func hostilePickles() throws {
        func pickleError(_ body: [UInt8]) -> String? {
            checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint([0x80, 2] + body, [])), source: "p.pth") }
        }
        // Recursion bombs: deep lists, tuples, dicts; nothing recursive may overflow the stack.
        let depth = 200_000
        #expect(pickleError(Array(repeating: 0x5D, count: depth) + Array(repeating: 0x61, count: depth - 1) + [0x2E])?
            .contains("nest deeper") == true)
        #expect(pickleError([0x29] + Array(repeating: 0x85, count: depth) + [0x2E])?.contains("nest deeper") == true)
        #expect(pickleError(Array(repeating: 0x28, count: depth) + Array(repeating: 0x74, count: depth) + [0x2E])?
            .contains("nest deeper") == true)
        var dicts: [UInt8] = []
        for _ in 0 ..< depth { dicts += [0x7D, 0x4B, 1] }
        dicts += [0x4E] + Array(repeating: 0x73, count: depth) + [0x2E]
        #expect(pickleError(dicts)?.contains("nest deeper") == true)
        // Many marks and a long flat list are fine (bounded by the input).
        #expect(pickleError(Array(repeating: 0x28, count: depth) + [0x2E])?.contains("underflow") == true)
        // Memo indices out of range, cycles, stack underflow, missing STOP, bad lengths.
        #expect(pickleError([0x68, 5, 0x2E])?.contains("memo index 5") == true)
        #expect(pickleError([0x6A, 0xFF, 0xFF, 0xFF, 0xFF, 0x2E])?.contains("memo index 4294967295") == true)
        #expect(pickleError([0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E])?.contains("cyclic") == true)
        #expect(pickleError([0x7D, 0x71, 0, 0x4B, 1, 0x68, 0, 0x73, 0x2E])?.contains("cyclic") == true)
        #expect(pickleError([0x2E])?.contains("underflow") == true)
        #expect(pickleError([0x28, 0x4B, 1, 0x28, 0x61, 0x2E])?.contains("underflow") == true)
        #expect(pickleError([0x7D])?.contains("without a STOP") == true)
        #expect(pickleError([0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61])?.contains("past the end") == true)
        #expect(pickleError([0x8E] + le(UInt64.max) + [0x2E])?.contains("past the end") == true)
        #expect(pickleError([0x95] + le(UInt64(1) << 62) + [0x2E])?.contains("past the end") == true)
        #expect(pickleError([0x8B] + le(Int32(-1)) + [0x2E])?.contains("negative") == true)
        #expect(pickleError([0x58, 2, 0, 0, 0, 0xC3, 0x28, 0x2E])?.contains("UTF-8") == true)
        #expect(pickleError([0x80, 9, 0x2E])?.contains("protocol 9") == true)
        #expect(pickleError([0x69] + Array("os\nsystem\n".utf8) + [0x2E])?.contains("INST") == true)
        #expect(pickleError([0xFF])?.contains("unknown opcode") == true)
        #expect(pickleError([0x4B, 1, 0x29, 0x52, 0x2E])?.contains("REDUCE calls") == true)
        #expect(pickleError([0x7D, 0x5D, 0x4B, 1, 0x73, 0x2E])?.contains("unhashable") == true)
        // Exponential sharing: d_k = {"a": d_{k-1}, "b": d_{k-1}}, 2^40 paths to one tensor.
        var w = PickleWriter()
        w.op(0x7D)
        w.string("t")
        w.tensor(storageClass: "FloatStorage", key: "0", numel: 1, offset: 0, size: [1], stride: [1])
        w.op(0x73)
        w.bytes += [0x71, 0]
        for k in 1 ... 40 {
            w.op(0x7D)
            w.op(0x28)
            w.string("a"); w.bytes += [0x68, UInt8(k - 1)]
            w.string("b"); w.bytes += [0x68, UInt8(k - 1)]
            w.op(0x75)
            w.bytes += [0x71, UInt8(k)]
        }
        w.op(0x2E)
        let start = Date()
        let m = checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(w.bytes, [("0", floats([1]))]))) }
        #expect(m?.contains("entries") == true, "\(m ?? "")")
        print("TorchCheckpoint: 2^40 shared paths refused after \(Date().timeIntervalSince(start)) s")
        #expect(Date().timeIntervalSince(start) < 30)
        // A long list of pairs turned into an OrderedDict over and over: bounded work.
        var q: [UInt8] = [0x5D, 0x71, 0, 0x28]
        for _ in 0 ..< 50_000 { q += [0x4B, 1, 0x4B, 2, 0x86] }
        q += [0x65, 0x28]
        for _ in 0 ..< 100_000 { q += [0x63] + Array("collections\nOrderedDict\n".utf8) + [0x68, 0, 0x85, 0x52, 0x30] }
        q += [0x31, 0x2E]
        let quadStart = Date()
        #expect(pickleError(q)?.contains("copies more than") == true)
        print("TorchCheckpoint: repeated OrderedDict(pairs) refused after \(Date().timeIntervalSince(quadStart)) s")
        #expect(Date().timeIntervalSince(quadStart) < 30)
        // Calling a storage class, BUILD on a tensor, NEWOBJ of something else.
        var s = PickleWriter()
        s.global("torch", "FloatStorage"); s.op(0x29); s.op(0x52); s.op(0x2E)
        #expect(checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(s.bytes, []))) }?.contains("storage class") == true)
        var nw = PickleWriter()
        nw.global("torch", "Size"); nw.op(0x29); nw.op(0x81); nw.op(0x2E)
        #expect(checkpointError { _ = try TorchCheckpoint.parse(Data(zipCheckpoint(nw.bytes, []))) }?.contains("NEWOBJ") == true)
        // A persistent id in the legacy system-info pickle, and a legacy file of the wrong kind.
        var legacy = legacyCheckpoint(stateDictPickle([], legacy: true), [])
        legacy[4] ^= 1
        #expect(checkpointError { _ = try TorchCheckpoint.parse(Data(legacy)) }?.contains("magic number") == true)
        #expect(checkpointError { _ = try TorchCheckpoint.parse(Data("hello".utf8)) }?.contains("not a PyTorch checkpoint") == true)
    }

    /// Pickles written by CPython's own pickler (protocols 2, 4 and 5) for the checkpoint
    /// {"state_dict": sd, "epoch": 7, "lr": 0.001, "name": "x", "hist": [1.5, (2, None), True]},
    /// where sd is an OrderedDict of module.w, module.wt (`_rebuild_tensor_v2` views of storage
    /// "0", 6 floats) and module.p (a Parameter), with a `_metadata` attribute (BUILD), as
    /// `model.state_dict()` has. Protocols 4 and 5 use FRAME, MEMOIZE, SHORT_BINUNICODE and
    /// STACK_GLOBAL.
    static let cpythonPickles: [(Int, String)] = [
        (2, [
            "80027d710028580a00000073746174655f64696374710163636f6c6c656374696f6e730a4f726465726564446963740a7102",
            "295271032858080000006d6f64756c652e77710463746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f",
            "76320a71052828580700000073746f72616765710663746f7263680a466c6f617453746f726167650a710758010000003071",
            "08580300000063707571094b0674710a514b004b024b0386710b4b034b0186710c8968022952710d74710e52710f58090000",
            "006d6f64756c652e777471106805282868066807680868094b06747111514b004b034b028671124b014b0386711389680229",
            "52711474711552711658080000006d6f64756c652e70711763746f7263682e5f7574696c730a5f72656275696c645f706172",
            "616d657465720a71186805282868066807680868094b06747119514b044b0285711a4b0185711b8968022952711c74711d52",
            "711e8868022952711f877120527121757d712258090000005f6d65746164617461712368022952712428580000000071257d",
            "7126580700000076657273696f6e71274b017358010000007771287d712968274b0273757362580500000065706f6368712a",
            "4b0758020000006c72712b473f50624dd2f1a9fc58040000006e616d65712c580100000078712d580400000068697374712e",
            "5d712f28473ff80000000000004b024e8671308865752e",
        ].joined()),
        (4, [
            "800495ab010000000000007d94288c0a73746174655f64696374948c0b636f6c6c656374696f6e73948c0b4f726465726564",
            "44696374949394295294288c086d6f64756c652e77948c0c746f7263682e5f7574696c73948c125f72656275696c645f7465",
            "6e736f725f763294939428288c0773746f72616765948c05746f726368948c0c466c6f617453746f726167659493948c0130",
            "948c03637075944b067494514b004b024b0386944b034b018694896804295294749452948c096d6f64756c652e7774946809",
            "2828680a680d680e680f4b067494514b004b034b0286944b014b038694896804295294749452948c086d6f64756c652e7094",
            "68078c125f72656275696c645f706172616d6574657294939468092828680a680d680e680f4b067494514b044b0285944b01",
            "85948968042952947494529488680429529487945294757d948c095f6d65746164617461946804295294288c00947d948c07",
            "76657273696f6e944b01738c0177947d94682e4b02737573628c0565706f6368944b078c026c7294473f50624dd2f1a9fc8c",
            "046e616d65948c0178948c0468697374945d9428473ff80000000000004b024e86948865752e",
        ].joined()),
        (5, [
            "800595ab010000000000007d94288c0a73746174655f64696374948c0b636f6c6c656374696f6e73948c0b4f726465726564",
            "44696374949394295294288c086d6f64756c652e77948c0c746f7263682e5f7574696c73948c125f72656275696c645f7465",
            "6e736f725f763294939428288c0773746f72616765948c05746f726368948c0c466c6f617453746f726167659493948c0130",
            "948c03637075944b067494514b004b024b0386944b034b018694896804295294749452948c096d6f64756c652e7774946809",
            "2828680a680d680e680f4b067494514b004b034b0286944b014b038694896804295294749452948c086d6f64756c652e7094",
            "68078c125f72656275696c645f706172616d6574657294939468092828680a680d680e680f4b067494514b044b0285944b01",
            "85948968042952947494529488680429529487945294757d948c095f6d65746164617461946804295294288c00947d948c07",
            "76657273696f6e944b01738c0177947d94682e4b02737573628c0565706f6368944b078c026c7294473f50624dd2f1a9fc8c",
            "046e616d65948c0178948c0468697374945d9428473ff80000000000004b024e86948865752e",
        ].joined()),
    ]

    @Test func picklesWrittenByCPython() throws {
        for (protocolVersion, hex) in Self.cpythonPickles {
            var bytes: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                bytes.append(try #require(UInt8(hex[index ..< next], radix: 16)))
                index = next
            }
            let file = try TorchCheckpoint.parse(Data(zipCheckpoint(bytes, [("0", floats([0, 1, 2, 3, 4, 5]))])),
                                                 source: "protocol \(protocolVersion)")
            #expect(file.tensors == ["w": HostTensor(shape: [2, 3], data: [0, 1, 2, 3, 4, 5]),
                                     "wt": HostTensor(shape: [3, 2], data: [0, 3, 1, 4, 2, 5]),
                                     "p": HostTensor(shape: [2], data: [4, 5])], "protocol \(protocolVersion)")
        }
    }

    /// Random mutations and truncations: an error or a consistent result, never a crash.
    private static func fuzz(_ original: [UInt8], iterations: Int, seed: UInt64, label: String,
                             focus: Range<Int>? = nil, repack: (([UInt8]) -> [UInt8])? = nil) {
        var rng = TestRNG(seed)
        var accepted = 0, rejected = 0
        for iteration in 0 ..< iterations {
            var bytes = original
            let region = focus ?? 0 ..< bytes.count
            for _ in 0 ..< 1 + rng.below(4) {
                guard !bytes.isEmpty else { break }
                let at = region.lowerBound + rng.below(max(1, min(region.count, bytes.count - region.lowerBound)))
                guard at < bytes.count else { continue }
                switch rng.below(7) {
                case 0: bytes[at] ^= UInt8(1) << UInt8(rng.below(8))
                case 1: bytes[at] = rng.byte()
                case 2: bytes.removeSubrange(at ..< bytes.count)  // truncate
                case 3: bytes.insert(contentsOf: (0 ..< 1 + rng.below(8)).map { _ in rng.byte() }, at: at)
                case 4: bytes.removeSubrange(at ..< min(bytes.count, at + 1 + rng.below(8)))
                case 5: bytes[at] = [0x00, 0x7F, 0x80, 0xFF, 0x28, 0x2E, 0x52, 0x68, 0x71][rng.below(9)]
                default:
                    for k in 0 ..< min(8, bytes.count - at) { bytes[at + k] = 0xFF }
                }
            }
            if let repack { bytes = repack(bytes) }
            do {
                let file = try TorchCheckpoint.parse(Data(bytes), source: "\(label)#\(iteration)")
                accepted += 1
                for (name, t) in file.tensors {
                    #expect(t.shape.reduce(1, *) == t.data.count, "\(label)#\(iteration) \(name)")
                }
            } catch let error as NoiseError {
                rejected += 1
                #expect(!error.description.contains("\n"), "\(label)#\(iteration): \(error)")
            } catch {
                Issue.record("\(label)#\(iteration): not a NoiseError: \(error)")
            }
        }
        print("TorchCheckpoint fuzz \(label): \(rejected) rejected, \(accepted) accepted of \(iterations)")
        #expect(rejected > 0)
    }

    @Test func fuzzedCheckpointsNeverCrash() throws {
        let dir = try pthFixtures().appendingPathComponent("pth")
        let zip = Array(try Data(contentsOf: dir.appendingPathComponent("noisear_tiny.pth")))
        Self.fuzz(zip, iterations: 400, seed: 1, label: "zip")
        // The central directory and end records (the last ~3.3 KB).
        Self.fuzz(zip, iterations: 400, seed: 2, label: "zip-directory", focus: max(0, zip.count - 3400) ..< zip.count)
        let legacy = Array(try Data(contentsOf: dir.appendingPathComponent("noisear_tiny_legacy.pth")))
        // The pickles (the first ~4.1 KB), then anywhere.
        Self.fuzz(legacy, iterations: 1500, seed: 3, label: "legacy-pickles", focus: 0 ..< 4200)
        Self.fuzz(legacy, iterations: 300, seed: 4, label: "legacy")
        // Mutated pickles repacked in a zip with valid CRCs, so they reach the unpickler.
        let tensors = [FakeTensor(name: "a", key: "0", numel: 6, size: [2, 3], stride: [3, 1]),
                       FakeTensor(name: "b", key: "0", numel: 6, offset: 1, size: [3], stride: [2]),
                       FakeTensor(name: "c", storageClass: "HalfStorage", key: "1", numel: 2, size: [2], stride: [1])]
        let storages: [(String, [UInt8])] = [("0", floats([1, 2, 3, 4, 5, 6])), ("1", [0, 0x3C, 0, 0xC0])]
        let pickle = stateDictPickle(tensors, legacy: false)
        #expect(try TorchCheckpoint.parse(Data(zipCheckpoint(pickle, storages))).tensors.count == 3)
        Self.fuzz(pickle, iterations: 2000, seed: 5, label: "repacked-pickle") { zipCheckpoint($0, storages) }
        // CPython's protocol-4 pickle (FRAME, MEMOIZE, STACK_GLOBAL, BUILD, ...).
        let hex = try #require(Self.cpythonPickles.first { $0.0 == 4 }).1
        var p4: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            p4.append(try #require(UInt8(hex[index ..< next], radix: 16)))
            index = next
        }
        let sixFloats: [(String, [UInt8])] = [("0", floats([0, 1, 2, 3, 4, 5]))]
        #expect(try TorchCheckpoint.parse(Data(zipCheckpoint(p4, sixFloats))).tensors.count == 3)
        Self.fuzz(p4, iterations: 2000, seed: 6, label: "repacked-protocol-4") { zipCheckpoint($0, sixFloats) }
    }

    @Test func loadTimes() throws {
        let dir = try pthFixtures().appendingPathComponent("pth")
        let names = ["noisear_tiny", "noisear_tiny_f16", "noisear_tiny_bf16", "noisear_tiny_wrapped", "noisear_tiny_legacy",
                     "npnet_tiny", "npnet_tiny_oldtimm"]
        for name in names {
            let url = dir.appendingPathComponent(name + ".pth")
            _ = try TorchCheckpoint.read(url)
            let runs = 5
            let start = DispatchTime.now().uptimeNanoseconds
            var tensors = 0
            for _ in 0 ..< runs { tensors = try TorchCheckpoint.read(url).tensors.count }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(runs)
            let size = (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            print("TorchCheckpoint load \(name).pth: \(String(format: "%.2f", ms)) ms (\(tensors) tensors, \(size) bytes)")
        }
    }

    /// Nested dicts that share long keys through the pickle memo: a ~6 KB file whose flattened
    /// names would take gigabytes. The walk's budget, set by the file's size, refuses it early.
    @Test func sharedNestedDictsWithLongKeysAreRefusedByTheBudget() throws {
        var w = PickleWriter()
        w.op(0x7D)
        w.op(0x28)
        w.string("t")
        w.tensor(storageClass: "FloatStorage", key: "0", numel: 1, offset: 0, size: [1], stride: [1])
        w.op(0x75)
        w.op(0x71)
        w.op(0)
        for level in 1 ... 24 {
            w.op(0x7D)
            w.op(0x28)
            w.string(String(repeating: "a", count: 200) + "\(level)")
            w.op(0x68)
            w.op(UInt8(level - 1))
            w.string(String(repeating: "b", count: 200) + "\(level)")
            w.op(0x68)
            w.op(UInt8(level - 1))
            w.op(0x75)
            w.op(0x71)
            w.op(UInt8(level))
        }
        w.op(0x2E)
        let file = zipCheckpoint(w.bytes, [("0", floats([1]))])
        #expect(file.count < 12_000)
        var message: String?
        do { _ = try TorchCheckpoint.parse(Data(file)) } catch let e as NoiseError {
            guard case .format = e else { Issue.record("not a format error: \(e)"); return }
            message = e.description
        }
        let text = try #require(message)
        #expect(text.contains("for a file of this size"), "\(text)")
    }

    /// Each wrong kind of file is named by its content, as a format error, in one line.
    @Test func wrongFileKindsAreNamed() throws {
        let npy = NPY.serialized(HostTensor(shape: [2], data: [1, 2]))
        let png = try PNGImage(width: 1, height: 1, pixels: [1, 2, 3]).encoded()
        let cases: [(Data, String)] = [
            (Data(), "an empty file"),
            (npy, "a .npy array"),
            (png, "a PNG image"),
            (Data([0x80, 0x02, 0x4B, 0x07, 0x2E]), "not a PyTorch checkpoint"),
            (Data([0x1F, 0x8B, 8, 0, 0, 0, 0, 0]), "a gzip stream"),
            (Data("hello world, not weights".utf8), "unknown kind"),
        ]
        for (data, expected) in cases {
            let message = try #require(checkpointError { _ = try WeightsFile.parse(data, source: "w.bin") })
            #expect(message.contains(expected) && message.contains("w.bin"), "\(message)")
            #expect(!message.contains("header length"), "\(message)")
        }
        // A safetensors-only reader handed a PyTorch checkpoint says what it got.
        let pth = try Data(contentsOf: pthFixtures().appendingPathComponent("pth/noisear_tiny.pth"))
        let m = try #require(checkpointError { _ = try SafeTensorsFile.parse(pth, source: "m.pth") })
        #expect(m.contains("zip archive") && m.contains("not a safetensors file"), "\(m)")
        let legacyPickle = try #require(checkpointError { _ = try SafeTensorsFile.parse(Data([0x80, 2, 0x2E]), source: "x") })
        #expect(legacyPickle.contains("a pickle"), "\(legacyPickle)")
        // A legacy checkpoint of another protocol version names the version.
        var bad: [UInt8] = [0x80, 2, 0x8A, 10, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
        bad += [0x80, 2, 0x4D] + le(UInt16(1002)) + [0x2E]
        let v = try #require(checkpointError { _ = try TorchCheckpoint.parse(Data(bad)) })
        #expect(v.contains("version 1002"), "\(v)")
    }

    /// A device or a FIFO is not a regular file: said so, not "permission denied".
    @Test func devicesAndPipesAreNotRegularFiles() throws {
        let dev = try #require(checkpointError { _ = try WeightsFile.read(URL(fileURLWithPath: "/dev/zero")) })
        #expect(dev.contains("/dev/zero") && dev.contains("not a regular file"), "\(dev)")
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("noisear-fifo-\(getpid())")
        try? FileManager.default.removeItem(at: fifo)
        #expect(mkfifo(fifo.path, 0o600) == 0)
        defer { try? FileManager.default.removeItem(at: fifo) }
        let pipe = try #require(checkpointError { _ = try WeightsFile.read(fifo) })
        #expect(pipe.contains("pipe") && pipe.contains("not a regular file"), "\(pipe)")
    }
}
