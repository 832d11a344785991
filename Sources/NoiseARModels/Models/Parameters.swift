import Foundation
import NoiseARCore

/// How a new parameter is initialised.
public enum ParamInit: Sendable {
    case zeros, ones
    /// PyTorch's default for Linear/Conv: U(-1/sqrt(fanIn), 1/sqrt(fanIn)).
    case uniformFanIn(Int)
    /// N(0, std^2) (embeddings).
    case normal(Float)
}

/// A model's named parameters, in creation order, named exactly as the reference checkpoints
/// (e.g. `down_blocks.0.resnets.0.conv1.weight`). Layers register their tensors here; the store
/// loads and saves safetensors and hands the list to the optimiser.
public final class Parameters {
    public let device: Device
    public private(set) var names: [String] = []
    public private(set) var tensors: [String: Tensor] = [:]
    private var seed: UInt64
    private var counter: UInt64 = 0
    /// Scalars allocated so far.
    private var allocated = 0

    /// The most scalars one store may hold (4 GiB of float32): a config asking for more is
    /// refused before its memory is allocated.
    public static let maxScalars = 1 << 30

    /// A store whose new parameters are initialised from the Philox stream `seed`.
    public init(device: Device, seed: UInt64 = 0) {
        self.device = device
        self.seed = seed
    }

    /// Creates (and registers) a trainable parameter.
    public func make(_ name: String, _ shape: [Int], _ initializer: ParamInit) throws -> Tensor {
        try require(tensors[name] == nil, "parameter \(name) registered twice")
        guard shape.allSatisfy({ $0 > 0 }), let n = checkedProduct(shape) else {
            throw NoiseError.invalidArgument("parameter \(name): shape \(shape) has a non-positive dimension or overflows")
        }
        let (total, overflow) = allocated.addingReportingOverflow(n)
        guard !overflow, total <= Self.maxScalars else {
            throw NoiseError.invalidArgument(
                "parameter \(name) \(shape) would bring the model to more than \(Self.maxScalars) scalars")
        }
        let values: [Float]
        switch initializer {
        case .zeros: values = [Float](repeating: 0, count: n)
        case .ones: values = [Float](repeating: 1, count: n)
        case .normal(let std):
            values = Philox.normal(count: n, seed: seed &+ counter).map { $0 * std }
        case .uniformFanIn(let fanIn):
            // U(-1, 1) as erf(z / sqrt 2) of the Philox normals (2 Phi(z) - 1).
            let bound = 1 / Float(max(fanIn, 1)).squareRoot()
            values = Philox.normal(count: n, seed: seed &+ counter).map { z in
                Float(Foundation.erf(Double(z) / 2.0.squareRoot())) * bound
            }
        }
        counter += 1
        let t = try Tensor(values, shape: shape, on: device, requiresGrad: true)
        allocated = total
        names.append(name)
        tensors[name] = t
        return t
    }

    /// Moves the rank-2 parameters `names` (one width) into one buffer, rows stacked in order,
    /// and returns the whole [sum of rows, width] and the parameters' new tensors (views of it,
    /// which replace them here: training, loading and saving see the same memory).
    public func packRows(_ names: [String]) throws -> (whole: Tensor, parts: [Tensor]) {
        let parts = try names.map { name -> Tensor in
            guard let t = tensors[name] else { throw NoiseError.invalidArgument("packRows: no parameter \(name)") }
            return t
        }
        let (whole, views) = try Tensor.packRows(parts)
        for (name, view) in zip(names, views) { tensors[name] = view }
        return (whole, views)
    }

    /// All parameters in creation order.
    public var all: [Tensor] { names.compactMap { tensors[$0] } }

    /// Total number of scalars.
    public var count: Int { all.reduce(0) { $0 + $1.count } }

