import Foundation
import NoiseARGPU
import Testing

// MARK: - Helpers (private to this file)

/// The scheduler fixtures folder, or nil (with a printed reason) when absent.
private func schedulerFixtureFiles() -> [URL]? {
    let env = ProcessInfo.processInfo.environment["NOISEAR_FIXTURES"].flatMap { $0.isEmpty ? nil : $0 }
    let root = env.map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // NoiseARGPUTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
            .deletingLastPathComponent()
            .appendingPathComponent("shared/fixtures")
    let dir = root.appendingPathComponent("schedulers")
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else {
        print("skipping scheduler fixture tests: \(dir.path) not found (set NOISEAR_FIXTURES)")
        return nil
    }
    let files = names.filter { $0.hasSuffix(".safetensors") }.sorted().map { dir.appendingPathComponent($0) }
    if files.isEmpty {
        print("skipping scheduler fixture tests: no .safetensors files in \(dir.path)")
        return nil
    }
    return files
}

/// The device the step arithmetic runs on: NOISEAR_DEVICE when set, else the CPU.
private func schedulerTestDevice() throws -> Device {
    if let spec = ProcessInfo.processInfo.environment["NOISEAR_DEVICE"], !spec.isEmpty {
        return try Device.open(spec)
    }
    return Device.cpuDevice()
}

/// max |a - b| / max |b|.
private func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count else { return .infinity }
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        num = max(num, abs(Double(x) - Double(y)))
        den = max(den, abs(Double(y)))
    }
    return den == 0 ? (num == 0 ? 0 : .infinity) : num / den
}

private func relativeError(_ a: [Double], _ b: [Double]) -> Double {
    relativeError(a.map { Float($0) }, b.map { Float($0) })
}

/// Slice `i` of a [S, ...] host tensor as a device tensor.
private func slice(_ t: HostTensor, _ i: Int, on device: Device) throws -> Tensor {
    let shape = Array(t.shape.dropFirst())
    let n = shape.reduce(1, *)
    return try Tensor(Array(t.data[(i * n)..<((i + 1) * n)]), shape: shape, on: device)
}

/// The NoiseError thrown by `body`, or nil.
private func noiseError(_ body: () throws -> Void) -> NoiseError? {
    do {
        try body()
        return nil
    } catch let e as NoiseError {
        return e
    } catch {
        return nil
    }
}

private func isInvalidArgument(_ e: NoiseError?, containing text: String = "") -> Bool {
    guard case .invalidArgument(let message)? = e else { return false }
    return text.isEmpty || message.contains(text)
}

private func isUnsupported(_ e: NoiseError?) -> Bool {
    if case .unsupported? = e { return true }
    return false
}

private let sdxl = SchedulerConfig.stableDiffusion

// MARK: - Reference trajectories

