import Foundation

/// Element types of PyTorch storages, named as in safetensors.
enum TorchDType: String, Sendable, CaseIterable {
    case float32 = "F32", float16 = "F16", bfloat16 = "BF16", float64 = "F64"
    case int64 = "I64", int32 = "I32", int16 = "I16", int8 = "I8", uint8 = "U8", bool = "BOOL"

    /// Bytes per element.
    var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// The legacy storage class that names this type in checkpoints (`torch.FloatStorage`, ...).
    init?(storageClass name: String) {
        switch name {
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "DoubleStorage": self = .float64
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }
}

/// A storage as a pickle refers to it: `count` elements of `dtype` from element `offset` of the
/// root storage `key` (legacy checkpoints may refer to views of a root storage).
struct StorageRef {
    var key: String
    var dtype: TorchDType
    var offset: Int
    var count: Int
}

/// A tensor as rebuilt by the unpickler, not yet read: checked so that every element index
/// `offset + sum(i_k * strides[k])` lies inside its storage.
struct TensorRef {
    var storage: StorageRef
    var offset: Int
    var shape: [Int]
    var strides: [Int]
    var count: Int
}

/// The callables a tensor checkpoint needs; every other global is refused.
enum PickleGlobal: Equatable {
    case orderedDict
    case rebuildTensor
    case rebuildTensorV2
    case rebuildParameter
    case rebuildParameterWithState
    case torchSize
    case storageType(TorchDType)

    static let allowedNames = "collections.OrderedDict, torch._utils._rebuild_tensor(_v2), "
        + "torch._utils._rebuild_parameter(_with_state), torch.Size and torch.*Storage"

    init?(module: String, name: String) {
        switch (module, name) {
        case ("collections", "OrderedDict"): self = .orderedDict
        case ("torch._utils", "_rebuild_tensor"): self = .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): self = .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): self = .rebuildParameterWithState
        case ("torch", "Size"): self = .torchSize
        case ("torch", _):
            guard let dtype = TorchDType(storageClass: name) else { return nil }
            self = .storageType(dtype)
        default: return nil
        }
    }
}

/// A Python list being built by the unpickler.
final class PickleList {
    var items: [PickleValue] = []
    /// Nesting depth (1 + the deepest element's).
    var depth = 1
    /// Set once the list is an element of another container: changing it then would make the
    /// recorded depths wrong (and only cyclic structures do it), so it is refused.
    var frozen = false
}

/// A Python dict (or OrderedDict) being built by the unpickler, in insertion order. Later
/// assignments to the same string or integer key replace the value in place, as in Python.
final class PickleDict {
    private(set) var keys: [PickleValue] = []
    private(set) var values: [PickleValue] = []
    private var stringIndex: [String: Int] = [:]
    private var intIndex: [Int: Int] = [:]
    var depth = 1
    var frozen = false

    var count: Int { keys.count }

    func set(_ key: PickleValue, _ value: PickleValue) {
        switch key {
        case .string(let s):
            if let i = stringIndex[s] { values[i] = value; return }
            stringIndex[s] = keys.count
        case .int(let n):
            if let i = intIndex[n] { values[i] = value; return }
            intIndex[n] = keys.count
        default: break
        }
        keys.append(key)
        values.append(value)
    }

    subscript(_ key: String) -> PickleValue? {
        stringIndex[key].map { values[$0] }
    }
}

/// A value produced by the restricted unpickler.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer beyond `Int`: its little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal)
    case storage(StorageRef)
    case tensor(TensorRef)

    /// Nesting depth: 0 for scalars, tensors and storages.
    var depth: Int {
        switch self {
        case .tuple(_, let d): return d
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        default: return 0
        }
    }

    /// The elements of a tuple or list.
    var sequence: [PickleValue]? {
        switch self {
        case .tuple(let items, _): return items
        case .list(let l): return l.items
        default: return nil
        }
    }

    /// A short description for error messages.
    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int, .bigInt: return "an int"
        case .float: return "a float"
        case .string(let s): return "the string \(Text.quoted(s, limit: 40))"
        case .bytes: return "bytes"
        case .tuple(let items, _): return "a tuple of \(items.count)"
        case .list(let l): return "a list of \(l.items.count)"
        case .dict(let d): return "a dict of \(d.count)"
        case .global: return "a class or function"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}