    /// Overwrites every parameter from a file. `prefix` is prepended to our names when
    /// looking them up. Missing, unexpected (unless `allowUnexpected`) or mis-shaped keys are
    /// all named in one error.
    public func load(_ file: SafeTensorsFile, prefix: String = "", allowUnexpected: Bool = false,
                     ignoring: (String) -> Bool = { _ in false }) throws {
        var missing: [String] = [], misShaped: [String] = []
        for name in names {
            guard let host = file[prefix + name] else { missing.append(prefix + name); continue }
            guard let t = tensors[name] else { continue }
            if host.shape != t.shape {
                misShaped.append("\(prefix + name) \(host.shape) (expected \(t.shape))")
            }
        }
        let known = Set(names.map { prefix + $0 })
        let unexpected = allowUnexpected ? [] : file.tensors.keys.filter {
            $0.hasPrefix(prefix) && !known.contains($0) && !ignoring($0)
        }.sorted()
        if !missing.isEmpty || !misShaped.isEmpty || !unexpected.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing \(Self.list(missing))") }
            if !misShaped.isEmpty { parts.append("mis-shaped \(Self.list(misShaped))") }
            if !unexpected.isEmpty { parts.append("unexpected \(Self.list(unexpected))") }
            throw NoiseError.shapeMismatch("\(file.source): " + parts.joined(separator: "; "))
        }
        for name in names {
            if let host = file[prefix + name] { try host.requireFinite(prefix + name, in: file.source) }
        }
        for name in names {
            guard let host = file[prefix + name], let t = tensors[name] else { continue }
            try t.assign(Tensor(host, on: device))
        }
    }

    static func list(_ items: [String]) -> String {
        items.count <= 8 ? items.joined(separator: ", ")
            : items.prefix(8).joined(separator: ", ") + " and \(items.count - 8) more"
    }

    /// The parameters as host tensors (optionally with a name prefix).
    public func hostTensors(prefix: String = "") throws -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for name in names {
            if let t = tensors[name] { out[prefix + name] = try t.toHost() }
        }
        return out
    }
}

// MARK: - layers (PyTorch / diffusers layouts)

/// y = x W^T + b with W [out, in] (`weight`, `bias`).
public struct Linear {
    public let weight: Tensor, bias: Tensor?
    /// A layer over existing tensors.
    public init(weight: Tensor, bias: Tensor?) {
        self.weight = weight
        self.bias = bias
    }
    public init(_ p: Parameters, _ prefix: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) throws {
        weight = try p.make(prefix + ".weight", [outFeatures, inFeatures], .uniformFanIn(inFeatures))
        self.bias = bias ? try p.make(prefix + ".bias", [outFeatures], .uniformFanIn(inFeatures)) : nil
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try Tensor.linear(x, weight: weight, bias: bias) }
    /// x W^T + b + residual (the addition fused into the GEMM without a tape).
    public func callAsFunction(_ x: Tensor, residual: Tensor) throws -> Tensor {
        try Tensor.linear(x, weight: weight, bias: bias, residual: residual)
    }
    /// activation(x W^T + b): a feed-forward layer's first half (the activation is the GEMM's
    /// epilogue without a tape).
    public func callAsFunction(_ x: Tensor, activation: UnaryOp) throws -> Tensor {
        try Tensor.linear(x, weight: weight, bias: bias, activation: activation)
    }
}

/// 2-D convolution with weight [out, in, k, k] and bias [out].
public struct Conv2d {
    public let weight: Tensor, bias: Tensor?
    public let stride: Int, padding: Int
    public init(_ p: Parameters, _ prefix: String, _ inChannels: Int, _ outChannels: Int, kernel: Int,
                stride: Int = 1, padding: Int = 0, bias: Bool = true) throws {
        let fan = inChannels * kernel * kernel
        weight = try p.make(prefix + ".weight", [outChannels, inChannels, kernel, kernel], .uniformFanIn(fan))
        self.bias = bias ? try p.make(prefix + ".bias", [outChannels], .uniformFanIn(fan)) : nil
        self.stride = stride
        self.padding = padding
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try Tensor.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
    }
}

/// GroupNorm with affine `weight`/`bias` [C].
public struct GroupNorm {
    public let weight: Tensor, bias: Tensor
    public let groups: Int, eps: Float
    public init(_ p: Parameters, _ prefix: String, groups: Int, channels: Int, eps: Float = 1e-5) throws {
        weight = try p.make(prefix + ".weight", [channels], .ones)
        bias = try p.make(prefix + ".bias", [channels], .zeros)
        self.groups = groups
        self.eps = eps
    }
    /// GroupNorm then SiLU, fused where no tape records them.
    public func silu(_ x: Tensor) throws -> Tensor {
        try x.groupNormSiLU(groups: groups, gamma: weight, beta: bias, eps: eps)
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.groupNorm(groups: groups, gamma: weight, beta: bias, eps: eps)
    }
}

/// LayerNorm over the last axis with `weight`/`bias` [D].
public struct LayerNorm {
    public let weight: Tensor, bias: Tensor
    public let eps: Float
    public init(_ p: Parameters, _ prefix: String, _ dim: Int, eps: Float = 1e-5) throws {
        weight = try p.make(prefix + ".weight", [dim], .ones)
        bias = try p.make(prefix + ".bias", [dim], .zeros)
        self.eps = eps
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try x.layerNorm(gamma: weight, beta: bias, eps: eps) }
}
