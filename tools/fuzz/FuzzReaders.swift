// libFuzzer entry point for the file readers, compiled together with Sources/NoiseARCore/IO
// (and the few core files they use) by tools/fuzz.sh; not part of the package build.
//
// The reader under test is chosen by NOISEAR_FUZZ_TARGET: pth (PyTorch checkpoints: zip and
// legacy, through their pickles), pickle (the unpickler alone, with a persistent-id loader like
// torch's), safetensors, npy or png. Any input may be rejected with an error; a crash, a trap,
// a sanitizer report, a time-out or a memory-limit breach is a finding.
import Foundation

enum FuzzTarget: String, CaseIterable {
    case pth, pickle, safetensors, npy, png

    static let current: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["NOISEAR_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
            FileHandle.standardError.write(Data("NOISEAR_FUZZ_TARGET must be one of \(names)\n".utf8))
            exit(2)
        }
        return t
    }()

    func run(_ data: Data) {
        switch self {
        case .pth:
            _ = try? TorchCheckpoint.parse(data, source: "fuzz.pth")
            _ = try? WeightsFile.parse(data, source: "fuzz")
        case .pickle:
            data.withUnsafeBytes { raw in
                var vm = Unpickler(raw, context: "fuzz.pkl") { pid in
                    guard case .tuple(let items, _) = pid, items.count >= 5, case .string(let key) = items[2],
                          case .int(let count) = items[4], count >= 0 else { return .none }
                    return .storage(StorageRef(key: key, dtype: .float32, offset: 0, count: count))
                }
                _ = try? vm.load()
            }
        case .safetensors:
            _ = try? SafeTensorsFile.parse(data, source: "fuzz.safetensors")
            _ = try? SafeTensorsFile.parse(data, source: "fuzz.safetensors", skippingUnsupported: true)
        case .npy:
            _ = try? NPY.parse(data, source: "fuzz.npy")
        case .png:
            _ = try? PNGImage.decode(data, source: "fuzz.png")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    FuzzTarget.current.run(Data(bytes: bytes, count: count))
    return 0
}
