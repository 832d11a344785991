// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "noisear-gpu",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "NoiseARGPU", targets: ["NoiseARGPU"]),
        .executable(name: "noisear-gpu", targets: ["noisear-gpu"]),
        // The C API (include/noisear.h): libnoisear.so for host pipelines (C, Python via ctypes).
        .library(name: "noisear", type: .dynamic, targets: ["NoiseARCAPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // OpenCL 1.2 C API (ocl-icd-opencl-dev + opencl-c-headers), found by pkg-config.
        .systemLibrary(
            name: "COpenCL", path: "Sources/COpenCL", pkgConfig: "OpenCL",
            providers: [.apt(["ocl-icd-opencl-dev", "opencl-c-headers"])]),
        // OpenBLAS' CBLAS interface (libopenblas-dev), found by pkg-config.
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        // OpenSSL's libcrypto (libssl-dev): SHA-256 for the kernel cache keys.
        .systemLibrary(
            name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),
        // libpng (libpng-dev), found by pkg-config: PNG images with text chunks.
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]),
        // Build-time tool: turns Kernels/*.cl into a Swift source with the kernel texts.
        .executableTarget(name: "embed-kernels", path: "Sources/embed-kernels"),
        .plugin(
            name: "EmbedKernels", capability: .buildTool(),
            dependencies: ["embed-kernels"], path: "Sources/EmbedKernels"),
        .target(
            name: "NoiseARGPU",
            dependencies: ["COpenCL", "CBLAS", "CCrypto", "CPNG"],
            path: "Sources/NoiseARGPU",
            // The shipped shapes-world weights, copied beside the products at build time
            // (ShippedModels finds them there without the source tree).
            resources: [.copy("Models/weights")],
            plugins: ["EmbedKernels"]),
        // The C header's types for the Swift implementation of the C API.
        .target(name: "CNoiseAR", path: "Sources/CNoiseAR"),
        .target(
            name: "NoiseARCAPI", dependencies: ["NoiseARGPU", "CNoiseAR"],
            path: "Sources/NoiseARCAPI"),
        .executableTarget(
            name: "noisear-gpu",
            dependencies: [
                "NoiseARGPU",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/noisear-gpu"),
        .testTarget(
            name: "NoiseARGPUTests", dependencies: ["NoiseARGPU", "CCrypto"],
            path: "Tests/NoiseARGPUTests"),
    ],
    swiftLanguageModes: [.v6]
)
