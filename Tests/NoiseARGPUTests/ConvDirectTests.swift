import Foundation
import NoiseARGPU
import Testing

/// The direct convolution (`Op.Conv2d`: conv2d_direct on OpenCL and Vulkan, im2col + GEMM on
/// the CPU backend) against the CPU backend, and `Tensor.conv2d`'s use of it.
@Suite(.serialized) struct ConvDirectTests {
    /// One convolution: input [batch, c, h, w], weight [cout, c, kh, kw], strides and paddings
    /// per axis, with or without a bias.
    struct Case: Sendable, CustomStringConvertible {
        var batch: Int, c: Int, h: Int, w: Int, cout: Int, kh: Int, kw: Int
        var sh = 1, sw = 1, ph = 0, pw = 0
        var bias = true
        /// The activation epilogue (`Op.Conv2d.activation`).
        var activation: UnaryOp? = nil
        var geometry: ConvGeometry {
            var g = ConvGeometry(channels: c, height: h, width: w, kernelH: kh, kernelW: kw)
            g.strideH = sh; g.strideW = sw; g.padH = ph; g.padW = pw
            return g
        }
        var description: String {
            "N\(batch) C\(c)->\(cout) \(h)x\(w) k\(kh)x\(kw) s\(sh),\(sw) p\(ph),\(pw)\(bias ? " +bias" : "")"
                + (activation.map { " +\($0)" } ?? "")
        }
    }

    /// Odd sizes that are not multiples of any tile (pixels, channels or K slices).
    static let cases: [Case] = [
        Case(batch: 2, c: 3, h: 7, w: 9, cout: 5, kh: 3, kw: 3, ph: 1, pw: 1),                       // 3x3 same
        Case(batch: 3, c: 17, h: 13, w: 11, cout: 64, kh: 3, kw: 3, ph: 1, pw: 1, bias: false),
        Case(batch: 1, c: 64, h: 16, w: 16, cout: 64, kh: 3, kw: 3, ph: 1, pw: 1),                   // the UNet's
        Case(batch: 3, c: 5, h: 9, w: 8, cout: 17, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),        // 3x3 stride 2
        Case(batch: 1, c: 17, h: 10, w: 7, cout: 3, kh: 3, kw: 3, sh: 2, sw: 2, bias: false),        // stride 2, valid
        Case(batch: 3, c: 64, h: 6, w: 5, cout: 17, kh: 1, kw: 1),                                   // 1x1
        Case(batch: 1, c: 5, h: 5, w: 7, cout: 3, kh: 1, kw: 1, sh: 2, sw: 2, bias: false),          // 1x1 stride 2
        Case(batch: 1, c: 3, h: 11, w: 10, cout: 5, kh: 5, kw: 5, ph: 2, pw: 2),                     // 5x5
        Case(batch: 3, c: 5, h: 12, w: 9, cout: 17, kh: 5, kw: 5, bias: false),                      // 5x5 valid
        Case(batch: 3, c: 17, h: 10, w: 9, cout: 5, kh: 4, kw: 4, sh: 2, sw: 2, ph: 1, pw: 1),       // 4x4 down
        Case(batch: 1, c: 5, h: 7, w: 12, cout: 3, kh: 3, kw: 5, sh: 1, sw: 2, ph: 1, pw: 2),        // non-square
        Case(batch: 3, c: 3, h: 6, w: 13, cout: 17, kh: 1, kw: 3, ph: 0, pw: 1, bias: false),
        Case(batch: 1, c: 3, h: 3, w: 3, cout: 5, kh: 3, kw: 3, sh: 3, sw: 3, ph: 2, pw: 2),         // more pad than image
        Case(batch: 1, c: 120, h: 5, w: 6, cout: 9, kh: 3, kw: 3, ph: 1, pw: 1),                     // K near llvmpipe's budget
        // Stride-1 tiles of whole input rows (PoCL's runs of x): rows of 8 and 16 pixels, a tile
        // inside one 70-pixel row, 5x5 taps two pixels into the padding
        Case(batch: 3, c: 6, h: 8, w: 8, cout: 7, kh: 3, kw: 3, ph: 1, pw: 1, bias: false),
        Case(batch: 2, c: 5, h: 3, w: 70, cout: 3, kh: 3, kw: 3, ph: 1, pw: 1),
        Case(batch: 1, c: 4, h: 6, w: 16, cout: 5, kh: 5, kw: 5, ph: 2, pw: 2),
        // The activation epilogue, with and without a bias, on full and partial tiles
        Case(batch: 2, c: 5, h: 9, w: 7, cout: 17, kh: 3, kw: 3, ph: 1, pw: 1, activation: .silu),
        Case(batch: 1, c: 64, h: 16, w: 16, cout: 64, kh: 3, kw: 3, ph: 1, pw: 1, activation: .gelu),
        Case(batch: 3, c: 17, h: 10, w: 9, cout: 5, kh: 4, kw: 4, sh: 2, sw: 2, ph: 1, pw: 1, bias: false,
             activation: .tanh),
        Case(batch: 3, c: 64, h: 6, w: 5, cout: 17, kh: 1, kw: 1, activation: .relu),
    ]

