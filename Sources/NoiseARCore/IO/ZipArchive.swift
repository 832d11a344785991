import Foundation

/// Bounds-checked little-endian reads from a byte buffer: every read returns nil instead of
/// reading outside the buffer.
struct ByteView {
    let raw: UnsafeRawBufferPointer

    var count: Int { raw.count }

    /// True when `length` bytes starting at `offset` lie inside the buffer.
    func contains(_ offset: Int, _ length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= raw.count && length <= raw.count - offset
    }

    func u8(_ offset: Int) -> UInt8? {
        contains(offset, 1) ? raw[offset] : nil
    }

    func u16(_ offset: Int) -> UInt16? {
        contains(offset, 2) ? UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) : nil
    }

    func u32(_ offset: Int) -> UInt32? {
        contains(offset, 4) ? UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) : nil
    }

    func u64(_ offset: Int) -> UInt64? {
        contains(offset, 8) ? UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) : nil
    }

    /// The bytes `offset ..< offset + length`, or nil when outside the buffer.
    func slice(_ offset: Int, _ length: Int) -> UnsafeRawBufferPointer? {
        guard contains(offset, length) else { return nil }
        return UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + length])
    }
}

/// A minimal reader of the zip container as `torch.save` writes it (since PyTorch 1.6): the
/// end-of-central-directory record (zip64 form included), the central directory, and stored
/// (uncompressed) entries, each checked against its CRC-32. Compressed or encrypted entries
/// and multi-disk archives are refused with an error naming the entry.
///
/// The archive borrows the caller's bytes: use it only inside the `withUnsafeBytes` call that
/// produced `raw`.
struct ZipArchive {
    struct Entry {
        var name: String
        var flags: UInt16
        var method: UInt16
        var crc32: UInt32
        var compressedSize: Int
        var size: Int
        var localHeaderOffset: Int
    }

    let source: String
    let bytes: ByteView
    /// Entries in central-directory order.
    private(set) var entries: [Entry] = []
    private var byName: [String: Int] = [:]

    /// The zip local-file-header signature "PK\u{3}\u{4}".
    static let localSignature: UInt32 = 0x0403_4B50
    private static let centralSignature: UInt32 = 0x0201_4B50
    private static let endSignature: UInt32 = 0x0605_4B50
    private static let end64Signature: UInt32 = 0x0606_4B50
    private static let end64LocatorSignature: UInt32 = 0x0706_4B50

    private func fail(_ why: String) -> NoiseError {
        .format("\(source): not a readable zip archive: \(why)")
    }

    init(_ raw: UnsafeRawBufferPointer, source: String) throws {
        self.source = source
        self.bytes = ByteView(raw: raw)
        try readCentralDirectory()
    }

    /// Converts a 64-bit size or offset to Int when it can lie inside the file.
    private func fileOffset(_ value: UInt64, _ what: @autoclosure () -> String) throws -> Int {
        guard value <= UInt64(bytes.count) else {
            throw fail("\(what()) \(value) is beyond the end of the file (\(bytes.count) bytes)")
        }
        return Int(value)
    }

