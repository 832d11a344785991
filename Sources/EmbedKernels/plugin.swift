import Foundation
import PackagePlugin

/// Embeds the kernels into the target, so a copied binary carries them:
/// - every `Kernels/*.cl` and `*.h` file as text (OpenCL C, compiled per device at run time);
/// - every `Kernels/vulkan/*.comp` compute shader compiled to SPIR-V by `glslc` here, at build
///   time (a shader whose second line is `// variants: fp64` is also compiled with
///   `-DFP64=1` as `<name>.fp64`).
/// Without glslc on the PATH the build goes on with a warning and embeds no SPIR-V: the Vulkan
/// backend then refuses to open with a one-line error that says so.
@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let kernelDir = context.package.directoryURL.appendingPathComponent("Kernels")
        let files = (try? FileManager.default.contentsOfDirectory(
            at: kernelDir, includingPropertiesForKeys: nil)) ?? []
        let sources = files.filter { $0.pathExtension == "cl" || $0.pathExtension == "h" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }

        let shaderDir = kernelDir.appendingPathComponent("vulkan")
        let shaderFiles = ((try? FileManager.default.contentsOfDirectory(
            at: shaderDir, includingPropertiesForKeys: nil)) ?? [])
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let includes = shaderFiles.filter { $0.pathExtension == "glsl" }
        let shaders = shaderFiles.filter { $0.pathExtension == "comp" }
        var commands: [Command] = []
        var spirv: [URL] = []
        if !shaders.isEmpty {
            if let glslc = Self.findExecutable("glslc") {
                let outDir = context.pluginWorkDirectoryURL.appendingPathComponent("spirv")
                try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
                for shader in shaders {
                    let name = shader.deletingPathExtension().lastPathComponent
                    var variants: [(suffix: String, defines: [String])] = [("", [])]
                    if let text = try? String(contentsOf: shader, encoding: .utf8) {
                        let lines = text.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
                        if lines.count > 1, lines[1].contains("variants:"), lines[1].contains("fp64") {
                            variants.append((".fp64", ["-DFP64=1"]))
                        }
                    }
                    for v in variants {
                        let out = outDir.appendingPathComponent(name + v.suffix + ".spv")
                        commands.append(.buildCommand(
                            displayName: "Compiling shader \(name)\(v.suffix)",
                            executable: glslc,
                            arguments: ["-fshader-stage=compute", "--target-env=vulkan1.1", "-O", "-Werror",
                                        "-I", shaderDir.path] + v.defines + ["-o", out.path, shader.path],
                            inputFiles: [shader] + includes,
                            outputFiles: [out]))
                        spirv.append(out)
                    }
                }
            } else {
                Diagnostics.warning(
                    "glslc not found on PATH: the Vulkan shaders are not compiled and the Vulkan backend is unavailable in this build (Debian/Ubuntu: apt-get install glslc)")
            }
        }
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("EmbeddedKernels.swift")
        commands.append(.buildCommand(
            displayName: "Embedding \(sources.count) OpenCL kernel files and \(spirv.count) SPIR-V shaders",
            executable: try context.tool(named: "embed-kernels").url,
            arguments: [output.path] + sources.map(\.path) + spirv.map(\.path),
            inputFiles: sources + spirv,
            outputFiles: [output]))
        return commands
    }

    /// `name` in a PATH folder (then the usual system folders), if it is executable there.
    static func findExecutable(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = URL(fileURLWithPath: dir).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }
}
