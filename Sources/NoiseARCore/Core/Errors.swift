import Foundation

/// Every error the library raises. Each carries enough context for a one-line message.
public enum NoiseError: Error, CustomStringConvertible, LocalizedError, Equatable {
    /// A caller-supplied value is out of range or inconsistent.
    case invalidArgument(String)
    /// Tensor shapes do not fit together.
    case shapeMismatch(String)
    /// A file could not be read or written.
    case io(String)
    /// A safetensors file is malformed.
    case safetensors(String)
    /// A file's content is malformed or refused (a PyTorch checkpoint, a pickle, a zip, an
    /// array, an image, or a file of the wrong kind).
    case format(String)
    /// A request needs more memory than the device (or the host) has, found before allocating.
    case outOfMemory(String)
    /// An OpenCL call failed: the call, the numeric code and its name.
    case openCL(call: String, code: Int32, name: String)
    /// An OpenCL program failed to build: file, options and the compiler's log.
    case kernelBuild(program: String, options: String, log: String)
    /// The requested device does not exist or is not usable.
    case device(String)
    /// An operation is not supported by any backend.
    case unsupported(String)
    /// A progress callback asked to stop.
    case cancelled(String)

    public var description: String {
        switch self {
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .shapeMismatch(let m): return "shape mismatch: \(m)"
        case .io(let m): return "I/O error: \(m)"
        case .safetensors(let m): return "malformed safetensors: \(m)"
        case .format(let m): return "bad file: \(m)"
        case .outOfMemory(let m): return "out of memory: \(m)"
        case .openCL(let call, let code, let name): return "OpenCL error in \(call): \(name) (\(code))"
        case .kernelBuild(let program, let options, let log):
            let trimmed = log.trimmingCharacters(in: .whitespacesAndNewlines)
            return "OpenCL program \(program) failed to build (options: \(options)):\n\(trimmed)"
        case .device(let m): return "device error: \(m)"
        case .unsupported(let m): return "unsupported: \(m)"
        case .cancelled(let m): return "cancelled: \(m)"
        }
    }

    public var errorDescription: String? { description }
}

/// Throws `invalidArgument` unless the condition holds.
@inline(__always)
package func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw NoiseError.invalidArgument(message()) }
}

/// Throws `shapeMismatch` unless the condition holds.
@inline(__always)
package func requireShape(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw NoiseError.shapeMismatch(message()) }
}
