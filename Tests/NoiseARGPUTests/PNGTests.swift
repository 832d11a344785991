import Foundation
import NoiseARGPU
import Testing

/// PNG reading and writing through libpng, text chunks, atomic writes, errors, grids.
@Suite struct PNGTests {
    private func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("noisear-png-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    private func sampleImage(width: Int, height: Int, seed: Int) -> [UInt8] {
        (0..<(width * height * 3)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ seed &* 101 &+ ($0 >> 3)) }
    }

    @Test func roundTripWithText() throws {
        let pixels = sampleImage(width: 7, height: 5, seed: 1)
        let text = ["prompt": "a red circle above a blue square", "seed": "42", "sampler": "ddim 50",
                    "Comment": "caf\u{e9} (Latin-1)", "note": "unicode \u{2713} \u{1F600}", "empty": ""]
        let image = PNGImage(width: 7, height: 5, pixels: pixels, text: text)
        let data = try image.encoded()
        #expect(Array(data.prefix(8)) == [137, 80, 78, 71, 13, 10, 26, 10])
        let back = try PNGImage.decode(data)
        #expect(back == image)
        #expect(back.text == text)
        // Deterministic bytes (text chunks in key order).
        #expect(try image.encoded() == data)
        // The Latin-1 values travel as tEXt, the others as iTXt.
        let s = String(decoding: data, as: UTF8.self)
        #expect(s.contains("tEXtprompt"))
        #expect(s.contains("iTXtnote"))

        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("x.png")
        try image.write(to: url)
        #expect(try PNGImage.read(from: url) == image)
        // Overwrite in place; no temporary files are left behind.
        var second = image
        second.text = ["prompt": "a green triangle"]
        try second.write(to: url)
        #expect(try PNGImage.read(from: url) == second)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["x.png"])

        // A rendered scene survives the round trip exactly.
        let scene = Scene.random(seed: 5)
        let png = PNGImage(width: 32, height: 32, pixels: scene.render(), text: ["prompt": scene.prompt])
        let read = try PNGImage.decode(png.encoded())
        #expect(try Reward.evaluate(image: read.pixels, prompt: read.text["prompt"]!).score == 1)
    }

    @Test func writeErrors() throws {
        let image = PNGImage(width: 2, height: 2, pixels: [UInt8](repeating: 9, count: 12))
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for url in [URL(fileURLWithPath: "/nonexistent-dir-\(getpid())/x.png"), dir] {
            do {
                try image.write(to: url)
                Issue.record("wrote \(url.path)")
            } catch let NoiseError.io(message) {
                #expect(message.contains("cannot write"), "\(message)")
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        #expect(throws: NoiseError.self) { try PNGImage(width: 2, height: 2, pixels: [1, 2, 3]).encoded() }
        #expect(throws: NoiseError.self) { try PNGImage(width: 0, height: 2, pixels: []).encoded() }
        for key in ["", " lead", "trail ", "dou  ble", String(repeating: "k", count: 80), "tick\u{2713}"] {
            #expect(throws: NoiseError.self) { try PNGImage(width: 2, height: 2, pixels: image.pixels, text: [key: "v"]).encoded() }
        }
    }

    @Test func readErrors() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A file that cannot be read is an `io` error; one that is not a good PNG a `format` one.
        func expectError(_ url: URL, _ fragment: String, io: Bool) {
            do {
                _ = try PNGImage.read(from: url)
                Issue.record("read \(url.path)")
            } catch let NoiseError.io(message) where io {
                #expect(message.contains(fragment), "\(message)")
            } catch let NoiseError.format(message) where !io {
                #expect(message.contains(fragment), "\(message)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        expectError(dir.appendingPathComponent("missing.png"), "no such file", io: true)
        expectError(dir, "folder", io: true)
        let good = try PNGImage(width: 16, height: 16, pixels: sampleImage(width: 16, height: 16, seed: 3)).encoded()
        let cases: [(String, Data)] = [
            ("empty.png", Data()),
            ("text.png", Data("hello, not a png".utf8)),
            ("header-only.png", good.prefix(40)),
            ("truncated.png", good.prefix(good.count - 30)),
            ("garbage.png", good.prefix(8) + Data((0..<200).map { UInt8(truncatingIfNeeded: $0 * 7) })),
            ("bad-idat.png", corruptIDAT(good)),
        ]
        for (name, data) in cases {
            let url = dir.appendingPathComponent(name)
            try data.write(to: url)
            expectError(url, name, io: false)
        }
    }

    /// Headers declaring huge images (up to 2^31 - 1 per side, libpng's own limit) are refused
    /// with a one-line `format` error naming the file, before any pixel memory is allocated.
    @Test func hugeDeclaredDimensionsAreRefused() throws {
        let row: [UInt8] = [1, 2, 3]
        for (w, h) in [(100_000, 1), (1, 100_000), (40_000, 40_000), (30_000, 30_000), (20_000, 20_000),
                       (Int(Int32.max), Int(Int32.max)), (Int(Int32.max), 1), (Int(UInt32.max), 1), (0, 5), (5, 0)] {
            let data = try buildPNG(width: w, height: h, colorType: 2, depth: 8, rows: [row])
            do {
                _ = try PNGImage.decode(data, source: "huge-\(w)x\(h).png")
                Issue.record("a \(w)x\(h) PNG header was accepted")
            } catch let NoiseError.format(message) {
                #expect(message.contains("huge-\(w)x\(h).png") && !message.contains("\n"), "\(message)")
            } catch {
                Issue.record("\(w)x\(h): unexpected error \(error)")
            }
        }
    }

    /// Gray, gray+alpha, palette, 16-bit and RGBA files come back as 8-bit RGB, with tEXt, zTXt
    /// and iTXt chunks.
    @Test func readsOtherKinds() throws {
        let text: [(String, [UInt8])] = [
            ("tEXt", Array("prompt".utf8) + [0] + Array("a blue square".utf8)),
            ("zTXt", Array("seed".utf8) + [0, 0] + storedZlib(Array("17".utf8))),
            ("iTXt", Array("sampler".utf8) + [0, 0, 0] + Array("en".utf8) + [0, 0] + Array("euler \u{2713}".utf8)),
            ("iTXt", Array("packed".utf8) + [0, 1, 0, 0, 0] + storedZlib(Array("zipped".utf8))),
        ]
        let expectedText = ["prompt": "a blue square", "seed": "17", "sampler": "euler \u{2713}", "packed": "zipped"]
        // 8-bit gray.
        let gray = try PNGImage.decode(buildPNG(width: 3, height: 2, colorType: 0, depth: 8,
                                                rows: [[0, 128, 255], [10, 20, 30]], chunks: text))
        #expect(gray.pixels == [0, 0, 0, 128, 128, 128, 255, 255, 255, 10, 10, 10, 20, 20, 20, 30, 30, 30])
        #expect(gray.text == expectedText)
        // 1-bit gray.
        let bits = try PNGImage.decode(buildPNG(width: 3, height: 1, colorType: 0, depth: 1, rows: [[0b1010_0000]]))
        #expect(bits.pixels == [255, 255, 255, 0, 0, 0, 255, 255, 255])
        // Palette, 8-bit indices.
        let palette = try PNGImage.decode(buildPNG(width: 2, height: 2, colorType: 3, depth: 8, rows: [[0, 1], [1, 2]],
                                                   chunks: [("PLTE", [255, 0, 0, 0, 255, 0, 1, 2, 3])]))
        #expect(palette.pixels == [255, 0, 0, 0, 255, 0, 0, 255, 0, 1, 2, 3])
        // 16-bit RGB, no gamma chunk: treated as sRGB-encoded, scaled by 255/65535 and rounded.
        let deep = try PNGImage.decode(buildPNG(width: 2, height: 1, colorType: 2, depth: 16,
                                                rows: [[0x12, 0x34, 0x80, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x40, 0x10, 0xC8, 0x00]]))
        #expect(deep.pixels == [18, 128, 255, 0, 64, 199])
        // RGBA: opaque pixels keep their colour, transparent ones go to black.
        let rgba = try PNGImage.decode(buildPNG(width: 2, height: 1, colorType: 6, depth: 8,
                                                rows: [[10, 200, 30, 255, 99, 99, 99, 0]]))
        #expect(rgba.pixels == [10, 200, 30, 0, 0, 0])
        // Gray + alpha, opaque.
        let ga = try PNGImage.decode(buildPNG(width: 1, height: 1, colorType: 4, depth: 8, rows: [[77, 255]]))
        #expect(ga.pixels == [77, 77, 77])
        // A text chunk with a bad CRC is skipped, the image still reads.
        var damaged = [UInt8](try buildPNG(width: 1, height: 1, colorType: 0, depth: 8, rows: [[5]], chunks: [text[0]]))
        damaged[8 + 25 + 8 + 2] ^= 0xFF  // inside the tEXt body
        let d = try PNGImage.decode(Data(damaged))
        #expect(d.text.isEmpty && d.pixels == [5, 5, 5])
    }

    @Test func grid() throws {
        let tiles = (0..<5).map { i in PNGImage(width: 2, height: 2, pixels: [UInt8](repeating: UInt8(i * 10 + 1), count: 12)) }
        let g = try PNGImage.grid(tiles, spacing: 1, background: (255, 0, 255), text: ["rows": "2"])
        #expect(g.width == 3 * 2 + 4 && g.height == 2 * 2 + 3)
        func px(_ x: Int, _ y: Int) -> [UInt8] { Array(g.pixels[((y * g.width + x) * 3)..<((y * g.width + x) * 3 + 3)]) }
        #expect(px(0, 0) == [255, 0, 255])
        #expect(px(1, 1) == [1, 1, 1])
        #expect(px(4, 2) == [11, 11, 11])
        #expect(px(7, 1) == [21, 21, 21])
        #expect(px(1, 4) == [31, 31, 31])
        #expect(px(4, 5) == [41, 41, 41])
        #expect(px(7, 4) == [255, 0, 255])  // the sixth cell stays empty
        #expect(try PNGImage.decode(g.encoded()) == g)
        let row = try PNGImage.grid(tiles, columns: 5, spacing: 0)
        #expect(row.width == 10 && row.height == 2)
        #expect(throws: NoiseError.self) { try PNGImage.grid([]) }
        #expect(throws: NoiseError.self) {
            try PNGImage.grid([tiles[0], PNGImage(width: 3, height: 2, pixels: [UInt8](repeating: 0, count: 18))])
        }
    }
}

// MARK: Hand-built PNG files (test-only encoder: stored deflate blocks, own CRC-32 and Adler-32)

private let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    return c ^ 0xFFFF_FFFF
}

