import Foundation

/// PyTorch checkpoints (`torch.save` files, `.pth` / `.pt` / `.bin`) read natively, without
/// PyTorch and without running any code from the file.
///
/// Formats: the zip format of PyTorch 1.6 and later (`<folder>/data.pkl` plus one stored entry
/// `<folder>/data/<key>` per storage; little- or big-endian per `<folder>/byteorder`) and the
/// legacy format (a magic-number pickle, the protocol version, the system info, the main
/// pickle, the list of storage keys, then each storage as an 8-byte little-endian element
/// count and its little-endian elements). Storages of float32, float16, bfloat16 and float64
/// are converted to float32, and so are integer and bool buffers (such as old timm's int64
/// `relative_position_index`); `dtypes` keeps each tensor's original type ("F32", "F16",
/// "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"). Views are materialised from their
/// storage offset, size and stride.
///
/// The unpickled object becomes named tensors by these rules:
/// - a dict (or OrderedDict) whose leaves are all tensors is the state dict; nested dicts are
///   flattened with "." (NPNet's `{"unet_svd": sd, ..., "alpha": Parameter}` gives
///   `unet_svd.<key>`, ..., `alpha`); a plain number under a top-level `alpha` or `beta`
///   becomes a one-element tensor;
/// - otherwise the first of `wrapperKeys` that holds tensors is taken, by the same rules
///   (`{"model": sd, "epoch": 3}`);
/// - otherwise every tensor in the dict is taken and the other entries ignored;
/// - in any dict whose keys all start with `module.` (DataParallel), that prefix is dropped.
public enum TorchCheckpoint {
    /// Keys under which training scripts commonly keep the state dict, in order of preference.
    public static let wrapperKeys = ["state_dict", "model_state_dict", "model", "net", "module"]

    /// The most values all tensors together may hold, as a multiple of the values stored (plus
    /// 2^24): views may share or repeat storage elements, but not without bound.
    static let maxExpansion = 4

    /// The legacy format's first pickle: this integer.
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    /// Reads a checkpoint file. Errors name the path.
    public static func read(_ url: URL) throws -> SafeTensorsFile {
        try parse(try InputFile.contents(of: url), source: url.path)
    }

    /// Parses the bytes of a checkpoint. `source` names it in error messages and becomes the
    /// result's `source`.
    public static func parse(_ data: Data, source: String = "<memory>") throws -> SafeTensorsFile {
        try data.withUnsafeBytes { raw in
            let b = ByteView(raw: raw)
            if b.u32(0) == ZipArchive.localSignature || b.u32(0) == 0x0605_4B50 {
                return try parseZip(raw, source: source)
            }
            if b.u8(0) == 0x80 {
                return try parseLegacy(raw, source: source)
            }
            if let magic = b.slice(257, 5), Array(magic) == Array("ustar".utf8) {
                throw NoiseError.format(
                    "\(source): a tar-format PyTorch checkpoint (the oldest torch.save format) is not supported; re-save it with a newer PyTorch")
            }
            throw NoiseError.format("\(source): not a PyTorch checkpoint (neither a zip archive nor a pickle)")
        }
    }


    // MARK: - Storages

    /// The root storages of a checkpoint: type, element count and (once known) bytes.
    final class Storages {
        struct Root {
            var dtype: TorchDType
            var count: Int
            var data: UnsafeRawBufferPointer?
        }

        let source: String
        var roots: [String: Root] = [:]
        var bigEndian = false

        init(source: String) { self.source = source }

