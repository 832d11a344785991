import ArgumentParser
import Foundation
import NoiseARGPU

@main
struct NoiseARGPUCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noisear-gpu",
        abstract: "GPU compute backend for learned initial-noise priors of diffusion models.",
        discussion: paragraphs("""
            Runs on any OpenCL 1.2 device, any Vulkan 1.1 device, or the CPU backend (Swift + OpenBLAS).

            Devices: --device auto|cpu|opencl|opencl:N|vulkan|vulkan:N (or NOISEAR_DEVICE). 'auto' takes
            a discrete GPU, then an integrated one (OpenCL before Vulkan), else the CPU backend;
            CPU devices (PoCL, lavapipe) only when named.

            Environment:
              NOISEAR_DEVICE          default device
              NOISEAR_KERNEL_DIR      load OpenCL kernels from this folder instead of the embedded copies
              NOISEAR_KERNEL_CACHE    off, or a folder for compiled kernels (default ~/.cache/noisear-gpu/kernels)
              NOISEAR_KERNEL_PROFILE  cpu|gpu: force a kernel parameter set
              NOISEAR_KERNEL_DEFINES  NAME=INT,...: override single kernel parameters
              NOISEAR_DISABLE_OPS     op families to run on the CPU backend instead (e.g. gemm,attention)
              NOISEAR_VULKAN_LIBRARY  the Vulkan loader to open (default libvulkan.so.1)
            """),
        subcommands: [Devices.self, BenchCommand.self, SampleCommand.self, NoiseCommand.self, ScoreCommand.self, CollectCommand.self, EvaluateCommand.self, TrainCommand.self, RewardCommand.self, RenderCommand.self])

    /// Parses and runs; every error is one line on standard error (control characters escaped)
    /// and a non-zero exit: 64 for a bad command line, 1 for a failure. `--help` and friends
    /// print as usual.
    static func main() {
        HostMemory.keepFreedBlocks()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            if let e = error as? ExitCode { Foundation.exit(e.rawValue) }
            let raw = (error as? NoiseError)?.description ?? message(for: error)
            let line = oneLine(raw.trimmingCharacters(in: .whitespacesAndNewlines))
            FileHandle.standardError.write(Data("noisear-gpu: error: \(line)\n".utf8))
            Foundation.exit(error is NoiseError ? 1 : code.rawValue)
        }
    }
}

/// A message as one line: line breaks become " | ", other control characters are escaped.
func oneLine(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\n": out += " | "
        case "\r": continue
        case "\t": out += " "
        default:
            if scalar.properties.generalCategory == .control {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

/// Options every command takes.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: "auto, cpu, opencl[:N] or vulkan[:N] (default: $NOISEAR_DEVICE or auto).")
    var device: String?

    func open() throws -> Device {
        try Device.open(device) { notice in
            FileHandle.standardError.write(Data("noisear-gpu: \(notice)\n".utf8))
        }
    }
}

/// Runs a command's work; a library error or a bad value found at run time reaches `main`,
/// which prints it as one line and exits non-zero (1).
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as CLIError {
        throw NoiseError.invalidArgument(e.description)
    } catch let e as NoiseError {
        throw e
    } catch {
        // Foundation and other errors: their own description, as one line.
        throw NoiseError.io("\(error.localizedDescription)")
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try enc.encode(value), as: UTF8.self))
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the CPU backend and every OpenCL and Vulkan device.")

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var options: DeviceOptions

    func run() throws {
        let (devices, notes) = Device.list()
        if json {
            try printJSON(devices)
            return
        }
        for d in devices {
            let mem = String(format: "%.1f GiB", Double(d.memoryBytes) / 1_073_741_824)
            print("\(d.id.padding(toLength: 10, withPad: " ", startingAt: 0)) \(d.name)")
            print("           backend \(d.backend), type \(d.kind.rawValue), vendor \(d.vendor)")
            let units = d.computeUnits > 0 ? "\(d.computeUnits) compute units, " : ""
            let lang = d.openCLCVersion.isEmpty ? "" : "\(d.openCLCVersion), "
            print("           \(mem), \(units)\(lang)driver \(d.driverVersion)")
            print("           platform \(d.platform), fp16 \(d.fp16 ? "yes" : "no"), fp64 \(d.fp64 ? "yes" : "no")")
            if !d.limits.isEmpty {
                print("           " + d.limits.keys.sorted().map { "\($0) \(d.limits[$0] ?? 0)" }.joined(separator: ", "))
            }
        }
        for note in notes { print("(\(note))") }
        if options.device != nil {
            try runReportingErrors {
                let dev = try options.open()
                print("selected: \(dev.info.id) (\(dev.info.name))")
            }
        }
    }
}

/// A bad command-line value: reported as one line, exit status 64 (usage).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// `--shard i/n` (collect, evaluate): this machine's share, every n-th item from item i.
func parseShard(_ text: String) throws -> (Int, Int) {
    let parts = text.split(separator: "/").map { Int($0) }
    guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, i >= 0, i < n else {
        throw CLIError("--shard must be i/n with 0 <= i < n, got \(Text.quoted(text, limit: 40, quote: "'"))")
    }
    return (i, n)
}

/// A command's discussion as the help shows it: the source's line breaks inside a paragraph
/// become spaces (the help wraps to the terminal itself); a blank line separates paragraphs,
/// and an indented line or a "- " item keeps its own line (tables, lists).
func paragraphs(_ text: String) -> String {
    text.components(separatedBy: "\n\n").map { paragraph in
        var out = ""
        for line in paragraph.split(separator: "\n", omittingEmptySubsequences: false) {
            let own = line.hasPrefix(" ") || line.hasPrefix("- ")
            if !out.isEmpty { out += own ? "\n" : " " }
            out += own ? String(line) : line.trimmingCharacters(in: .whitespaces)
        }
        return out
    }.joined(separator: "\n\n")
}

/// `--seed`: -1 picks one at random (printed); otherwise 0 ... 2^64 - 1, the range of PyTorch's
/// and ComfyUI's seeds.
struct SeedArgument: ExpressibleByArgument, Sendable {
    /// nil: random.
    let value: UInt64?

    static let random = SeedArgument(nil)

    init(_ value: UInt64?) { self.value = value }

    init?(argument: String) {
        if argument == "-1" {
            value = nil
        } else if let v = UInt64(argument) {
            value = v
        } else {
            return nil
        }
    }

    var defaultValueDescription: String { value.map(String.init) ?? "-1" }
}
