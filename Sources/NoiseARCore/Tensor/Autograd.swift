/// Reverse-mode automatic differentiation.
///
/// Each op whose inputs require gradients attaches a `GradNode` to its output: the inputs and a
/// closure mapping the output's gradient to the inputs' gradients (computed with the same
/// device ops, so backward runs on the device too). `backward()` walks the graph in reverse
/// topological order and sums the gradients of tensors used more than once.
final class GradNode {
    let name: String
    let inputs: [Tensor]
    let backward: (Tensor) throws -> [Tensor?]
    init(name: String, inputs: [Tensor], backward: @escaping (Tensor) throws -> [Tensor?]) {
        self.name = name
        self.inputs = inputs
        self.backward = backward
    }
}

extension Tensor {
    /// Attaches a backward closure to `out` when gradients are on and an input needs them.
    @discardableResult
    func record(_ out: Tensor, _ inputs: [Tensor], _ name: String,
                _ backward: @escaping (Tensor) throws -> [Tensor?]) -> Tensor {
        Tensor.record(out, inputs, name, backward)
    }

    /// Whether an op on these inputs (on `device`) is recorded: gradients are on and some input
    /// requires them. Ops with a faster untaped form check this first.
    package static func isRecorded(on device: Device, _ inputs: [Tensor?]) -> Bool {
        device.gradEnabled && inputs.contains { $0?.requiresGrad == true }
    }

    @discardableResult
    static func record(_ out: Tensor, _ inputs: [Tensor], _ name: String,
                       _ backward: @escaping (Tensor) throws -> [Tensor?]) -> Tensor {
        guard isRecorded(on: out.device, inputs) else { return out }
        out.requiresGrad = true
        out.gradFn = GradNode(name: name, inputs: inputs, backward: backward)
        return out
    }

    /// Back-propagates from this tensor (seeded with ones, or `seed`) and accumulates `.grad`
    /// on every leaf that requires gradients.
    public func backward(seed: Tensor? = nil) throws {
        try requireShape(requiresGrad, "backward() from a tensor that does not require gradients")
        let start = try seed ?? Tensor.full(shape, 1, on: device)
        try requireShape(start.shape == shape, "backward seed \(start.shape) for \(shape)")
        // Reverse topological order by depth-first search.
        var order: [Tensor] = []
        var seen: Set<ObjectIdentifier> = []
        var stack: [(Tensor, Bool)] = [(self, false)]
        while let (t, expanded) = stack.popLast() {
            if expanded { order.append(t); continue }
            if seen.contains(ObjectIdentifier(t)) { continue }
            seen.insert(ObjectIdentifier(t))
            stack.append((t, true))
            for i in t.gradFn?.inputs ?? [] where i.requiresGrad && !seen.contains(ObjectIdentifier(i)) {
                stack.append((i, false))
            }
        }
        let wasEnabled = device.gradEnabled
        device.gradEnabled = false
        defer { device.gradEnabled = wasEnabled }
        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(self): start]
        for t in order.reversed() {
            guard let g = grads.removeValue(forKey: ObjectIdentifier(t)) else { continue }
            guard let node = t.gradFn else {
                t.grad = try t.grad.map { try $0 + g } ?? g
                continue
            }
            let gs = try node.backward(g)
            for (input, gi) in zip(node.inputs, gs) {
                guard input.requiresGrad, let gi else { continue }
                try requireShape(gi.shape == input.shape,
                                 "gradient of \(node.name) has shape \(gi.shape), input \(input.shape)")
                let id = ObjectIdentifier(input)
                grads[id] = try grads[id].map { try $0 + gi } ?? gi
            }
        }
    }

    /// Clears the accumulated gradient.
    public func zeroGrad() { grad = nil }
}

extension Device {
    /// Runs `body` with gradient recording off.
    public func noGrad<T>(_ body: () throws -> T) rethrows -> T {
        let was = gradEnabled
        gradEnabled = false
        defer { gradEnabled = was }
        return try body()
    }
}
