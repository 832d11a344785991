import Foundation

extension HostTensor {
    /// The flat index and value of the first NaN or infinity, or nil when every value is finite.
    public var firstNonFinite: (index: Int, value: Float)? {
        data.withUnsafeBufferPointer { buf in
            for i in buf.indices where !buf[i].isFinite { return (i, buf[i]) }
            return nil
        }
    }

    /// Throws `invalidArgument` naming `what` (e.g. "prompts.safetensors: tensor 'prompt_embeds'")
    /// and the first NaN or infinity: its flat index, its multi-index and its value.
    public func requireFinite(_ what: String) throws {
        guard let (i, v) = firstNonFinite else { return }
        var rest = i
        var index = [Int](repeating: 0, count: shape.count)
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 0 {
            index[d] = rest % shape[d]
            rest /= shape[d]
        }
        throw NoiseError.invalidArgument(
            "\(what) holds \(v.isNaN ? "NaN" : "\(v)") at flat index \(i) (index \(index) of shape \(shape))")
    }
}