    private mutating func readCentralDirectory() throws {
        let b = bytes
        guard b.count >= 22 else { throw fail("file is \(b.count) bytes, too short for a zip archive") }
        // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
        var endOffset = -1
        var candidate = b.count - 22
        let lowest = max(0, b.count - 22 - 65535)
        while candidate >= lowest {
            if b.u32(candidate) == Self.endSignature, let commentLength = b.u16(candidate + 20),
               Int(commentLength) <= b.count - candidate - 22 {
                endOffset = candidate
                break
            }
            candidate -= 1
        }
        guard endOffset >= 0 else { throw fail("no end-of-central-directory record") }
        guard let disk = b.u16(endOffset + 4), let cdDisk = b.u16(endOffset + 6),
              let entries16 = b.u16(endOffset + 10), let cdSize32 = b.u32(endOffset + 12),
              let cdOffset32 = b.u32(endOffset + 16)
        else { throw fail("truncated end-of-central-directory record") }

        var entryCount = UInt64(entries16)
        var cdSize = UInt64(cdSize32)
        var cdOffset = UInt64(cdOffset32)
        var diskNumber = UInt32(disk), cdDiskNumber = UInt32(cdDisk)
        // Zip64: a locator just before the end record points at the zip64 end record.
        if endOffset >= 20, b.u32(endOffset - 20) == Self.end64LocatorSignature {
            guard let end64 = b.u64(endOffset - 20 + 8) else { throw fail("truncated zip64 locator") }
            let at = try fileOffset(end64, "zip64 end record offset")
            guard b.u32(at) == Self.end64Signature, let d = b.u32(at + 16), let cd = b.u32(at + 20),
                  let n = b.u64(at + 32), let size = b.u64(at + 40), let offset = b.u64(at + 48)
            else { throw fail("bad zip64 end-of-central-directory record at offset \(at)") }
            diskNumber = d
            cdDiskNumber = cd
            entryCount = n
            cdSize = size
            cdOffset = offset
        }
        guard diskNumber == 0, cdDiskNumber == 0 else {
            throw NoiseError.format("\(source): multi-disk zip archives are not supported")
        }
        let start = try fileOffset(cdOffset, "central directory offset")
        let size = try fileOffset(cdSize, "central directory size")
        guard size <= b.count - start else {
            throw fail("central directory [\(start), +\(size)) runs past the end of the file (\(b.count) bytes)")
        }
        // Each central entry takes at least 46 bytes.
        guard entryCount <= UInt64(size / 46) else {
            throw fail("\(entryCount) entries cannot fit in a central directory of \(size) bytes")
        }
        let end = start + size
        var at = start
        for index in 0 ..< Int(entryCount) {
            guard at <= end - 46, b.u32(at) == Self.centralSignature,
                  let flags = b.u16(at + 8), let method = b.u16(at + 10), let crc = b.u32(at + 16),
                  let csize32 = b.u32(at + 20), let usize32 = b.u32(at + 24),
                  let nameLength = b.u16(at + 28), let extraLength = b.u16(at + 30),
                  let commentLength = b.u16(at + 32), let entryDisk = b.u16(at + 34),
                  let local32 = b.u32(at + 42)
            else { throw fail("central directory entry \(index) at offset \(at) is malformed") }
            let variable = Int(nameLength) + Int(extraLength) + Int(commentLength)
            guard variable <= end - at - 46, let nameBytes = b.slice(at + 46, Int(nameLength)),
                  let extra = b.slice(at + 46 + Int(nameLength), Int(extraLength))
            else { throw fail("central directory entry \(index) runs past the central directory") }
            let name = String(decoding: nameBytes, as: UTF8.self)

            var usize = UInt64(usize32), csize = UInt64(csize32), local = UInt64(local32)
            var diskOfEntry = UInt32(entryDisk)
            if usize32 == 0xFFFF_FFFF || csize32 == 0xFFFF_FFFF || local32 == 0xFFFF_FFFF || entryDisk == 0xFFFF {
                try readZip64Extra(ByteView(raw: extra), name: name, usize: &usize, csize: &csize,
                                   local: &local, disk: &diskOfEntry,
                                   needs: (usize32 == 0xFFFF_FFFF, csize32 == 0xFFFF_FFFF,
                                           local32 == 0xFFFF_FFFF, entryDisk == 0xFFFF))
            }
            guard diskOfEntry == 0 else {
                throw NoiseError.format("\(source): zip entry \(Text.quoted(name)) is on disk \(diskOfEntry) of a multi-disk archive")
            }
            let entry = Entry(
                name: name, flags: flags, method: method, crc32: crc,
                compressedSize: try fileOffset(csize, "compressed size of \(Text.quoted(name))"),
                size: usize <= UInt64(Int.max) ? Int(usize) : Int.max,
                localHeaderOffset: try fileOffset(local, "local header offset of \(Text.quoted(name))"))
            guard byName[name] == nil else { throw fail("entry \(Text.quoted(name)) appears twice") }
            byName[name] = entries.count
            entries.append(entry)
            at += 46 + variable
        }
    }

