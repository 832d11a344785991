/// Shape helpers. Tensors are row-major and contiguous; the last axis varies fastest.
public enum Shape {
    /// Number of elements of a shape (1 for a scalar shape `[]`).
    public static func count(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Contiguous row-major strides of a shape.
    public static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= shape[i]
        }
        return s
    }

    /// Resolves a possibly negative axis against a rank.
    public static func axis(_ axis: Int, rank: Int) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        try require(a >= 0 && a < rank, "axis \(axis) out of range for rank \(rank)")
        return a
    }

    /// NumPy broadcasting of two shapes.
    public static func broadcast(_ a: [Int], _ b: [Int]) throws -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            try requireShape(da == db || da == 1 || db == 1, "cannot broadcast \(a) with \(b)")
            out[i] = da == 1 ? db : da
        }
        return out
    }

    /// Strides that read a tensor of shape `shape` as if broadcast to `target` (0 on broadcast axes).
    public static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let own = strides(shape)
        let lead = target.count - shape.count
        return (0..<target.count).map { i in
            if i < lead { return 0 }
            return shape[i - lead] == 1 && target[i] != 1 ? 0 : own[i - lead]
        }
    }

    /// Axes of `target` along which a tensor of `shape` was broadcast (to sum gradients over).
    public static func broadcastAxes(_ shape: [Int], to target: [Int]) -> [Int] {
        let lead = target.count - shape.count
        return (0..<target.count).filter { i in
            i < lead || (shape[i - lead] == 1 && target[i] != 1)
        }
    }

    /// The same strided walk over fewer axes: drops size-1 axes and merges an axis into the
    /// next one wherever every operand's strides allow it (row-major order is kept).
    public static func collapse(_ shape: [Int], _ strides: [[Int]]) -> (shape: [Int], strides: [[Int]]) {
        var outShape: [Int] = [], outStrides: [[Int]] = strides.map { _ in [] }
        for d in 0..<shape.count where shape[d] != 1 {
            if let last = outShape.last,
               strides.indices.allSatisfy({ outStrides[$0].last == strides[$0][d] * shape[d] }) {
                outShape[outShape.count - 1] = last * shape[d]
                for k in strides.indices { outStrides[k][outStrides[k].count - 1] = strides[k][d] }
            } else {
                outShape.append(shape[d])
                for k in strides.indices { outStrides[k].append(strides[k][d]) }
            }
        }
        if outShape.isEmpty { return ([1], strides.map { _ in [1] }) }
        return (outShape, outStrides)
    }

    /// Validates a shape: every dimension positive.
    public static func validate(_ shape: [Int]) throws {
        try require(shape.allSatisfy { $0 > 0 }, "shape \(shape) has a non-positive dimension")
    }
}
