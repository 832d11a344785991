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
        // Vulkan's C declarations (libvulkan-dev's headers); the loader is opened with dlopen
        // at run time, so nothing links against libvulkan.
        .systemLibrary(
            name: "CVulkan", path: "Sources/CVulkan",
            providers: [.apt(["libvulkan-dev"])]),
        // Vectorised float math for the CPU backend's hot loops (exp, SiLU, GELU, softmax rows,
        // binary rows), with AVX2 and AVX-512 clones picked at load time by CPU capability.
        .target(name: "CVectorMath", path: "Sources/CVectorMath"),
        // dladdr for finding the shipped models beside libnoisear.so when a host loads it.
        .target(name: "CSupport", path: "Sources/CSupport", linkerSettings: [.linkedLibrary("dl")]),
        // Build-time tool: turns Kernels/*.cl and the SPIR-V of Kernels/vulkan/*.comp (compiled by
        // glslc in the EmbedKernels plugin) into a Swift source.
        .executableTarget(name: "embed-kernels", path: "Sources/embed-kernels"),
        .plugin(
            name: "EmbedKernels", capability: .buildTool(),
            dependencies: ["embed-kernels"], path: "Sources/EmbedKernels"),
        // The compute layer: devices and backends (CPU, OpenCL, Vulkan), tensors and ops with their
        // tape, Philox randomness, file formats.
        .target(
            name: "NoiseARCore",
            dependencies: ["COpenCL", "CBLAS", "CCrypto", "CPNG", "CVulkan", "CVectorMath"],
            path: "Sources/NoiseARCore",
            plugins: ["EmbedKernels"]),
        // The models as their papers name them (NoiseAR, NPNet, Swin, UNet), the schedulers and
        // the sampler loop over any denoiser, the priors' loaders.
        .target(
            name: "NoiseARModels", dependencies: ["NoiseARCore"],
            path: "Sources/NoiseARModels"),
        // The shapes world: scenes, prompts, the exact reward, the shipped models (package
        // resources, copied beside the products), collection, evaluation, training, benchmarks.
        .target(
            name: "NoiseARShapes", dependencies: ["NoiseARCore", "NoiseARModels", "CSupport"],
            path: "Sources/NoiseARShapes",
            resources: [.copy("weights")]),
        // Everything above as one import.
        .target(
            name: "NoiseARGPU", dependencies: ["NoiseARCore", "NoiseARModels", "NoiseARShapes"],
            path: "Sources/NoiseARGPU"),
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