    /// The zip64 extended-information extra field (id 1): 64-bit values for exactly the fields
    /// whose 32-bit (16-bit for the disk) values are all ones, in this order.
    private func readZip64Extra(_ extra: ByteView, name: String, usize: inout UInt64, csize: inout UInt64,
                                local: inout UInt64, disk: inout UInt32,
                                needs: (Bool, Bool, Bool, Bool)) throws {
        var at = 0
        while let id = extra.u16(at), let length = extra.u16(at + 2) {
            let body = at + 4
            guard extra.contains(body, Int(length)) else { break }
            if id == 1 {
                var field = body
                let bodyEnd = body + Int(length)
                func next8() throws -> UInt64 {
                    guard field <= bodyEnd - 8, let v = extra.u64(field) else {
                        throw fail("zip64 extra field of \(Text.quoted(name)) is too short")
                    }
                    field += 8
                    return v
                }
                if needs.0 { usize = try next8() }
                if needs.1 { csize = try next8() }
                if needs.2 { local = try next8() }
                if needs.3 {
                    guard field <= bodyEnd - 4, let v = extra.u32(field) else {
                        throw fail("zip64 extra field of \(Text.quoted(name)) is too short")
                    }
                    disk = v
                }
                return
            }
            at = body + Int(length)
        }
        throw fail("entry \(Text.quoted(name)) needs a zip64 extra field and has none")
    }

    func entry(named name: String) -> Entry? {
        byName[name].map { entries[$0] }
    }

    /// The stored bytes of an entry, bounds-checked against the file and checked against the
    /// entry's CRC-32.
    func contents(of entry: Entry) throws -> UnsafeRawBufferPointer {
        var name: String { Text.quoted(entry.name) }
        if entry.flags & 1 != 0 {
            throw NoiseError.format("\(source): zip entry \(name) is encrypted")
        }
        guard entry.method == 0 else {
            let how = entry.method == 8 ? "deflate-compressed" : "compressed (method \(entry.method))"
            throw NoiseError.format("\(source): zip entry \(name) is \(how); only stored entries are read "
                + "(torch.save stores its entries uncompressed: re-save, or unzip and re-zip with `zip -0`)")
        }
        guard entry.compressedSize == entry.size else {
            throw fail("stored entry \(name) has compressed size \(entry.compressedSize) but size \(entry.size)")
        }
        let b = bytes
        let at = entry.localHeaderOffset
        guard b.u32(at) == Self.localSignature, let nameLength = b.u16(at + 26), let extraLength = b.u16(at + 28) else {
            throw fail("entry \(name): no local header at offset \(at)")
        }
        let start = at + 30 + Int(nameLength) + Int(extraLength)
        guard let data = b.slice(start, entry.size) else {
            throw fail("entry \(name): \(entry.size) bytes at offset \(start) run past the end of the file (\(b.count) bytes)")
        }
        let crc = CRC32.checksum(data)
        guard crc == entry.crc32 else {
            throw fail("entry \(name) is corrupt (CRC-32 \(hex(crc)), expected \(hex(entry.crc32)))")
        }
        return data
    }

    private func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
    }
}

/// CRC-32 (the zip/IEEE polynomial, reflected 0xEDB88320), eight bytes per step.
enum CRC32 {
    /// Eight 256-entry tables: table k gives the CRC of a byte followed by k zero bytes.
    private static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0 ..< 256 {
            var c = UInt32(i)
            for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[i] = c
        }
        for i in 0 ..< 256 {
            for k in 1 ..< 8 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()

    static func checksum(_ data: UnsafeRawBufferPointer) -> UInt32 {
        tables.withUnsafeBufferPointer { t in
            var crc: UInt32 = 0xFFFF_FFFF
            var i = 0
            let n = data.count
            while i + 8 <= n {
                let lo = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ crc
                let hi = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                crc = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                crc = (crc >> 8) ^ t[Int((crc ^ UInt32(data[i])) & 0xFF)]
                i += 1
            }
            return crc ^ 0xFFFF_FFFF
        }
    }
}
