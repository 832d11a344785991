import Foundation
import NoiseARCore
import NoiseARModels

/// One SVD benchmark measurement.
public struct SVDBenchResult: Codable, Sendable {
    public var op = "svd"
    /// Device id ("cpu", "opencl:0", ...).
    public var backend: String
    public var variant: String
    public var size: Int
    public var batch: Int
    /// Jacobi sweeps used (the most over the batch).
    public var sweeps: Int
    public var medianMs: Double
    public var minMs: Double
    public var msPerMatrix: Double
    public var matricesPerSecond: Double
    public var repeats: Int
}

extension Bench {
    /// The batched one-sided Jacobi SVD of `batch` random size x size matrices (default
    /// tolerance and sweep limit; QR-preconditioned unless `precondition` is false), including reading nothing back: the timed runs wait for the
    /// device.
    public func svd(size: Int, batch: Int, precondition: Bool = true, device: Device) throws -> SVDBenchResult {
        let a = try Self.random([batch, size, size], 1, on: device)
        var sweeps = 0
        let t = try time {
            sweeps = try Tensor.svdReportingSweeps(a, precondition: precondition).sweeps
            try device.backend.synchronize()
        }
        return SVDBenchResult(backend: device.info.id, variant: variantName(device, "svd") + (precondition ? "" : " plain-jacobi"), size: size, batch: batch,
                              sweeps: sweeps, medianMs: t.0, minMs: t.1, msPerMatrix: t.0 / Double(batch),
                              matricesPerSecond: Double(batch) * 1000 / t.0, repeats: repeats)
    }
}
