import Foundation
import NoiseARGPU
import Testing

/// Guarded buffers for the differential op tests: every tensor lives at an offset inside a
/// larger buffer whose surroundings hold a sentinel, so stray writes are caught.
let guardCount = 37
let sentinel: Float = -7777.25

final class Guarded {
    let backend: any Backend
    let buffer: any DeviceBuffer
    let count: Int
    init(_ backend: any Backend, _ values: [Float]) throws {
        self.backend = backend
        count = values.count
        buffer = try backend.allocate(values.count + 2 * guardCount)
        let all = [Float](repeating: sentinel, count: guardCount) + values
            + [Float](repeating: sentinel, count: guardCount)
        try all.withUnsafeBufferPointer { try backend.upload($0, to: BufRef(buffer)) }
    }
    var ref: BufRef { BufRef(buffer, guardCount) }
    func values() throws -> [Float] {
        var all = [Float](repeating: 0, count: count + 2 * guardCount)
        try all.withUnsafeMutableBufferPointer { try backend.download(BufRef(buffer), into: $0) }
        return Array(all[guardCount..<(guardCount + count)])
    }
    /// True when both guard regions still hold the sentinel.
    func guardsIntact() throws -> Bool {
        var all = [Float](repeating: 0, count: count + 2 * guardCount)
        try all.withUnsafeMutableBufferPointer { try backend.download(BufRef(buffer), into: $0) }
        return all[..<guardCount].allSatisfy { $0 == sentinel }
            && all[(guardCount + count)...].allSatisfy { $0 == sentinel }
    }
}

/// Runs `op` on the CPU backend and on each OpenCL and Vulkan backend with the same inputs and the same
/// initial output contents, then compares every output by NMSE, checks for NaN and guards.
/// `inputs` are read-only; `outputs` give initial contents (random, never zeros).
func differential(_ name: String, inputs: [[Float]], outputs: [[Float]], tolerance: Double = 1e-6,
                  exact: Bool = false,
                  _ op: (any Backend, [BufRef], [BufRef]) throws -> Void) throws {
    func run(_ inner: any Backend, _ label: String) throws -> ([[Float]], Bool) {
        let be = RecordingBackend(inner, label: label, coverage: OpCoverageScope.differential)
        let ins = try inputs.map { try Guarded(be, $0) }
        let outs = try outputs.map { try Guarded(be, $0) }
        try op(be, ins.map(\.ref), outs.map(\.ref))
        try be.synchronize()
        let guards = try (ins + outs).allSatisfy { try $0.guardsIntact() }
        let changed = try ins.enumerated().allSatisfy { i, g in try g.values() == inputs[i] }
        return (try outs.map { try $0.values() }, guards && changed)
    }
    let (ref, refOK) = try run(CPUBackend(), "cpu")
    #expect(refOK, "\(name): CPU backend wrote outside its outputs")
    for (i, r) in ref.enumerated() {
        #expect(!r.contains { $0.isNaN }, "\(name): CPU output \(i) has NaN")
    }
    try withBackends { backends in
        for be in backends {
            let (got, ok) = try run(be, be.label)
            let tag = "\(name) [\(be.label)]"
            #expect(ok, "\(tag): guard region or input overwritten")
            for (i, (g, r)) in zip(got, ref).enumerated() {
                if exact {
                    let diff = zip(g, r).filter { $0.0.bitPattern != $0.1.bitPattern }.count
                    #expect(diff == 0, "\(tag): output \(i) differs bitwise in \(diff) of \(r.count) values")
                } else {
                    let e = nmse(g, r)
                    #expect(e <= tolerance, "\(tag): output \(i) NMSE \(e) > \(tolerance)")
                }
            }
        }
    }
}