@Suite("Scheduler")
struct SchedulerTests {
    @Test("every fixture: timesteps, sigmas, init sigma, scaled model input and each step")
    func fixtures() throws {
        guard let files = schedulerFixtureFiles() else { return }
        let device = try schedulerTestDevice()
        let tolerance = 1e-5
        for url in files {
            let file = try SafeTensorsFile.read(url)
            let name = url.deletingPathExtension().lastPathComponent
            let className = try #require(file.metadata["scheduler"], "\(name): no scheduler metadata")
            let kind = try #require(SamplerKind(diffusersClassName: className), "\(name): unknown class \(className)")
            let configText = try #require(file.metadata["config"])
            if kind == .dpmpp2m {
                // The kind fixes these DPMSolverMultistepScheduler settings; make sure the fixture agrees.
                #expect(configText.contains("\"algorithm_type\": \"dpmsolver++\""))
                #expect(configText.contains("\"solver_order\": 2"))
                #expect(configText.contains("\"solver_type\": \"midpoint\""))
            }
            let config = try SchedulerConfig.fromDiffusersJSON(configText)
            let steps = try #require(file.metadata["num_inference_steps"].flatMap { Int($0) })
            let initSigma = try #require(file.metadata["init_noise_sigma"].flatMap { Double($0) })
            var scheduler = try makeScheduler(kind, config: config, steps: steps)
            #expect(scheduler.kind == kind)

            // Schedules.
            let refTimesteps = try file.tensor("timesteps").data.map(Double.init)
            #expect(scheduler.timesteps == refTimesteps, "\(name): timesteps \(scheduler.timesteps) vs \(refTimesteps)")
            let acErr = relativeError(scheduler.alphasCumprod, try file.tensor("alphas_cumprod").data.map(Double.init))
            #expect(acErr < tolerance, "\(name): alphas_cumprod error \(acErr)")
            var sigmaErr = 0.0
            if let refSigmas = file["sigmas"] {
                let sigmas = try #require(scheduler.sigmas, "\(name): the scheduler has no sigmas")
                #expect(sigmas.count == refSigmas.data.count)
                for (s, r) in zip(sigmas, refSigmas.data) {
                    sigmaErr = max(sigmaErr, r == 0 ? abs(s) : abs(s - Double(r)) / abs(Double(r)))
                }
                #expect(sigmaErr < tolerance, "\(name): sigmas error \(sigmaErr)")
            }
            #expect(abs(scheduler.initNoiseSigma - initSigma) <= 1e-5 * initSigma,
                    "\(name): init_noise_sigma \(scheduler.initNoiseSigma) vs \(initSigma)")

            // Steps, each fed the reference input; the scheduler state carries over.
            let sampleIn = try file.tensor("sample_in"), modelOut = try file.tensor("model_output")
            let noise = try file.tensor("noise"), sampleOut = try file.tensor("sample_out")
            #expect(sampleIn.shape.first == steps && sampleOut.shape == sampleIn.shape)
            #expect(try file.tensor("initial_sample").data == Array(sampleIn.data.prefix(sampleIn.data.count / steps)))
            var closedLoop = scheduler  // a fresh copy, run on its own outputs
            var closedSample = try slice(sampleIn, 0, on: device)
            var stepErr = 0.0, inputErr = 0.0, closedErr = 0.0
            for i in 0..<steps {
                let x = try slice(sampleIn, i, on: device)
                let m = try slice(modelOut, i, on: device)
                let n = try slice(noise, i, on: device)
                let ref = Array(sampleOut.data[(i * x.count)..<((i + 1) * x.count)])

                // model_output = 0.8 * tanh(scaled input) + 0.05 * t / 1000 checks scaleModelInput.
                let t = scheduler.timesteps[i]
                let predicted = try scheduler.scaleModelInput(x, stepIndex: i).tanh().affine(0.8, Float(0.05 * t / 1000))
                inputErr = max(inputErr, relativeError(try predicted.toArray(), try m.toArray()))

                let out = try scheduler.step(modelOutput: m, stepIndex: i, sample: x,
                                             noise: scheduler.needsNoise ? n : nil)
                #expect(out.shape == x.shape)
                let e = relativeError(try out.toArray(), ref)
                #expect(e < tolerance, "\(name): step \(i) (t=\(t)) relative error \(e)")
                stepErr = max(stepErr, e)

                let cm = try closedLoop.scaleModelInput(closedSample, stepIndex: i).tanh()
                    .affine(0.8, Float(0.05 * t / 1000))
                closedSample = try closedLoop.step(modelOutput: cm, stepIndex: i, sample: closedSample,
                                                   noise: closedLoop.needsNoise ? n : nil)
                closedErr = max(closedErr, relativeError(try closedSample.toArray(), ref))
            }
            #expect(inputErr < tolerance, "\(name): scaled model input error \(inputErr)")
            #expect(closedErr < 1e-4, "\(name): closed-loop error \(closedErr)")
            print("scheduler fixture \(name) [\(kind.rawValue), \(steps) steps]: max step rel err \(stepErr), "
                  + "model-input rel err \(inputErr), sigmas rel err \(sigmaErr), alphas_cumprod rel err \(acErr), "
                  + "closed-loop rel err \(closedErr)")
        }
    }

    // MARK: - Schedules without fixtures

    @Test("timestep spacings follow numpy (round half to even, linspace endpoints)")
    func spacings() throws {
        var c = SchedulerConfig()
        c.timestepSpacing = .trailing
        #expect(try makeScheduler(.ddim, config: c, steps: 16).timesteps.map { Int($0) }
                == [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61])
        c.timestepSpacing = .linspace
        #expect(try makeScheduler(.ddpm, config: c, steps: 10).timesteps.map { Int($0) }
                == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])
        #expect(try makeScheduler(.dpmpp2m, config: c, steps: 25).timesteps.map { Int($0) }
                == [999, 959, 919, 879, 839, 799, 759, 719, 679, 639, 599, 559, 519, 480, 440, 400, 360, 320,
                    280, 240, 200, 160, 120, 80, 40])
        #expect(try makeScheduler(.euler, config: c, steps: 7).timesteps == [999, 832.5, 666, 499.5, 333, 166.5, 0])
        c.timestepSpacing = .leading
        c.stepsOffset = 1
        #expect(try makeScheduler(.ddimInverse, config: c, steps: 4).timesteps == [1, 251, 501, 751])
        // Class defaults when the spacing is unset: leading for DDIM, linspace for Euler.
        #expect(try makeScheduler(.ddim, config: SchedulerConfig(), steps: 4).timesteps == [750, 500, 250, 0])
        #expect(try makeScheduler(.euler, config: SchedulerConfig(), steps: 4).timesteps == [999, 666, 333, 0])
    }

    @Test("Euler init sigma and Karras sigmas")
    func eulerSchedules() throws {
        var c = sdxl
        c.timestepSpacing = .trailing
        let trailing = try makeScheduler(.euler, config: c, steps: 10)
        let sigmas = try #require(trailing.sigmas)
        #expect(trailing.initNoiseSigma == sigmas[0])  // no sqrt(s^2 + 1) for trailing
        #expect(sigmas.last == 0 && sigmas.count == 11)

        c.useKarrasSigmas = true
        let karras = try makeScheduler(.euler, config: c, steps: 10)
        let ks = try #require(karras.sigmas)
        #expect(abs(ks[0] - sigmas[0]) < 1e-9 * sigmas[0])
        #expect(abs(ks[9] - sigmas[9]) < 1e-9 * sigmas[9])
        #expect(zip(ks, ks.dropFirst()).allSatisfy { $0 > $1 })
        #expect(karras.timesteps.contains { $0 != $0.rounded() }, "Karras timesteps are fractional")
        let dpm = try makeScheduler(.dpmpp2m, config: c, steps: 10)
        #expect(dpm.timesteps.allSatisfy { $0 == $0.rounded() }, "DPM-Solver rounds Karras timesteps")
        #expect(dpm.timesteps.first == 999)
    }

    @Test("DPM-Solver++ carries its history: out-of-order steps are refused, copies restart")
    func dpmState() throws {
        let device = Device.cpuDevice()
        let x = try Tensor.randn([1, 4, 4, 4], seed: 1, on: device)
        let m = try Tensor.randn([1, 4, 4, 4], seed: 2, on: device)
        var s = try makeScheduler(.dpmpp2m, config: sdxl, steps: 10)
        let fresh = s
        let a = try s.step(modelOutput: m, stepIndex: 0, sample: x, noise: nil)
        let e = noiseError { _ = try s.step(modelOutput: m, stepIndex: 2, sample: a, noise: nil) }
        #expect(isInvalidArgument(e, containing: "in order"))
        var again = fresh
        let b = try again.step(modelOutput: m, stepIndex: 0, sample: x, noise: nil)
        #expect(try a.toArray() == b.toArray())
        // The second step is second order: it differs from a first-order step from a fresh copy
        // started at index 1. (With the same epsilon at both steps the data predictions would
        // coincide, as first-order DPM-Solver++ is exact for a constant epsilon; use another one.)
        let m2 = try Tensor.randn([1, 4, 4, 4], seed: 8, on: device)
        var second = s
        let c1 = try second.step(modelOutput: m2, stepIndex: 1, sample: a, noise: nil)
        var startAtOne = fresh
        let c2 = try startAtOne.step(modelOutput: m2, stepIndex: 1, sample: a, noise: nil)
        #expect(relativeError(try c1.toArray(), try c2.toArray()) > 1e-4)
    }

    // MARK: - Config parsing

    @Test("diffusers JSON: Python infinities, nulls, defaults")
    func configJSON() throws {
        let text = """
        {"_class_name": "NaN -Infinity Infinity", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "beta_end": 0.012, "lambda_min_clipped": -Infinity, "variance_type": null, "sigma_min": null,
         "timestep_spacing": "trailing", "steps_offset": 1, "prediction_type": "v_prediction",
         "set_alpha_to_one": false, "clip_sample": false, "use_karras_sigmas": true, "trained_betas": null}
        """
        let c = try SchedulerConfig.fromDiffusersJSON(text)
        #expect(c.lambdaMinClipped == -.infinity)
        #expect(c.betaSchedule == .scaledLinear && c.timestepSpacing == .trailing && c.stepsOffset == 1)
        #expect(c.predictionType == .vPrediction && !c.setAlphaToOne && !c.clipSample && c.useKarrasSigmas)
        #expect(c.varianceType == .fixedSmall && c.sigmaMin == nil && c.trainedBetas == nil)
        #expect(try SchedulerConfig.fromDiffusersJSON("{}") == SchedulerConfig())
        let inf = try SchedulerConfig.fromDiffusersJSON(#"{"lambda_min_clipped": Infinity}"#)
        #expect(inf.lambdaMinClipped == .infinity)
    }

    @Test("diffusers JSON: malformed or unsupported configs are refused")
    func configJSONErrors() {
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON("not json") }))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON("[1, 2]") }))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"beta_schedule": "cubic"}"#) },
                                  containing: "beta_schedule"))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"timestep_spacing": 3}"#) }))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"steps_offset": 1.5}"#) }))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"clip_sample": 1}"#) }))
        #expect(isInvalidArgument(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"beta_end": 1.5}"#) }))
        #expect(isUnsupported(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"thresholding": true}"#) }))
        #expect(isUnsupported(noiseError {
            _ = try SchedulerConfig.fromDiffusersJSON(#"{"beta_schedule": "squaredcos_cap_v2"}"#)
        }))
        #expect(isUnsupported(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"prediction_type": "sample"}"#) }))
        #expect(isUnsupported(noiseError { _ = try SchedulerConfig.fromDiffusersJSON(#"{"variance_type": "learned"}"#) }))
    }

    // MARK: - Invalid arguments

    @Test("invalid steps, names, indices, noise and shapes")
    func invalidArguments() throws {
        for kind in SamplerKind.allCases {
            #expect(isInvalidArgument(noiseError { _ = try makeScheduler(kind, config: sdxl, steps: 0) },
                                      containing: "at least 1"), "\(kind)")
            #expect(isInvalidArgument(noiseError { _ = try makeScheduler(kind, config: sdxl, steps: -5) }), "\(kind)")
            #expect(isInvalidArgument(noiseError { _ = try makeScheduler(kind, config: sdxl, steps: 1001) },
                                      containing: "exceed"), "\(kind)")
            #expect(try SamplerKind.parse(kind.rawValue) == kind)
            #expect(try SamplerKind.parse(kind.diffusersClassName) == kind)
            let one = try makeScheduler(kind, config: sdxl, steps: 1)
            #expect(one.timesteps.count == 1)
        }
        #expect(isInvalidArgument(noiseError { _ = try SamplerKind.parse("heun") }, containing: "unknown sampler"))
        #expect(isInvalidArgument(noiseError { _ = try makeScheduler("plms", config: sdxl, steps: 10) }))
        #expect(try SamplerKind.parse("Euler_A") == .eulerA)
        #expect(try SamplerKind.parse("dpm++2m") == .dpmpp2m)

        var c = sdxl
        c.eta = -0.5
        #expect(isInvalidArgument(noiseError { _ = try makeScheduler(.ddim, config: c, steps: 10) }, containing: "eta"))
        c = sdxl
        c.timestepSpacing = .linspace
        #expect(isInvalidArgument(noiseError { _ = try makeScheduler(.ddimInverse, config: c, steps: 10) }))
        c = sdxl
        c.stepsOffset = 100  // 950 + 100 is past the last training timestep
        #expect(isInvalidArgument(noiseError { _ = try makeScheduler(.ddim, config: c, steps: 20) }))
        c = sdxl
        c.trainedBetas = [0.1, 0.2]
        #expect(isInvalidArgument(noiseError { _ = try makeScheduler(.ddpm, config: c, steps: 10) }))

        let device = Device.cpuDevice()
        let x = try Tensor.randn([1, 4, 2, 2], seed: 3, on: device)
        let wrong = try Tensor.randn([1, 4, 2, 3], seed: 4, on: device)
        for kind in SamplerKind.allCases {
            var s = try makeScheduler(kind, config: sdxl, steps: 5)
            #expect(isInvalidArgument(noiseError { _ = try s.step(modelOutput: x, stepIndex: 5, sample: x, noise: x) }),
                    "\(kind)")
            #expect(isInvalidArgument(noiseError { _ = try s.step(modelOutput: x, stepIndex: -1, sample: x, noise: x) }),
                    "\(kind)")
            #expect(isInvalidArgument(noiseError { _ = try s.scaleModelInput(x, stepIndex: 7) }), "\(kind)")
            let e = noiseError { _ = try s.step(modelOutput: wrong, stepIndex: 0, sample: x, noise: x) }
            guard case .shapeMismatch? = e else {
                Issue.record("\(kind): expected shapeMismatch, got \(String(describing: e))")
                continue
            }
            if s.needsNoise {
                #expect(isInvalidArgument(noiseError { _ = try s.step(modelOutput: x, stepIndex: 0, sample: x, noise: nil) },
                                          containing: "noise"), "\(kind)")
            }
        }
        var ddim = sdxl
        ddim.eta = 1
        #expect(try makeScheduler(.ddim, config: ddim, steps: 10).needsNoise)
        #expect(try !makeScheduler(.ddim, config: sdxl, steps: 10).needsNoise)
    }

    @Test("DDIM with eta > 0 adds std * noise")
    func ddimEta() throws {
        let device = Device.cpuDevice()
        let x = try Tensor.randn([1, 4, 4, 4], seed: 5, on: device)
        let m = try Tensor.randn([1, 4, 4, 4], seed: 6, on: device)
        let n = try Tensor.randn([1, 4, 4, 4], seed: 7, on: device)
        var c = sdxl
        c.eta = 1
        var noisy = try makeScheduler(.ddim, config: c, steps: 10)
        let withNoise = try noisy.step(modelOutput: m, stepIndex: 3, sample: x, noise: n).toArray()
        let zero = try Tensor.zeros([1, 4, 4, 4], on: device)
        let without = try noisy.step(modelOutput: m, stepIndex: 3, sample: x, noise: zero).toArray()
        // std for t=601 -> 501 (leading spacing, offset 1) from the schedule itself.
        let ac = noisy.alphasCumprod
        #expect(noisy.timesteps[3] == 601)
        let (at, ap) = (ac[601], ac[501])
        let std = ((1 - ap) / (1 - at) * (1 - at / ap)).squareRoot()
        let nv = try n.toArray()
        var worst = 0.0
        for k in 0..<nv.count {
            worst = max(worst, abs(Double(withNoise[k] - without[k]) - std * Double(nv[k])))
        }
        #expect(worst < 1e-5)
    }
}
