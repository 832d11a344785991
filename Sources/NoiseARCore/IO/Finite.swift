import Foundation

extension HostTensor {
    /// The flat index of the first NaN or infinity, or nil when every value is finite.
    public var firstNonFinite: Int? {
        data.withUnsafeBufferPointer { buf -> Int? in
            // Exponent bits all ones <=> NaN or infinity; one branch-free pass per chunk, then the
            // exact index only when a chunk has one.
            let chunk = 4096
            var start = 0
            while start < buf.count {
                let end = min(start + chunk, buf.count)
                var any: UInt32 = 0
                for i in start..<end {
                    any |= (buf[i].bitPattern & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                }
                if any != 0 { return (start..<end).first { !buf[$0].isFinite } }
                start = end
            }
            return nil
        }
    }

    /// Throws `invalidArgument` naming `what` (e.g. "prompts.safetensors: prompt_embeds") and
    /// the first NaN or infinity: its value, flat index and multi-index.
    public func requireFinite(_ what: String, because reason: String? = nil) throws {
        guard let i = firstNonFinite else { return }
        var rest = i
        var index = [Int](repeating: 0, count: shape.count)
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 0 {
            index[d] = rest % shape[d]
            rest /= shape[d]
        }
        throw NoiseError.invalidArgument(
            "\(what) holds \(data[i]) at flat index \(i) (index \(index) of shape \(shape))" + (reason.map { ": " + $0 } ?? ""))
    }

    /// The same for a weight tensor `name` of a model file (one NaN makes every output NaN).
    public func requireFinite(_ name: String, in source: String) throws {
        try requireFinite("\(source): tensor '\(name)'", because: "weights must be finite")
    }
}