        /// Registers a root storage, or checks a repeated reference against the first.
        func register(_ key: String, _ dtype: TorchDType, _ count: Int) throws {
            if let old = roots[key] {
                guard old.dtype == dtype, old.count == count else {
                    throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)) is referenced as "
                        + "\(old.count) x \(old.dtype.rawValue) and as \(count) x \(dtype.rawValue)")
                }
                return
            }
            roots[key] = Root(dtype: dtype, count: count, data: nil)
        }

        /// Bytes of `count` elements of `dtype`, or an error when that overflows.
        func byteCount(_ key: String, _ dtype: TorchDType, _ count: Int) throws -> Int {
            let (n, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)) of \(count) elements is too large")
            }
            return n
        }
    }

    /// The fields of a persistent id `('storage', torch.XStorage, key, location, numel, ...)`.
    private static func storageRecord(_ pid: PickleValue, fields: Int, source: String, context: String)
        throws -> (dtype: TorchDType, key: String, count: Int, rest: [PickleValue])
    {
        func bad(_ why: String) -> NoiseError { .format("\(source): \(context): bad storage record: \(why)") }
        guard case .tuple(let items, _) = pid, let first = items.first else {
            throw bad("the persistent id is \(pid.kind), not a tuple")
        }
        guard case .string(let typename) = first, typename == "storage" else {
            if case .string("module") = first {
                throw NoiseError.format("\(source): the checkpoint saves a whole nn.Module (its source code), "
                    + "not a state dict; save model.state_dict() instead")
            }
            throw bad("the persistent id starts with \(first.kind), not 'storage'")
        }
        guard items.count == fields else { throw bad("\(items.count) fields instead of \(fields)") }
        guard case .global(.storageType(let dtype)) = items[1] else {
            throw bad("storage type is \(items[1].kind), not a torch.*Storage class")
        }
        guard case .string(let key) = items[2] else { throw bad("storage key is \(items[2].kind)") }
        guard case .int(let count) = items[4], count >= 0 else {
            throw bad("element count of storage \(Text.quoted(key, limit: 40)) is \(items[4].kind), not an int >= 0")
        }
        return (dtype, key, count, Array(items.dropFirst(5)))
    }

    // MARK: - Zip format

    private static func parseZip(_ raw: UnsafeRawBufferPointer, source: String) throws -> SafeTensorsFile {
        let zip = try ZipArchive(raw, source: source)
        // The records live in one top folder, whose name varies ("archive", the file's stem, ...).
        let pickles = zip.entries.filter {
            $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/", omittingEmptySubsequences: false).count == 2
        }
        guard let pickle = pickles.first else {
            throw NoiseError.format("\(source): zip archive without a <folder>/data.pkl record: not a PyTorch checkpoint")
        }
        guard pickles.count == 1 else {
            throw NoiseError.format("\(source): zip archive with \(pickles.count) data.pkl records")
        }
        let folder = String(pickle.name.dropLast("data.pkl".count))
        let storages = Storages(source: source)
        if let order = zip.entry(named: folder + "byteorder") {
            let text = String(decoding: try zip.contents(of: order), as: UTF8.self)
            switch text.trimmingCharacters(in: .whitespacesAndNewlines) {
            case "little": storages.bigEndian = false
            case "big": storages.bigEndian = true
            default: throw NoiseError.format("\(source): byteorder record says \(Text.quoted(text, limit: 20))")
            }
        }
        let context = "\(Text.quoted(pickle.name, limit: 60))"
        let pickleBytes = try zip.contents(of: pickle)
        var vm = Unpickler(pickleBytes, context: "\(source): \(context)") { pid in
            let r = try storageRecord(pid, fields: 5, source: source, context: context)
            if storages.roots[r.key]?.data == nil {
                let name = folder + "data/" + r.key
                guard let entry = zip.entry(named: name) else {
                    throw NoiseError.format("\(source): storage \(Text.quoted(r.key, limit: 40)) has no record \(Text.quoted(name, limit: 60))")
                }
                let bytes = try zip.contents(of: entry)
                let expected = try storages.byteCount(r.key, r.dtype, r.count)
                guard bytes.count == expected else {
                    throw NoiseError.format("\(source): record \(Text.quoted(name, limit: 60)) has \(bytes.count) bytes "
                        + "for \(r.count) x \(r.dtype.rawValue) (\(expected) bytes)")
                }
                try storages.register(r.key, r.dtype, r.count)
                storages.roots[r.key]?.data = bytes
            } else {
                try storages.register(r.key, r.dtype, r.count)
            }
            return .storage(StorageRef(key: r.key, dtype: r.dtype, offset: 0, count: r.count))
        }
        let object = try vm.load()
        return try tensors(from: object, storages: storages, source: source, fileBytes: raw.count)
    }

    // MARK: - Legacy format

    private static func parseLegacy(_ raw: UnsafeRawBufferPointer, source: String) throws -> SafeTensorsFile {
        let b = ByteView(raw: raw)
        var position = 0
        func next(_ what: String, _ load: Unpickler.PersistentLoad? = nil) throws -> PickleValue {
            var vm = Unpickler(raw, from: position, context: "\(source): \(what) pickle", persistentLoad: load)
            let v = try vm.load()
            position = vm.position
            return v
        }
        let magic = try next("magic number")
        guard case .bigInt(let m) = magic, m == legacyMagic else {
            throw NoiseError.format("\(source): a pickle, but not a PyTorch checkpoint (no PyTorch magic number)")
        }
        let version = try next("protocol version")
        guard case .int(1001) = version else {
            let shown: String
            if case .int(let v) = version { shown = String(v) } else { shown = version.kind }
            throw NoiseError.format("\(source): legacy checkpoint protocol version \(shown) is not supported (only 1001)")
        }
        let sysInfo = try next("system info")
        if case .dict(let info) = sysInfo, case .bool(false)? = info["little_endian"] {
            throw NoiseError.format("\(source): a big-endian legacy checkpoint is not supported")
        }

        let storages = Storages(source: source)
        let object = try next("main") { pid in
            let r = try storageRecord(pid, fields: 6, source: source, context: "main pickle")
            try storages.register(r.key, r.dtype, r.count)
            // View metadata: None, or (view_key, element offset, element count) inside the root.
            switch r.rest[0] {
            case .none:
                return .storage(StorageRef(key: r.key, dtype: r.dtype, offset: 0, count: r.count))
            case .tuple(let view, _) where view.count == 3:
                guard case .int(let offset) = view[1], case .int(let count) = view[2], offset >= 0, count >= 0,
                      offset <= r.count, count <= r.count - offset
                else {
                    throw NoiseError.format("\(source): main pickle: storage view \(view[1].kind), \(view[2].kind) "
                        + "does not lie inside storage \(Text.quoted(r.key, limit: 40)) of \(r.count) elements")
                }
                return .storage(StorageRef(key: r.key, dtype: r.dtype, offset: offset, count: count))
            default:
                throw NoiseError.format("\(source): main pickle: storage view is \(r.rest[0].kind)")
            }
        }
        let keysValue = try next("storage keys")
        guard let keys = keysValue.sequence else {
            throw NoiseError.format("\(source): the storage key list is \(keysValue.kind), not a list")
        }
        for keyValue in keys {
            guard case .string(let key) = keyValue else {
                throw NoiseError.format("\(source): a storage key is \(keyValue.kind), not a string")
            }
            guard let root = storages.roots[key] else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)) is listed but no tensor uses it")
            }
            guard root.data == nil else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)) is listed twice")
            }
            guard let header = b.u64(position) else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)): the file ends at byte \(position) before its size")
            }
            guard header == UInt64(root.count) else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)) holds \(header) elements; "
                    + "the pickle says \(root.count)")
            }
            let n = try storages.byteCount(key, root.dtype, root.count)
            guard let data = b.slice(position + 8, n) else {
                throw NoiseError.format("\(source): storage \(Text.quoted(key, limit: 40)): \(n) bytes at byte \(position + 8) "
                    + "run past the end of the file (\(b.count) bytes)")
            }
            storages.roots[key]?.data = data
            position += 8 + n
        }
        return try tensors(from: object, storages: storages, source: source, fileBytes: raw.count)
    }

    // MARK: - From the unpickled object to named tensors

    private enum Leaf {
        case tensor(TensorRef)
        case scalar(Double)
    }

    /// The resource budget of turning the unpickled object into named tensors, set by the
    /// file's size: dict entries visited (shared sub-dicts are visited once per use, so a hostile
    /// file could make the walk exponential) and bytes of flattened names (nested dicts that
    /// share long keys multiply them). A small file can cost no more than a small multiple of
    /// its size plus its tensors' declared bytes.
    struct Walk {
        let source: String
        let maxVisits: Int
        let maxNameBytes: Int
        var visits = 0
        var nameBytes = 0

        init(source: String, fileBytes: Int) {
            self.source = source
            let size = min(fileBytes, 1 << 40)
            maxVisits = min(4_000_000, 16 * size + 65_536)
            maxNameBytes = 16 * size + (1 << 20)
        }

        /// Counts one visited dict entry.
        mutating func visit() throws {
            visits += 1
            guard visits <= maxVisits else {
                throw NoiseError.format("\(source): the checkpoint's dicts have more than \(maxVisits) entries "
                    + "for a file of this size (shared sub-dicts?)")
            }
        }

        /// Counts the bytes of one flattened name.
        mutating func name(_ full: String) throws {
            nameBytes += full.utf8.count
            guard nameBytes <= maxNameBytes else {
                throw NoiseError.format("\(source): the flattened tensor names would take more than \(maxNameBytes) bytes "
                    + "for a file of this size (nested dicts sharing long keys?)")
            }
        }
    }

    private static func tensors(from object: PickleValue, storages: Storages, source: String, fileBytes: Int) throws -> SafeTensorsFile {
        guard case .dict(let top) = object else {
            if case .tensor = object {
                throw NoiseError.format("\(source): the checkpoint holds a single unnamed tensor, not a dict of named tensors")
            }
            throw NoiseError.format("\(source): the checkpoint holds \(object.kind), not a dict of tensors")
        }
        var walk = Walk(source: source, fileBytes: fileBytes)
        let chosen = try stateDict(in: top, depth: 0, walk: &walk)
        var leaves: [(String, Leaf)] = []
        try flatten(chosen, prefix: "", topLevel: true, into: &leaves, walk: &walk)
        guard !leaves.isEmpty else {
            let keys = top.keys.prefix(8).map { k -> String in
                if case .string(let s) = k { return Text.quoted(s, limit: 30) }
                return k.kind
            }
            throw NoiseError.format("\(source): no tensors in the checkpoint (top-level keys: \(keys.joined(separator: ", ")))")
        }

        // Bound the values produced by views that share or repeat storage elements.
        var stored = 0
        for root in storages.roots.values where root.data != nil {
            let (sum, overflow) = stored.addingReportingOverflow(root.count)
            stored = overflow ? Int.max : sum
        }
        let budget = stored > (Int.max - (1 << 24)) / maxExpansion ? Int.max : stored * maxExpansion + (1 << 24)
        var total = 0
        var file = SafeTensorsFile()
        file.source = source
        file.dtypes = [:]
        for (name, leaf) in leaves {
            guard file.tensors[name] == nil else {
                throw NoiseError.format("\(source): tensor name \(Text.quoted(name)) occurs twice after flattening")
            }
            switch leaf {
            case .scalar(let v):
                file.tensors[name] = HostTensor(shape: [1], data: [Float(v)])
                file.dtypes[name] = TorchDType.float64.rawValue
            case .tensor(let t):
                let (sum, overflow) = total.addingReportingOverflow(t.count)
                guard !overflow, sum <= budget else {
                    throw NoiseError.format("\(source): the tensors would hold more than \(budget) values, over "
                        + "\(maxExpansion)x the \(stored) stored (repeated views of the same storage)")
                }
                total = sum
                file.tensors[name] = HostTensor(shape: t.shape, data: try materialize(t, storages: storages, name: name))
                file.dtypes[name] = t.storage.dtype.rawValue
            }
        }
        return file
    }

    /// True when every leaf under `dict` is a tensor (a top-level `alpha`/`beta` may be a number).
    private static func isTensorTree(_ dict: PickleDict, topLevel: Bool, depth: Int, walk: inout Walk) throws -> Bool {
        guard depth < Unpickler.maxDepth else { return false }
        var any = false
        for (key, value) in zip(dict.keys, dict.values) {
            try walk.visit()
            switch value {
            case .tensor: any = true
            case .dict(let d):
                guard try isTensorTree(d, topLevel: false, depth: depth + 1, walk: &walk) else {
                    return false
                }
                any = true
            case .float, .int:
                guard topLevel, case .string(let k) = key, k == "alpha" || k == "beta" else { return false }
            default: return false
            }
        }
        return any
    }

    private static func holdsTensors(_ dict: PickleDict, depth: Int, walk: inout Walk) throws -> Bool {
        guard depth < Unpickler.maxDepth else { return false }
        for value in dict.values {
            try walk.visit()
            switch value {
            case .tensor: return true
            case .dict(let d): if try holdsTensors(d, depth: depth + 1, walk: &walk) { return true }
            default: continue
            }
        }
        return false
    }

    /// The dict that holds the state dict: `dict` itself when it is one, else the first
    /// wrapper key holding tensors (unwrapped again), else `dict`.
    private static func stateDict(in dict: PickleDict, depth: Int, walk: inout Walk) throws -> PickleDict {
        if try isTensorTree(dict, topLevel: true, depth: 0, walk: &walk) || depth >= 8 { return dict }
        for key in wrapperKeys {
            if case .dict(let inner)? = dict[key], try holdsTensors(inner, depth: 0, walk: &walk) {
                return try stateDict(in: inner, depth: depth + 1, walk: &walk)
            }
        }
        return dict
    }

    private static func flatten(_ dict: PickleDict, prefix: String, topLevel: Bool, into out: inout [(String, Leaf)],
                                walk: inout Walk) throws {
        // DataParallel's "module." prefix, when every key of this dict carries it.
        var names: [String?] = dict.keys.map { key in
            switch key {
            case .string(let s): return s
            case .int(let n): return String(n)
            default: return nil
            }
        }
        let strings = names.compactMap { $0 }
        if !strings.isEmpty, strings.count == names.count, strings.allSatisfy({ $0.hasPrefix("module.") }) {
            names = strings.map { String($0.dropFirst("module.".count)) }
        }
        for (name, value) in zip(names, dict.values) {
            try walk.visit()
            guard let name else { continue }
            let full = prefix.isEmpty ? name : prefix + "." + name
            try walk.name(full)
            switch value {
            case .tensor(let t): out.append((full, .tensor(t)))
            case .dict(let d):
                try flatten(d, prefix: full, topLevel: false, into: &out, walk: &walk)
            case .float(let v) where topLevel && (name == "alpha" || name == "beta"):
                out.append((full, .scalar(v)))
            case .int(let v) where topLevel && (name == "alpha" || name == "beta"):
                out.append((full, .scalar(Double(v))))
            default: continue
            }
        }
    }

    // MARK: - Reading tensor values

    /// The tensor's values in row-major order, as Float. The record was checked against the
    /// storage's element count when it was rebuilt; here the storage's bytes are checked too.
    private static func materialize(_ t: TensorRef, storages: Storages, name: String) throws -> [Float] {
        let source = storages.source
        let key = t.storage.key
        guard let root = storages.roots[key], let data = root.data else {
            throw NoiseError.format("\(source): tensor \(Text.quoted(name)): storage \(Text.quoted(key, limit: 40)) has no data")
        }
        let dtype = root.dtype
        let size = dtype.size
        // Element indices are offset by the view's place in its root; the view lies in the root.
        let base = t.storage.offset
        guard base >= 0, t.storage.count >= 0, base <= root.count, t.storage.count <= root.count - base,
              root.count <= data.count / size
        else {
            throw NoiseError.format("\(source): tensor \(Text.quoted(name)): view of storage \(Text.quoted(key, limit: 40)) is out of range")
        }
        let count = t.count
        guard count > 0 else { return [] }
        let swap = storages.bigEndian && size > 1

        // Contiguous (row-major) strides, ignoring dimensions of size 1.
        var contiguous = true
        var expected = 1
        for (n, s) in zip(t.shape, t.strides).reversed() where n != 1 {
            if s != expected { contiguous = false; break }
            expected *= n
        }

        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            guard let dst = out.baseAddress, let src = data.baseAddress else { return }
            let start = base + t.offset
            if contiguous {
                convert(src, from: start, count: count, dtype: dtype, swap: swap, into: dst)
            } else {
                // Walk the indices like an odometer; every element index was bounds-checked.
                let rank = t.shape.count
                var index = [Int](repeating: 0, count: rank)
                var element = start
                for i in 0 ..< count {
                    convert(src, from: element, count: 1, dtype: dtype, swap: swap, into: dst + i)
                    // Steps only to indices that exist, so every sum stays at or below the last
                    // element's index (checked without overflow when the tensor was rebuilt).
                    var d = rank - 1
                    while d >= 0 {
                        if index[d] + 1 < t.shape[d] {
                            index[d] += 1
                            element += t.strides[d]
                            break
                        }
                        element -= t.strides[d] * index[d]
                        index[d] = 0
                        d -= 1
                    }
                }
            }
            initialized = count
        }
    }

    /// Converts `count` consecutive elements starting at element `first` of `src`.
    private static func convert(_ src: UnsafeRawPointer, from first: Int, count: Int, dtype: TorchDType, swap: Bool,
                                into dst: UnsafeMutablePointer<Float>) {
        let p = src + first * dtype.size
        @inline(__always) func u16(_ i: Int) -> UInt16 {
            let v = p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
            return swap ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
        }
        @inline(__always) func u32(_ i: Int) -> UInt32 {
            let v = p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
            return swap ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
        }
        @inline(__always) func u64(_ i: Int) -> UInt64 {
            let v = p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)
            return swap ? UInt64(bigEndian: v) : UInt64(littleEndian: v)
        }
        switch dtype {
        case .float32:
            #if _endian(little)
            if !swap {
                UnsafeMutableRawPointer(dst).copyMemory(from: p, byteCount: count * 4)
                return
            }
            #endif
            for i in 0 ..< count { dst[i] = Float(bitPattern: u32(i)) }
        case .float16:
            for i in 0 ..< count { dst[i] = SafeTensorsFile.floatFromHalfBits(u16(i)) }
        case .bfloat16:
            for i in 0 ..< count { dst[i] = Float(bitPattern: UInt32(u16(i)) << 16) }
        case .float64:
            for i in 0 ..< count { dst[i] = Float(Double(bitPattern: u64(i))) }
        case .int64:
            for i in 0 ..< count { dst[i] = Float(Int64(bitPattern: u64(i))) }
        case .int32:
            for i in 0 ..< count { dst[i] = Float(Int32(bitPattern: u32(i))) }
        case .int16:
            for i in 0 ..< count { dst[i] = Float(Int16(bitPattern: u16(i))) }
        case .int8:
            for i in 0 ..< count { dst[i] = Float(Int8(bitPattern: p.load(fromByteOffset: i, as: UInt8.self))) }
        case .uint8:
            for i in 0 ..< count { dst[i] = Float(p.load(fromByteOffset: i, as: UInt8.self)) }
        case .bool:
            for i in 0 ..< count { dst[i] = p.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
        }
    }
}