    /// The op on every kernel backend against the CPU backend: random non-zero inputs at odd
    /// offsets inside guarded buffers (stray writes, NaN and changed inputs fail), the output
    /// pre-filled with random values (every element must be written). Each backend must also
    /// take the call itself (`supports`), so the CPU fallback hides nothing.
    @Test(arguments: cases)
    func directConvolution(_ c: Case) throws {
        var rng = TestRNG(UInt64(c.c * 1000 + c.cout * 10 + c.kh))
        let g = c.geometry
        let inputs = [rng.values(c.batch * c.c * c.h * c.w), rng.values(c.cout * c.c * c.kh * c.kw)]
            + (c.bias ? [rng.values(c.cout)] : [])
        let outCount = c.batch * c.cout * g.outH * g.outW
        try differential("conv2d \(c)", inputs: inputs, outputs: [rng.values(outCount)], tolerance: 1e-10) { be, i, o in
            let op = Op.Conv2d(g, batch: c.batch, outChannels: c.cout, x: i[0], weight: i[1],
                               bias: c.bias ? i[2] : nil, activation: c.activation, out: o[0])
            #expect(be.supports(op), "conv2d \(c): \(be.info.id) declines the call")
            try be.conv2d(g, batch: c.batch, outChannels: c.cout, x: i[0], weight: i[1],
                          bias: c.bias ? i[2] : nil, activation: c.activation, out: o[0])
        }
    }