private func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

/// A zlib stream of stored (uncompressed) deflate blocks.
private func storedZlib(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x78, 0x01]
    var pos = 0
    repeat {
        let n = min(65535, data.count - pos)
        let final: UInt8 = pos + n == data.count ? 1 : 0
        out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
        out += data[pos..<(pos + n)]
        pos += n
    } while pos < data.count
    var a: UInt32 = 1, b: UInt32 = 0
    for x in data { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
    return out + bigEndian(b << 16 | a)
}

private func pngChunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
    bigEndian(UInt32(body.count)) + Array(type.utf8) + body + bigEndian(crc32(Array(type.utf8) + body))
}

/// A PNG of the given colour type and bit depth; `rows` are the packed row bytes (no filter byte);
/// `chunks` go between IHDR and IDAT.
private func buildPNG(width: Int, height: Int, colorType: UInt8, depth: UInt8, rows: [[UInt8]],
                      chunks: [(String, [UInt8])] = []) throws -> Data {
    let ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [depth, colorType, 0, 0, 0]
    var out: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10] + pngChunk("IHDR", ihdr)
    for (type, body) in chunks { out += pngChunk(type, body) }
    out += pngChunk("IDAT", storedZlib(rows.flatMap { [0] + $0 }))
    out += pngChunk("IEND", [])
    return Data(out)
}

/// The PNG with its IDAT data overwritten (and the CRC fixed up, so zlib reports the damage).
private func corruptIDAT(_ png: Data) -> Data {
    var bytes = [UInt8](png)
    var pos = 8
    while pos + 8 <= bytes.count {
        let n = Int(bytes[pos]) << 24 | Int(bytes[pos + 1]) << 16 | Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
        if String(decoding: bytes[(pos + 4)..<(pos + 8)], as: UTF8.self) == "IDAT" {
            for i in (pos + 10)..<(pos + 8 + n) { bytes[i] = UInt8(truncatingIfNeeded: i &* 13) }
            let c = crc32(Array(bytes[(pos + 4)..<(pos + 8 + n)]))
            bytes.replaceSubrange((pos + 8 + n)..<(pos + 12 + n), with: bigEndian(c))
            break
        }
        pos += 12 + n
    }
    return Data(bytes)
}
