import Foundation

/// A contiguous, row-major float32 tensor on a device. Tensors are immutable values as far as
/// ops are concerned (every op returns a new tensor), which is what makes the reverse-mode
/// tape simple: a tensor produced from inputs that require gradients remembers how to send
/// its gradient back to them.
public final class Tensor {
    public let shape: [Int]
    public let device: Device
    let buffer: any DeviceBuffer
    let offset: Int
    /// Whether gradients flow to this tensor. Set it on parameters (leaves).
    public var requiresGrad: Bool
    /// The accumulated gradient of a leaf after `backward()`.
    public internal(set) var grad: Tensor?
    var gradFn: GradNode?

    init(shape: [Int], device: Device, buffer: any DeviceBuffer, offset: Int = 0,
         requiresGrad: Bool = false) {
        self.shape = shape
        self.device = device
        self.buffer = buffer
        self.offset = offset
        self.requiresGrad = requiresGrad
    }

    public var count: Int { Shape.count(shape) }
    public var rank: Int { shape.count }
    package var ref: BufRef { BufRef(buffer, offset) }

    /// Copies rank-2 tensors of one width into one buffer, rows stacked in order, and returns
    /// the whole [sum of rows, width] and a view of each part in it (a leaf requiring gradients
    /// where the part did): the parts' values, now sharing memory, so one GEMM can multiply by
    /// all of them (attention's q, k and v projections).
    package static func packRows(_ parts: [Tensor]) throws -> (whole: Tensor, views: [Tensor]) {
        guard let first = parts.first else { throw NoiseError.shapeMismatch("packRows of no tensors") }
        let width = first.shape.last ?? 0
        var rows = 0
        for p in parts {
            try first.sameDevice(p, "packRows")
            try requireShape(p.rank == 2 && p.shape[1] == width, "packRows of \(p.shape) with width \(width)")
            rows += p.shape[0]
        }
        let whole = try Tensor.empty([rows, width], on: first.device)
        var views: [Tensor] = []
        var offset = 0
        for p in parts {
            let view = Tensor(shape: p.shape, device: p.device, buffer: whole.buffer, offset: offset,
                              requiresGrad: p.requiresGrad)
            try first.device.run(Op.Copy(shape: [p.count], src: Strided(p.ref, strides: [1]),
                                         dst: Strided(view.ref, strides: [1])))
            views.append(view)
            offset += p.count
        }
        return (whole, views)
    }

    /// An uninitialised tensor.
    public static func empty(_ shape: [Int], on device: Device) throws -> Tensor {
        try Shape.validate(shape)
        return Tensor(shape: shape, device: device, buffer: try device.backend.allocate(Shape.count(shape)))
    }

    public static func full(_ shape: [Int], _ value: Float, on device: Device) throws -> Tensor {
        let t = try empty(shape, on: device)
        try device.run(Op.Fill(dst: t.ref, count: t.count, value: value))
        return t
    }

    public static func zeros(_ shape: [Int], on device: Device) throws -> Tensor {
        try full(shape, 0, on: device)
    }

    /// A tensor holding `data` (row-major) with `shape`.
    public init(_ data: [Float], shape: [Int], on device: Device, requiresGrad: Bool = false) throws {
        try Shape.validate(shape)
        try requireShape(data.count == Shape.count(shape),
                         "\(data.count) values do not fill shape \(shape)")
        self.shape = shape
        self.device = device
        buffer = try device.backend.allocate(data.count)
        offset = 0
        self.requiresGrad = requiresGrad
        try data.withUnsafeBufferPointer { try device.backend.upload($0, to: BufRef(buffer)) }
    }

    /// Standard normals from the Philox stream `seed`, starting at element `offset`: the same
    /// numbers on every backend.
    public static func randn(_ shape: [Int], seed: UInt64, offset: UInt64 = 0, on device: Device)
        throws -> Tensor
    {
        let t = try empty(shape, on: device)
        try device.run(Op.Randn(count: t.count, seed: seed, offset: offset, dst: t.ref))
        return t
    }

    /// The values, row-major (waits for the device).
    public func toArray() throws -> [Float] {
        var out = [Float](repeating: 0, count: count)
        try out.withUnsafeMutableBufferPointer { try device.backend.download(ref, into: $0) }
        return out
    }

    /// The single value of a one-element tensor.
    public func item() throws -> Float {
        try requireShape(count == 1, "item() of a tensor of shape \(shape)")
        return try toArray()[0]
    }

    /// A copy on another device (gradients flow back across).
    public func to(_ target: Device) throws -> Tensor {
        if target === device { return self }
        let out = try Tensor(try toArray(), shape: shape, on: target)
        return record(out, [self], "to") { g in [try g.to(self.device)] }
    }

    /// The same data with another shape (a view: no copy). One dimension may be -1.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            try requireShape(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            s[i] = count / known
        }
        try requireShape(Shape.count(s) == count && s.allSatisfy { $0 > 0 },
                         "cannot reshape \(shape) to \(newShape)")
        let out = Tensor(shape: s, device: device, buffer: buffer, offset: offset)
        return record(out, [self], "reshape") { g in [try g.reshaped(self.shape)] }
    }

    /// Drops the gradient history: the same data as a leaf.
    public func detached() -> Tensor {
        Tensor(shape: shape, device: device, buffer: buffer, offset: offset)
    }

    /// Overwrites this tensor's values in place from another tensor of the same shape (used by
    /// optimisers and loaders; not recorded on the tape).
    public func assign(_ other: Tensor) throws {
        try requireShape(other.shape == shape, "assign \(other.shape) to \(shape)")
        let src = try other.to(device)
        try device.run(Op.Copy(shape: [count], src: Strided(src.ref, strides: [1]), dst: Strided(ref, strides: [1])))
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor(\(shape), \(device.info.id))" }
}

extension Tensor {
    /// A device tensor from a host tensor.
    public convenience init(_ host: HostTensor, on device: Device, requiresGrad: Bool = false) throws {
        try self.init(host.data, shape: host.shape, on: device, requiresGrad: requiresGrad)
    }

    /// The values and shape on the host.
    public func toHost() throws -> HostTensor {
        HostTensor(shape: shape, data: try toArray())
    }
}