    /// `Tensor.conv2d` on every kernel backend: without a tape it is one kernel launch (the
    /// direct convolution, with the activation when there is one) and agrees with the CPU
    /// backend (where the activation is a pass after the shifted taps); recorded, it keeps
    /// im2col + GEMM (more launches) and its gradients still agree.
    @Test func tensorConv2dIsOneLaunchAndAgreesWithCPU() throws {
        var rng = TestRNG(77)
        let picks = [Self.cases[0], Self.cases[3], Self.cases[5], Self.cases[9]]
            + Self.cases.filter { $0.activation != nil }.prefix(2)
        try withBackends { backends in
            for c in picks {
                let xs = rng.values(c.batch * c.c * c.h * c.w), ws = rng.values(c.cout * c.c * c.kh * c.kw)
                let bs = rng.values(c.cout)
                // (same stride and padding on both axes: what Tensor.conv2d takes)
                let stride = c.sh, padding = c.ph
                func run(_ dev: Device, grad: Bool) throws -> (y: [Float], grads: [[Float]]) {
                    let x = try Tensor(xs, shape: [c.batch, c.c, c.h, c.w], on: dev, requiresGrad: grad)
                    let w = try Tensor(ws, shape: [c.cout, c.c, c.kh, c.kw], on: dev, requiresGrad: grad)
                    let b = try Tensor(bs, shape: [c.cout], on: dev, requiresGrad: grad)
                    let y = try Tensor.conv2d(x, weight: w, bias: c.bias ? b : nil, stride: stride, padding: padding,
                                              activation: c.activation)
                    guard grad else { return (try y.toArray(), []) }
                    try y.backward(seed: Tensor(rng.values(y.count), shape: y.shape, on: dev))
                    return (try y.toArray(), try [x, w].map { try #require($0.grad).toArray() })
                }
                let want = try run(Device.cpuDevice(), grad: false).y
                for be in backends {
                    let dev = Device(backend: be)
                    dev.warn = { Issue.record("conv2d \(c) [\(be.label)]: \($0)") }
                    let before = be.launches
                    let got = try run(dev, grad: false).y
                    #expect(be.launches - before == 1, "conv2d \(c) [\(be.label)]: \(be.launches - before) launches")
                    #expect(nmse(got, want) < 1e-10, "conv2d \(c) [\(be.label)]: NMSE \(nmse(got, want))")
                }
                // Recorded: im2col, GEMM and the bias pass, as before; same seed on both sides.
                let seedState = rng
                let cpu = try run(Device.cpuDevice(), grad: true)
                for be in backends {
                    rng = seedState
                    let before = be.launches
                    let got = try run(Device(backend: be), grad: true)
                    #expect(be.launches - before > 1, "recorded conv2d \(c) [\(be.label)] took one launch")
                    #expect(nmse(got.y, cpu.y) < 1e-10, "recorded conv2d \(c) [\(be.label)]: NMSE \(nmse(got.y, cpu.y))")
                    for (i, (a, b)) in zip(got.grads, cpu.grads).enumerated() {
                        #expect(nmse(a, b) < 1e-10, "recorded conv2d \(c) [\(be.label)] gradient \(i): NMSE \(nmse(a, b))")
                    }
                }
            }
        }
    }

    /// On a Vulkan device that is a CPU (llvmpipe cuts every shader loop short after 65,535
    /// iterations in all) a convolution whose loops could pass the budget is declined, and
    /// `Tensor.conv2d` takes im2col + GEMM there with the right result.
    @Test func llvmpipeLoopBudget() throws {
        try withBackends { backends in
            for be in backends where be.info.backend == "vulkan" && be.info.kind == .cpu {
                var rng = TestRNG(79)
                let c = Case(batch: 1, c: 300, h: 5, w: 6, cout: 9, kh: 3, kw: 3, ph: 1, pw: 1)
                let xs = rng.values(c.c * c.h * c.w), ws = rng.values(c.cout * c.c * 9), bs = rng.values(c.cout)
                func conv(_ d: Device) throws -> [Float] {
                    try Tensor.conv2d(Tensor(xs, shape: [1, c.c, c.h, c.w], on: d),
                                      weight: Tensor(ws, shape: [c.cout, c.c, 3, 3], on: d),
                                      bias: Tensor(bs, shape: [c.cout], on: d), padding: 1).toArray()
                }
                let dev = Device(backend: be)
                dev.warn = { Issue.record("conv2d K 2700 [\(be.label)]: \($0)") }
                let probe = try Tensor.empty([1, c.cout, c.h, c.w], on: dev)
                #expect(!be.supports(Op.Conv2d(c.geometry, batch: 1, outChannels: c.cout, x: probe.ref, weight: probe.ref,
                                               bias: nil, out: probe.ref)), "[\(be.label)] K 2700 accepted")
                let before = be.launches
                let got = try conv(dev)
                #expect(be.launches - before > 1)
                #expect(nmse(got, try conv(Device.cpuDevice())) < 1e-10, "[\(be.label)] K 2700 via im2col")
            }
        }
    }

    /// With the family disabled the backend declines the op and `Tensor.conv2d` takes im2col +
    /// GEMM on the device, with the same results.
    @Test func disabledFamilyTakesIm2col() throws {
        try withCL { backends in
            guard !backends.isEmpty else { return }
            let be = try OpenCLBackend(index: 0, environment: testEnvironment(["NOISEAR_DISABLE_OPS": "conv2d"]))
            let dev = Device(backend: be)
            dev.warn = { Issue.record("conv2d with the family disabled: \($0)") }
            var rng = TestRNG(78)
            let c = Self.cases[3]
            let xs = rng.values(c.batch * c.c * c.h * c.w), ws = rng.values(c.cout * c.c * c.kh * c.kw)
            let bs = rng.values(c.cout)
            func conv(_ d: Device) throws -> [Float] {
                try Tensor.conv2d(Tensor(xs, shape: [c.batch, c.c, c.h, c.w], on: d),
                                  weight: Tensor(ws, shape: [c.cout, c.c, c.kh, c.kw], on: d),
                                  bias: Tensor(bs, shape: [c.cout], on: d), stride: c.sh, padding: c.ph).toArray()
            }
            let before = be.launches
            let got = try conv(dev)
            #expect(be.launches - before > 1, "the disabled family still ran as one launch")
            #expect(nmse(got, try conv(Device.cpuDevice())) < 1e-10)
        }
    }

    /// `supports` states the kernel's limits: 32-bit indices, the tile within the device.
    @Test func supportsStatesTheLimits() throws {
        try withBackends { backends in
            for be in backends {
                let buf = try be.allocate(16)
                func op(_ g: ConvGeometry, batch: Int, cout: Int, offset: Int = 0) -> Op.Conv2d {
                    Op.Conv2d(g, batch: batch, outChannels: cout, x: BufRef(buf, offset), weight: BufRef(buf),
                              bias: nil, out: BufRef(buf))
                }
                let g = ConvGeometry(channels: 4, height: 64, width: 64, kernelH: 3, kernelW: 3, padding: 1)
                #expect(be.supports(op(g, batch: 2, cout: 8)), "[\(be.label)] a small convolution")
                // 2^31 input elements, or outputs, or an offset past 2^31 - 1 minus the input
                #expect(!be.supports(op(g, batch: 1 << 17, cout: 8)), "[\(be.label)] 2^31 inputs")
                #expect(!be.supports(op(g, batch: 1 << 14, cout: 1 << 10)), "[\(be.label)] 2^34 outputs")
                #expect(!be.supports(op(g, batch: 1, cout: 8, offset: Int(Int32.max) - 1000)), "[\(be.label)] offset")
                let huge = ConvGeometry(channels: 1 << 20, height: 1, width: 1, kernelH: 64, kernelW: 64, padding: 32)
                #expect(!be.supports(op(huge, batch: 1, cout: 1 << 12)), "[\(be.label)] 2^32 weights")
            }
        }
        // Tiles: the sets fit Vulkan's minimum limits (128 items, 128 x 128 x 64, 16 KB);
        // a tile given beyond a device's limits is refused when the backend opens, by name.
        let small = KernelLimits(maxWorkGroupSize: 128, maxWorkItemSizes: [128, 128, 64],
                                 localMemoryBytes: 16384, fp64: false)
        for profile in KernelParams.Profile.allCases {
            #expect(KernelParams(profile: profile).convTileFits(small), "\(profile) set")
        }
        let big = KernelParams(profile: .cpu, overrides: ["CONV_WPTM": 1, "CONV_WPTN": 16])  // 4 x 64 items
        #expect(!big.convTileFits(small))
        do {
            try big.validate(for: small)
            Issue.record("a conv tile of 4 x 64 items on a 128-item device was accepted")
        } catch NoiseError.invalidArgument(let message) {
            #expect(message.contains("CONV_TSM") && !message.contains("\n"), "\(message)")
        }
        for (overrides, name) in [(["CONV_TSN": 30, "CONV_WPTN": 4], "CONV_TSN"), (["CONV_TSK": 0], "CONV_TSK"),
                                  (["CONV_WPTM": 0], "CONV_WPTM")] {
            do {
                try KernelParams(profile: .cpu, overrides: overrides).validate(for: small)
                Issue.record("\(overrides) accepted")
            } catch NoiseError.invalidArgument(let message) {
                #expect(message.contains(name), "\(message)")
            }
        }
    }
}