/// A restricted unpickler: a small stack machine over the pickle opcodes that `torch.save`
/// emits (protocols 2 to 5, without out-of-band buffers). It never imports or calls anything:
/// the few globals a tensor checkpoint needs (`PickleGlobal`) are interpreted by hand, every
/// other global is refused with an error naming it, and persistent ids (storages) are handed
/// to `persistentLoad`.
///
/// Bounds: every read is checked against the buffer; containers may nest at most `maxDepth`
/// levels; memo indices must have been stored; containers cannot be changed once they are
/// part of another (no cycles).
struct Unpickler {
    typealias PersistentLoad = (PickleValue) throws -> PickleValue

    static let maxDepth = 100
    static let maxDimensions = 64

    private let bytes: ByteView
    /// Where the next opcode is read.
    private(set) var position: Int
    /// Names the file and the pickle in messages, e.g. "a.pth: data.pkl".
    private let context: String
    private let persistentLoad: PersistentLoad?

    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    private var opcodeOffset = 0
    /// Elements copied out of existing containers (OrderedDict(pairs), torch.Size(seq)): each
    /// such call costs a few bytes of pickle but may copy a large list, so the total is bounded.
    private var copied = 0

    init(_ raw: UnsafeRawBufferPointer, from start: Int = 0, context: String,
         persistentLoad: PersistentLoad? = nil) {
        bytes = ByteView(raw: raw)
        position = start
        self.context = context
        self.persistentLoad = persistentLoad
    }

    private func fail(_ why: String) -> NoiseError {
        .format("\(context): malformed pickle at byte \(opcodeOffset): \(why)")
    }

