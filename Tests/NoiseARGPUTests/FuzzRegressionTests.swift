import Foundation
import NoiseARGPU
import Testing

/// Every input a fuzzer ever flagged (tools/fuzz/regressions/TARGET/) through its reader here
/// too: each must be refused with one line (or read), never crash or exhaust memory. The seeds
/// (tools/fuzz/seeds/) must all read, so the fuzzers start from valid files.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("tools/fuzz")

    static func files(_ folder: String, _ target: String) -> [URL] {
        let dir = root.appendingPathComponent(folder).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0 != "README.md" }.sorted().map { dir.appendingPathComponent($0) }
    }

    static func read(_ target: String, _ data: Data) throws {
        switch target {
        case "pth", "pickle": _ = try WeightsFile.parse(data, source: "input")
        case "safetensors": _ = try SafeTensorsFile.parse(data, source: "input", skippingUnsupported: true)
        case "npy": _ = try NPY.parse(data, source: "input")
        default: _ = try PNGImage.decode(data, source: "input")
        }
    }

    @Test func regressionInputsAreRefusedInOneLine() throws {
        var count = 0
        for target in ["pth", "pickle", "safetensors", "npy", "png"] {
            for url in Self.files("regressions", target) {
                count += 1
                do {
                    try Self.read(target, Data(contentsOf: url))
                } catch let e as NoiseError {
                    #expect(!e.description.contains("\n"), "\(url.lastPathComponent): \(e)")
                }
            }
        }
        print("fuzz regression inputs replayed: \(count)")
    }

    @Test func aPNGDeclaringAHugeChunkIsRefusedBeforeLibpngAllocatesIt() throws {
        // From the PNG fuzzer: 116 bytes whose second tEXt chunk declares 134 MB (2.1 GB of
        // memory before its error).
        let url = try #require(Self.files("regressions", "png").first { $0.lastPathComponent.hasPrefix("oom-") })
        #expect(throws: NoiseError.self) { try Self.read("png", Data(contentsOf: url)) }
        do { try Self.read("png", Data(contentsOf: url)) } catch {
            #expect("\(error)".contains("declares 134217747 bytes, past the end of the file"), "\(error)")
        }
    }

    @Test func seedsAreValidFiles() throws {
        for target in ["pth", "safetensors", "npy", "png"] {
            let seeds = Self.files("seeds", target)
            #expect(!seeds.isEmpty, "no \(target) seeds")
            for url in seeds {
                #expect(throws: Never.self, "\(url.lastPathComponent)") { try Self.read(target, Data(contentsOf: url)) }
            }
        }
    }
}
