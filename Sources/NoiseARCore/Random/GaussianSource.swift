import Foundation

/// Where standard-normal noise comes from (`--rng`, the C API's `rng`, Python's `rng=`).
public enum GaussianSource: String, Sendable, CaseIterable {
    /// Philox4x32-10: image i of a batch from stream seed + i, generated on the device, the
    /// same bits on every backend.
    case philox
    /// PyTorch's CPU generator: the batch is `torch.randn([B, ...],
    /// generator=torch.Generator().manual_seed(seed))`, bit for bit (see `TorchGenerator`), as a
    /// diffusers or ComfyUI user's seed gives it. Drawn on the host and uploaded, so the bits are
    /// the same on every backend too.
    case torch

    public static func parse(_ name: String, option: String = "--rng") throws -> GaussianSource {
        guard let s = GaussianSource(rawValue: name.trimmingCharacters(in: .whitespaces).lowercased()) else {
            throw NoiseError.invalidArgument("\(option) \(Text.quoted(name, limit: 40)): expected philox or torch")
        }
        return s
    }

    /// Standard normals [count] + shape for `count` images from `seed`.
    public func standardNormal(count: Int, shape: [Int], seed: UInt64, on device: Device) throws -> Tensor {
        try require(count >= 1, "a batch of noise needs at least one image, got \(count)")
        switch self {
        case .philox:
            let per = try (0 ..< count).map { try Tensor.randn([1] + shape, seed: seed &+ UInt64($0), on: device) }
            return count == 1 ? per[0] : try Tensor.concat(per, axis: 0)
        case .torch:
            guard let n = checkedProduct([count] + shape) else {
                throw NoiseError.invalidArgument("noise of shape \([count] + shape) has more elements than can be counted")
            }
            return try Tensor(TorchRandom.normal(count: n, seed: seed), shape: [count] + shape, on: device)
        }
    }
}