    // MARK: Reading arguments

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard let s = bytes.slice(position, n) else {
            throw fail("\(n) bytes of argument run past the end of the data (\(bytes.count - position) left)")
        }
        position += n
        return s
    }

    private mutating func u8() throws -> UInt8 {
        guard let v = bytes.u8(position) else { throw fail("truncated argument") }
        position += 1
        return v
    }

    private mutating func u16() throws -> UInt16 {
        guard let v = bytes.u16(position) else { throw fail("truncated argument") }
        position += 2
        return v
    }

    private mutating func u32() throws -> UInt32 {
        guard let v = bytes.u32(position) else { throw fail("truncated argument") }
        position += 4
        return v
    }

    private mutating func u64() throws -> UInt64 {
        guard let v = bytes.u64(position) else { throw fail("truncated argument") }
        position += 8
        return v
    }

    /// A length read as UInt64 that must fit in the remaining bytes.
    private func length(_ n: UInt64) throws -> Int {
        guard n <= UInt64(bytes.count - position) else {
            throw fail("length \(n) runs past the end of the data (\(bytes.count - position) bytes left)")
        }
        return Int(n)
    }

    /// A newline-terminated ASCII line (GLOBAL's arguments), at most 1000 bytes.
    private mutating func line() throws -> String {
        var end = position
        while true {
            guard let c = bytes.u8(end), end - position < 1000 else {
                throw fail("unterminated text argument")
            }
            if c == 0x0A { break }
            end += 1
        }
        let text = try string(try take(end - position))
        position += 1
        return text
    }

    private func string(_ raw: UnsafeRawBufferPointer) throws -> String {
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    /// Python 2 `str` (BINSTRING): UTF-8 when valid, else Latin-1.
    private func legacyString(_ raw: UnsafeRawBufferPointer) -> String {
        if let s = String(validating: raw, as: UTF8.self) { return s }
        return String(String.UnicodeScalarView(raw.map { Unicode.Scalar($0) }))
    }

    /// A little-endian two's-complement integer of `raw.count` bytes.
    private func long(_ raw: UnsafeRawBufferPointer) -> PickleValue {
        let n = raw.count
        guard n > 0 else { return .int(0) }
        let negative = raw[n - 1] & 0x80 != 0
        let fill: UInt8 = negative ? 0xFF : 0
        // Fits in Int64 when every byte beyond the eighth repeats the sign of the eighth.
        if n > 8 {
            let signOfEighth = raw[7] & 0x80 != 0
            guard signOfEighth == negative, raw[8...].allSatisfy({ $0 == fill }) else { return .bigInt(Array(raw)) }
        }
        var v: UInt64 = 0
        for i in (0 ..< 8).reversed() {
            v = (v << 8) | UInt64(i < n ? raw[i] : fill)
        }
        return .int(Int(Int64(bitPattern: v)))
    }

    // MARK: The stack

    private mutating func push(_ v: PickleValue) {
        stack.append(v)
    }

    private mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.popLast() else { throw fail("stack underflow") }
        return v
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.last else { throw fail("stack underflow") }
        return v
    }

    private mutating func popMark() throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw fail("no MARK on the stack") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    /// Marks `v` as an element of a container (it may not change any more) and returns its depth.
    private func adopt(_ v: PickleValue) -> Int {
        switch v {
        case .list(let l): l.frozen = true
        case .dict(let d): d.frozen = true
        default: break
        }
        return v.depth
    }

    private func checkDepth(_ depth: Int) throws {
        guard depth <= Self.maxDepth else {
            throw fail("containers nest deeper than \(Self.maxDepth) levels")
        }
    }

    private func makeTuple(_ items: [PickleValue]) throws -> PickleValue {
        var d = 0
        for item in items { d = max(d, adopt(item)) }
        try checkDepth(d + 1)
        return .tuple(items, depth: d + 1)
    }

    private func append(_ items: [PickleValue], to target: PickleValue) throws {
        guard case .list(let list) = target else { throw fail("APPEND to \(target.kind), not a list") }
        var d = 0
        for item in items { d = max(d, adopt(item)) }
        guard !list.frozen else { throw fail("a list is changed after it was used (cyclic structures are not supported)") }
        try checkDepth(d + 1)
        list.depth = max(list.depth, d + 1)
        list.items.append(contentsOf: items)
    }

    private func setItems(_ items: [PickleValue], in target: PickleValue) throws {
        guard case .dict(let dict) = target else { throw fail("SETITEM on \(target.kind), not a dict") }
        guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items") }
        var d = 0
        for item in items { d = max(d, adopt(item)) }
        guard !dict.frozen else { throw fail("a dict is changed after it was used (cyclic structures are not supported)") }
        try checkDepth(d + 1)
        dict.depth = max(dict.depth, d + 1)
        var i = 0
        while i < items.count {
            switch items[i] {
            case .list, .dict: throw fail("unhashable dict key (\(items[i].kind))")
            default: break
            }
            dict.set(items[i], items[i + 1])
            i += 2
        }
    }

    private mutating func memoize(_ index: Int) throws {
        memo[index] = try top()
    }

    private func memoGet(_ index: Int) throws -> PickleValue {
        guard let v = memo[index] else { throw fail("memo index \(index) was never stored") }
        return v
    }

    // MARK: Running

    /// Runs the pickle up to its STOP opcode and returns the object built; `position` is then
    /// just after the STOP.
    mutating func load() throws -> PickleValue {
        while true {
            opcodeOffset = position
            guard let op = bytes.u8(position) else { throw fail("the pickle ends without a STOP opcode") }
            position += 1
            switch op {
            case 0x80:  // PROTO
                let p = try u8()
                guard p <= 5 else { throw fail("pickle protocol \(p) is not supported (0 to 5)") }
            case 0x95:  // FRAME: a buffering hint; the framed opcodes follow inline.
                _ = try length(try u64())
            case 0x2E:  // STOP
                return try pop()
            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x30:  // POP (pops a MARK when one is on top)
                if let mark = marks.last, mark == stack.count { marks.removeLast() } else { _ = try pop() }
            case 0x31:  // POP_MARK
                _ = try popMark()
            case 0x32:  // DUP
                push(try top())
            case 0x4E: push(.none)  // NONE
            case 0x88: push(.bool(true))  // NEWTRUE
            case 0x89: push(.bool(false))  // NEWFALSE
            case 0x4A: push(.int(Int(Int32(bitPattern: try u32()))))  // BININT
            case 0x4B: push(.int(Int(try u8())))  // BININT1
            case 0x4D: push(.int(Int(try u16())))  // BININT2
            case 0x8A:  // LONG1
                let n = Int(try u8())
                push(long(try take(n)))
            case 0x8B:  // LONG4
                let n = Int32(bitPattern: try u32())
                guard n >= 0 else { throw fail("negative LONG4 length") }
                push(long(try take(Int(n))))
            case 0x47:  // BINFLOAT (big-endian)
                let raw = try take(8)
                push(.float(Double(bitPattern: UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)))))
            case 0x58:  // BINUNICODE
                let n = try length(UInt64(try u32()))
                push(.string(try string(try take(n))))
            case 0x8C:  // SHORT_BINUNICODE
                let n = Int(try u8())
                push(.string(try string(try take(n))))
            case 0x8D:  // BINUNICODE8
                let n = try length(try u64())
                push(.string(try string(try take(n))))
            case 0x54:  // BINSTRING
                let n = Int32(bitPattern: try u32())
                guard n >= 0 else { throw fail("negative BINSTRING length") }
                push(.string(legacyString(try take(Int(n)))))
            case 0x55:  // SHORT_BINSTRING
                let n = Int(try u8())
                push(.string(legacyString(try take(n))))
            case 0x42:  // BINBYTES
                let n = try length(UInt64(try u32()))
                push(.bytes(Array(try take(n))))
            case 0x43:  // SHORT_BINBYTES
                let n = Int(try u8())
                push(.bytes(Array(try take(n))))
            case 0x8E:  // BINBYTES8
                let n = try length(try u64())
                push(.bytes(Array(try take(n))))
            case 0x29: push(.tuple([], depth: 1))  // EMPTY_TUPLE
            case 0x74: push(try makeTuple(try popMark()))  // TUPLE
            case 0x85:  // TUPLE1
                let a = try pop()
                push(try makeTuple([a]))
            case 0x86:  // TUPLE2
                let b = try pop(), a = try pop()
                push(try makeTuple([a, b]))
            case 0x87:  // TUPLE3
                let c = try pop(), b = try pop(), a = try pop()
                push(try makeTuple([a, b, c]))
            case 0x5D: push(.list(PickleList()))  // EMPTY_LIST
            case 0x6C:  // LIST
                let items = try popMark()
                let list = PickleValue.list(PickleList())
                try append(items, to: list)
                push(list)
            case 0x61:  // APPEND
                let v = try pop()
                try append([v], to: try top())
            case 0x65:  // APPENDS
                let items = try popMark()
                try append(items, to: try top())
            case 0x7D: push(.dict(PickleDict()))  // EMPTY_DICT
            case 0x64:  // DICT
                let items = try popMark()
                let dict = PickleValue.dict(PickleDict())
                try setItems(items, in: dict)
                push(dict)
            case 0x73:  // SETITEM
                let v = try pop(), k = try pop()
                try setItems([k, v], in: try top())
            case 0x75:  // SETITEMS
                let items = try popMark()
                try setItems(items, in: try top())
            case 0x71: try memoize(Int(try u8()))  // BINPUT
            case 0x72: try memoize(Int(try u32()))  // LONG_BINPUT
            case 0x94: try memoize(memo.count)  // MEMOIZE
            case 0x68: push(try memoGet(Int(try u8())))  // BINGET
            case 0x6A: push(try memoGet(Int(try u32())))  // LONG_BINGET
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                push(.global(try global(module, name)))
            case 0x93:  // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .string(let n) = name, case .string(let m) = module else {
                    throw fail("STACK_GLOBAL needs two strings")
                }
                push(.global(try global(m, n)))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                push(try reduce(callable, args))
            case 0x81:  // NEWOBJ
                let args = try pop(), cls = try pop()
                guard case .global(.orderedDict) = cls, args.sequence?.isEmpty == true else {
                    throw fail("NEWOBJ of \(cls.kind) is not supported")
                }
                push(.dict(PickleDict()))
            case 0x62:  // BUILD
                let state = try pop()
                let target = try top()
                // An OrderedDict's attributes (a state_dict's `_metadata`): not needed, dropped.
                guard case .dict = target else {
                    throw fail("BUILD (setting the state of an object) on \(target.kind) is not supported")
                }
                _ = state
            case 0x51:  // BINPERSID
                let pid = try pop()
                guard let load = persistentLoad else { throw fail("a persistent id where none is expected") }
                let v = try load(pid)
                _ = adopt(pid)
                push(v)
            default:
                throw fail(Self.unsupportedOpcode(op))
            }
        }
    }

    private static func unsupportedOpcode(_ op: UInt8) -> String {
        let names: [UInt8: String] = [
            0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE", 0x67: "GET",
            0x70: "PUT", 0x50: "PERSID", 0x69: "INST", 0x6F: "OBJ", 0x82: "EXT1", 0x83: "EXT2",
            0x84: "EXT4", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
            0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
        ]
        let hex = String(op, radix: 16)
        if let name = names[op] { return "opcode \(name) (0x\(hex)) is not supported in a tensor checkpoint" }
        return "unknown opcode 0x\(hex)"
    }

    private func global(_ module: String, _ name: String) throws -> PickleGlobal {
        guard let g = PickleGlobal(module: module, name: name) else {
            throw NoiseError.format(
                "\(context): refused to load: the pickle asks for \(Text.quoted(module + "." + name, limit: 60)), "
                    + "which a tensor checkpoint never needs (allowed: \(PickleGlobal.allowedNames)); nothing was run")
        }
        return g
    }

    // MARK: The allowed callables

    private mutating func charge(_ n: Int) throws {
        copied += n
        guard copied <= 4 * bytes.count + 100_000 else {
            throw fail("the pickle copies more than \(4 * bytes.count + 100_000) elements (shared lists rebuilt over and over)")
        }
    }

    private mutating func reduce(_ callable: PickleValue, _ argsValue: PickleValue) throws -> PickleValue {
        guard case .global(let g) = callable else { throw fail("REDUCE calls \(callable.kind)") }
        guard case .tuple(let args, _) = argsValue else { throw fail("REDUCE arguments are \(argsValue.kind), not a tuple") }
        switch g {
        case .orderedDict:
            let dict = PickleValue.dict(PickleDict())
            if args.isEmpty { return dict }
            guard args.count == 1, let pairs = args[0].sequence else {
                throw fail("OrderedDict() takes a list of pairs")
            }
            try charge(pairs.count)
            var items: [PickleValue] = []
            items.reserveCapacity(2 * pairs.count)
            for pair in pairs {
                guard let kv = pair.sequence, kv.count == 2 else { throw fail("OrderedDict() item is not a pair") }
                items.append(contentsOf: kv)
            }
            try setItems(items, in: dict)
            return dict
        case .torchSize:
            guard args.count == 1, let dims = args[0].sequence else { throw fail("torch.Size() takes one tuple") }
            try charge(dims.count)
            return try makeTuple(dims)
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard args.count == 6 || args.count == 7 else {
                throw fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got \(args.count)")
            }
            return .tensor(try tensor(args[0], args[1], args[2], args[3]))
        case .rebuildTensor:
            guard args.count == 4 else { throw fail("_rebuild_tensor takes 4 arguments, got \(args.count)") }
            return .tensor(try tensor(args[0], args[1], args[2], args[3]))
        case .rebuildParameter, .rebuildParameterWithState:
            // (data, requires_grad, backward_hooks[, state])
            let expected = g == .rebuildParameter ? 3 : 4
            guard args.count == expected, case .tensor = args[0] else {
                throw fail("_rebuild_parameter takes a tensor and \(expected - 1) more arguments")
            }
            return args[0]
        case .storageType:
            throw fail("calling a storage class is not supported")
        }
    }

    private func nonNegativeInt(_ v: PickleValue, _ what: String) throws -> Int {
        guard case .int(let n) = v, n >= 0 else { throw fail("\(what) is \(v.kind), not an int >= 0") }
        return n
    }

    private func ints(_ v: PickleValue, _ what: String) throws -> [Int] {
        guard let items = v.sequence else { throw fail("\(what) is \(v.kind), not a tuple") }
        guard items.count <= Self.maxDimensions else {
            throw fail("\(what) has \(items.count) dimensions (at most \(Self.maxDimensions))")
        }
        return try items.map { try nonNegativeInt($0, "an entry of \(what)") }
    }

    /// A tensor record, checked against its storage.
    private func tensor(_ storageValue: PickleValue, _ offsetValue: PickleValue, _ sizeValue: PickleValue,
                        _ strideValue: PickleValue) throws -> TensorRef {
        guard case .storage(let storage) = storageValue else {
            throw fail("tensor storage is \(storageValue.kind), not a storage")
        }
        let offset = try nonNegativeInt(offsetValue, "storage offset")
        let shape = try ints(sizeValue, "tensor size")
        let strides = try ints(strideValue, "tensor stride")
        guard shape.count == strides.count else {
            throw fail("tensor size \(shape) and stride \(strides) differ in length")
        }
        guard let count = MemoryBudget.product(shape) else {
            throw fail("tensor size \(shape) has more elements than can be counted")
        }
        if count > 0 {
            // The last element's index; every other is smaller (strides are >= 0).
            var last = offset
            for (n, s) in zip(shape, strides) {
                let (step, o1) = (n - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else {
                    throw fail("tensor of size \(shape), stride \(strides) at offset \(offset) overflows its index arithmetic")
                }
                last = sum
            }
            guard last < storage.count else {
                throw fail("tensor of size \(shape), stride \(strides) at storage offset \(offset) reaches element \(last) "
                    + "of storage \(Text.quoted(storage.key, limit: 40)), which holds \(storage.count)")
            }
        }
        return TensorRef(storage: storage, offset: offset, shape: shape, strides: strides, count: count)
    }
}