/// Weights from either kind of file the model loaders accept, told apart by content: a
/// safetensors file, or a PyTorch checkpoint (zip or legacy format; see `TorchCheckpoint`).
public enum WeightsFile {
    public enum Format: String, Sendable {
        case safetensors
        case torchZip = "PyTorch zip checkpoint"
        case torchLegacy = "PyTorch legacy checkpoint"
    }

    /// The format by the first bytes (see `FileKind`); a file of any other kind is refused
    /// with a message that names what it is.
    public static func format(of data: Data, source: String = "<memory>") throws -> Format {
        let kind = FileKind.of(data)
        switch kind {
        case .zip, .tar: return .torchZip
        case .pickle: return .torchLegacy
        case .safetensors: return .safetensors
        default:
            throw NoiseError.format("\(source) is \(kind.name), not a weights file (safetensors or a PyTorch checkpoint)")
        }
    }

    /// Reads weights from a safetensors file or a PyTorch checkpoint. `skippingUnsupported`
    /// applies to safetensors (see `SafeTensorsFile.read`); checkpoints convert every dtype.
    public static func read(_ url: URL, skippingUnsupported: Bool = false) throws -> SafeTensorsFile {
        try parse(try InputFile.contents(of: url), source: url.path, skippingUnsupported: skippingUnsupported)
    }

    public static func parse(_ data: Data, source: String = "<memory>",
                             skippingUnsupported: Bool = false) throws -> SafeTensorsFile {
        switch try format(of: data, source: source) {
        case .torchZip, .torchLegacy: return try TorchCheckpoint.parse(data, source: source)
        case .safetensors: return try SafeTensorsFile.parse(data, source: source, skippingUnsupported: skippingUnsupported)
        }
    }
}
