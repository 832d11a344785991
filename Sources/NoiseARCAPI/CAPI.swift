import CNoiseAR
import Foundation
import NoiseARGPU

// The C API of include/noisear.h: thin wrappers over the library. Every Swift error becomes a
// status and a message; nothing here traps on what a caller passes.

// MARK: - strings, errors, handles

/// A C string owned by Swift, freed with its box.
final class CStringBox {
    let pointer: UnsafeMutablePointer<CChar>
    init(_ text: String) {
        pointer = text.withCString { src in
            let n = strlen(src) + 1
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: n)
            p.initialize(from: src, count: n)
            return p
        }
    }
    deinit { pointer.deallocate() }
    var c: UnsafePointer<CChar> { UnsafePointer(pointer) }
}

/// A string literal as a C string (static storage).
@inline(__always)
func staticC(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The status of an error and its one-line message.
func classify(_ error: Error) -> (noisear_status, String) {
    guard let e = error as? NoiseError else { return (NOISEAR_ERR_INTERNAL, "\(error)") }
    switch e {
    case .invalidArgument: return (NOISEAR_ERR_INVALID_ARGUMENT, e.description)
    case .shapeMismatch: return (NOISEAR_ERR_SHAPE, e.description)
    case .io: return (NOISEAR_ERR_IO, e.description)
    case .safetensors, .format: return (NOISEAR_ERR_FORMAT, e.description)
    case .outOfMemory: return (NOISEAR_ERR_OOM, e.description)
    case .openCL(_, let code, _) where code == -4 || code == -6:  // allocation failures
        return (NOISEAR_ERR_OOM, e.description)
    case .openCL, .kernelBuild, .device: return (NOISEAR_ERR_DEVICE, e.description)
    case .unsupported: return (NOISEAR_ERR_UNSUPPORTED, e.description)
    case .cancelled: return (NOISEAR_ERR_CANCELLED, e.description)
    }
}

/// This thread's last handle-less failure.
enum ThreadError {
    static let key = "noisear.last_error"
    static func set(_ message: String) { Thread.current.threadDictionary[key] = CStringBox(message) }
    static var current: UnsafePointer<CChar> {
        (Thread.current.threadDictionary[key] as? CStringBox)?.c ?? staticC("")
    }
}

/// A context: a device, its last error, and the shapes-world models loaded on it.
final class Context {
    let device: Device
    let deviceID: CStringBox
    private var lastError = CStringBox("")
    /// Messages already handed to the caller, kept until the context is freed: the header
    /// promises a returned string lives as long as its handle, so a later failure must not free
    /// it. Only handed-out messages are kept (one per failure that was asked about).
    private var handedOut: [CStringBox] = []
    private var lastErrorHandedOut = false
    var models: [String: TextToImageModel] = [:]
    init(device: Device) {
        self.device = device
        deviceID = CStringBox(device.info.id)
    }
    func fail(_ error: Error) -> noisear_status {
        let (status, message) = classify(error)
        if lastErrorHandedOut { handedOut.append(lastError) }
        lastError = CStringBox(message)
        lastErrorHandedOut = false
        Log.emit(3, message)
        return status
    }
    /// The last failure's message for the caller (it stays valid until the context is freed).
    var lastErrorForCaller: UnsafePointer<CChar> {
        lastErrorHandedOut = true
        return lastError.c
    }
}

final class Prior {
    let context: Context
    let prior: NoisePrior
    init(context: Context, prior: NoisePrior) {
        self.context = context
        self.prior = prior
    }
}

func handle<T: AnyObject>(_ p: OpaquePointer?, as: T.Type) -> T? {
    guard let p else { return nil }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
}

func retained<T: AnyObject>(_ object: T) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

/// Runs `body` for a handle-less call; a failure is stored per thread.
func guarded(_ body: () throws -> Void) -> noisear_status {
    do {
        try body()
        return NOISEAR_OK
    } catch {
        let (status, message) = classify(error)
        ThreadError.set(message)
        Log.emit(3, message)
        return status
    }
}

/// Runs `body` on a context; a failure is stored on it.
func guarded(_ ctx: Context, _ body: () throws -> Void) -> noisear_status {
    do {
        try body()
        return NOISEAR_OK
    } catch {
        return ctx.fail(error)
    }
}

func string(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let p else { throw NoiseError.invalidArgument("\(what) is NULL") }
    return String(cString: p)
}

/// `count` floats at `p` as an array (NULL or a count that does not fit is an error).
func floats(_ p: UnsafePointer<Float>?, _ count: Int, _ what: String) throws -> [Float] {
    guard let p else { throw NoiseError.invalidArgument("\(what) is NULL") }
    return Array(UnsafeBufferPointer(start: p, count: count))
}

/// The element count of a shape, checked (positive sizes, no overflow).
func elements(_ shape: [Int64], _ what: String) throws -> Int {
    var n = 1
    for d in shape {
        guard d > 0, d <= Int64(Int.max) else { throw NoiseError.shapeMismatch("\(what) \(shape): every size must be positive") }
        let (m, o) = n.multipliedReportingOverflow(by: Int(d))
        guard !o else { throw NoiseError.shapeMismatch("\(what) \(shape) has more elements than can be counted") }
        n = m
    }
    return n
}

/// A caller's element count as C sees it (a size_t: SIZE_MAX is not "-1").
func bufferCount(_ c: Int) -> String { c >= 0 ? String(c) : String(UInt(bitPattern: c)) }

/// The caller's output buffer for `batch` latents, checked before any work is done: not NULL
/// and exactly [B, C, H, W] floats, so a huge batch is refused here rather than by an
/// allocation that aborts the host.
func checkLatentOut(_ p: Prior, _ out: UnsafeMutablePointer<Float>?, _ count: Int, batch: Int64, _ what: String) throws {
    guard out != nil else { throw NoiseError.invalidArgument("\(what) is NULL") }
    _ = try latentShape(p, count: count, batch: batch, what)
}

/// The latent shape [B, C, H, W] of `batch` images and its element count, which a caller's
/// buffer of `count` floats must hold exactly.
func latentShape(_ p: Prior, count: Int, batch: Int64, _ what: String) throws -> (shape: [Int], elements: Int) {
    let shape = [batch] + p.prior.latentShape.map(Int64.init)
    let n = try elements(shape, what)
    guard count == n else {
        throw NoiseError.shapeMismatch("\(what) holds \(bufferCount(count)) floats; [B, C, H, W] = \(shape) needs \(n)")
    }
    return (shape.map { Int($0) }, n)
}

/// Copies `values` to a caller's buffer of `capacity` floats (NULL allowed when `optional`).
func store(_ values: [Float], _ out: UnsafeMutablePointer<Float>?, capacity: Int, _ what: String, optional: Bool = false) throws {
    guard let out else {
        if optional { return }
        throw NoiseError.invalidArgument("\(what) is NULL")
    }
    guard capacity == values.count else {
        throw NoiseError.shapeMismatch("\(what) holds \(bufferCount(capacity)) floats; the result has \(values.count)")
    }
    values.withUnsafeBufferPointer { src in
        if let base = src.baseAddress { out.update(from: base, count: src.count) }
    }
}

// MARK: - logging

final class Log: @unchecked Sendable {
    static let shared = Log()
    private let lock = NSLock()
    private var callback: noisear_log_callback?
    private var userData: UnsafeMutableRawPointer?

    func set(_ cb: noisear_log_callback?, _ ud: UnsafeMutableRawPointer?) {
        lock.lock()
        callback = cb
        userData = ud
        lock.unlock()
    }

    static func emit(_ level: Int32, _ message: String) {
        shared.lock.lock()
        let cb = shared.callback, ud = shared.userData
        shared.lock.unlock()
        if let cb {
            message.withCString { cb(level, $0, ud) }
        } else if level == 2 {
            // Without a callback only warnings go to standard error: errors are returned as
            // statuses with their message, and notices are quiet.
            FileHandle.standardError.write(Data("noisear: warning: \(message)\n".utf8))
        }
    }
}

// MARK: - versions

@_cdecl("noisear_abi_version")
public func noisear_abi_version() -> Int32 { NOISEAR_ABI_VERSION }

@_cdecl("noisear_version")
public func noisear_version() -> UnsafePointer<CChar> { staticC("0.10.0") }

@_cdecl("noisear_status_name")
public func noisear_status_name(_ status: noisear_status) -> UnsafePointer<CChar> {
    switch status {
    case NOISEAR_OK: return staticC("NOISEAR_OK")
    case NOISEAR_ERR_INVALID_ARGUMENT: return staticC("NOISEAR_ERR_INVALID_ARGUMENT")
    case NOISEAR_ERR_SHAPE: return staticC("NOISEAR_ERR_SHAPE")
    case NOISEAR_ERR_IO: return staticC("NOISEAR_ERR_IO")
    case NOISEAR_ERR_FORMAT: return staticC("NOISEAR_ERR_FORMAT")
    case NOISEAR_ERR_DEVICE: return staticC("NOISEAR_ERR_DEVICE")
    case NOISEAR_ERR_UNSUPPORTED: return staticC("NOISEAR_ERR_UNSUPPORTED")
    case NOISEAR_ERR_CANCELLED: return staticC("NOISEAR_ERR_CANCELLED")
    case NOISEAR_ERR_OOM: return staticC("NOISEAR_ERR_OOM")
    case NOISEAR_ERR_INTERNAL: return staticC("NOISEAR_ERR_INTERNAL")
    default: return staticC("NOISEAR_STATUS_UNKNOWN")
    }
}

@_cdecl("noisear_last_error")
public func noisear_last_error() -> UnsafePointer<CChar> { ThreadError.current }

@_cdecl("noisear_set_log_callback")
public func noisear_set_log_callback(_ callback: noisear_log_callback?, _ userData: UnsafeMutableRawPointer?) {
    Log.shared.set(callback, userData)
}

// MARK: - devices

/// Writes `text` into a fixed-size C char array (truncated, NUL-terminated).
func fill<T>(_ field: inout T, _ text: String) {
    withUnsafeMutableBytes(of: &field) { raw in
        let bytes = Array(text.utf8.prefix(max(raw.count - 1, 0)))
        for (i, b) in bytes.enumerated() { raw[i] = b }
        for i in bytes.count..<raw.count { raw[i] = 0 }
    }
}

@_cdecl("noisear_device_count")
public func noisear_device_count() -> Int32 { Int32(clamping: Device.list().devices.count) }

@_cdecl("noisear_device_get")
public func noisear_device_get(_ index: Int32, _ out: UnsafeMutablePointer<noisear_device_info>?) -> noisear_status {
    guarded {
        guard let out else { throw NoiseError.invalidArgument("noisear_device_get: out is NULL") }
        let all = Device.list().devices
        guard index >= 0 && Int(index) < all.count else {
            throw NoiseError.invalidArgument("no device \(index): \(all.count) found")
        }
        let d = all[Int(index)]
        var info = noisear_device_info()
        fill(&info.id, d.id)
        fill(&info.backend, d.backend)
        fill(&info.type, d.kind.rawValue)
        fill(&info.name, d.name)
        fill(&info.vendor, d.vendor)
        info.memory_bytes = d.memoryBytes
        info.compute_units = Int32(clamping: d.computeUnits)
        out.pointee = info
    }
}

// MARK: - contexts

@_cdecl("noisear_context_default_params")
public func noisear_context_default_params() -> noisear_context_params {
    noisear_context_params(device: nil)
}

@_cdecl("noisear_context_create")
public func noisear_context_create(_ params: UnsafePointer<noisear_context_params>?,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?) -> noisear_status {
    guarded {
        guard let out else { throw NoiseError.invalidArgument("noisear_context_create: out is NULL") }
        out.pointee = nil
        let spec = params?.pointee.device.map { String(cString: $0) }
        let device = try Device.open(spec) { Log.emit(1, $0) }
        device.warn = { Log.emit(2, $0) }
        out.pointee = retained(Context(device: device))
    }
}

@_cdecl("noisear_context_free")
public func noisear_context_free(_ ctx: OpaquePointer?) {
    guard let ctx else { return }
    Unmanaged<Context>.fromOpaque(UnsafeRawPointer(ctx)).release()
}

@_cdecl("noisear_context_device")
public func noisear_context_device(_ ctx: OpaquePointer?) -> UnsafePointer<CChar> {
    handle(ctx, as: Context.self)?.deviceID.c ?? staticC("")
}

@_cdecl("noisear_context_last_error")
public func noisear_context_last_error(_ ctx: OpaquePointer?) -> UnsafePointer<CChar> {
    guard let c = handle(ctx, as: Context.self) else { return staticC("noisear_context_last_error: the context is NULL") }
    return c.lastErrorForCaller
}

// MARK: - priors

@_cdecl("noisear_prior_load")
public func noisear_prior_load(_ ctx: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                               _ out: UnsafeMutablePointer<OpaquePointer?>?) -> noisear_status {
    loadPrior(ctx, path, nil, out, "noisear_prior_load")
}

@_cdecl("noisear_prior_load_default_params")
public func noisear_prior_load_default_params() -> noisear_prior_load_params {
    noisear_prior_load_params(heads: 0, svd_heads: 0)
}

@_cdecl("noisear_prior_load_ex")
public func noisear_prior_load_ex(_ ctx: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                  _ params: UnsafePointer<noisear_prior_load_params>?,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> noisear_status {
    loadPrior(ctx, path, params?.pointee, out, "noisear_prior_load_ex")
}

func loadPrior(_ ctx: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ params: noisear_prior_load_params?,
               _ out: UnsafeMutablePointer<OpaquePointer?>?, _ name: String) -> noisear_status {
    guard let c = handle(ctx, as: Context.self) else {
        return guarded { throw NoiseError.invalidArgument("\(name): the context is NULL") }
    }
    return guarded(c) {
        guard let out else { throw NoiseError.invalidArgument("\(name): out is NULL") }
        out.pointee = nil
        let p = try string(path, "\(name): path")
        let lp = params ?? noisear_prior_load_default_params()
        guard lp.heads >= 0, lp.svd_heads >= 0 else {
            throw NoiseError.invalidArgument("\(name): heads and svd_heads must be 0 (from the config) or positive")
        }
        let options = PriorLoadOptions(heads: lp.heads > 0 ? Int(lp.heads) : nil, svdHeads: lp.svd_heads > 0 ? Int(lp.svd_heads) : nil)
        let prior = try NoisePrior.load(URL(fileURLWithPath: p), device: c.device, options: options)
        out.pointee = retained(Prior(context: c, prior: prior))
    }
}

/// The C rng code as a source.
func gaussianSource(_ rng: noisear_rng, _ what: String) throws -> GaussianSource {
    switch rng {
    case NOISEAR_RNG_PHILOX: return .philox
    case NOISEAR_RNG_TORCH: return .torch
    default: throw NoiseError.invalidArgument("\(what) \(rng.rawValue): expected NOISEAR_RNG_PHILOX (0) or NOISEAR_RNG_TORCH (1)")
    }
}

@_cdecl("noisear_gaussian_noise")
public func noisear_gaussian_noise(_ rng: noisear_rng, _ seed: UInt64, _ batch: Int64, _ batchIndex: UnsafePointer<Int64>?,
                                   _ out: UnsafeMutablePointer<Float>?, _ outCount: Int) -> noisear_status {
    guarded {
        let source = try gaussianSource(rng, "rng")
        guard let out else { throw NoiseError.invalidArgument("noisear_gaussian_noise: out is NULL") }
        guard batch > 0, batch <= 1 << 20 else { throw NoiseError.shapeMismatch("batch \(batch) must be in 1 ... 2^20") }
        let b = Int(batch)
        guard outCount > 0, outCount % b == 0 else {
            throw NoiseError.shapeMismatch("out holds \(bufferCount(outCount)) floats, not a positive multiple of the batch \(batch)")
        }
        let per = outCount / b
        let indices = batchIndex.map { p in (0 ..< b).map { Int(p[$0]) } }
        if let indices, indices.contains(where: { $0 < 0 || $0 >= 1 << 20 }) {
            throw NoiseError.invalidArgument("batch_index entries must be in 0 ..< 2^20")
        }
        try MemoryBudget.check(MemoryBudget.floatBytes([outCount, (indices?.max() ?? 0) + 1 > b ? per : 0]),
                               on: Device.cpuDevice(), what: "noisear_gaussian_noise of \(bufferCount(outCount)) floats")
        let values: [Float]
        switch source {
        case .torch:
            values = try TorchRandom.comfyNoise(perImage: per, batch: b, seed: seed, batchIndex: indices)
        case .philox:
            values = (0 ..< b).flatMap { Philox.normal(count: per, seed: seed &+ UInt64(indices?[$0] ?? $0)) }
        }
        try store(values, out, capacity: outCount, "out")
    }
}

@_cdecl("noisear_prior_free")
public func noisear_prior_free(_ prior: OpaquePointer?) {
    guard let prior else { return }
    Unmanaged<Prior>.fromOpaque(UnsafeRawPointer(prior)).release()
}

@_cdecl("noisear_prior_last_error")
public func noisear_prior_last_error(_ prior: OpaquePointer?) -> UnsafePointer<CChar> {
    guard let p = handle(prior, as: Prior.self) else { return staticC("noisear_prior_last_error: the prior is NULL") }
    return p.context.lastErrorForCaller
}

@_cdecl("noisear_prior_get_kind")
public func noisear_prior_get_kind(_ prior: OpaquePointer?) -> noisear_prior_kind {
    guard let p = handle(prior, as: Prior.self) else { return noisear_prior_kind(rawValue: 0) }
    return p.prior.kind == .npnet ? NOISEAR_PRIOR_NPNET : NOISEAR_PRIOR_NOISEAR
}

@_cdecl("noisear_prior_latent_shape")
public func noisear_prior_latent_shape(_ prior: OpaquePointer?, _ shape: UnsafeMutablePointer<Int64>?) {
    guard let shape else { return }
    let s = handle(prior, as: Prior.self)?.prior.latentShape ?? [0, 0, 0]
    for i in 0..<3 { shape[i] = Int64(i < s.count ? s[i] : 0) }
}

@_cdecl("noisear_prior_embed_size")
public func noisear_prior_embed_size(_ prior: OpaquePointer?) -> Int64 {
    Int64(handle(prior, as: Prior.self)?.prior.embedSize ?? 0)
}

@_cdecl("noisear_sample_default_params")
public func noisear_sample_default_params() -> noisear_sample_params {
    noisear_sample_params(seed: 0, temperature: 0.5, strength: 1, eps: nil, uncached: false,
                          progress: nil, progress_user_data: nil, rng: NOISEAR_RNG_PHILOX)
}

/// A prior handle and its context, or the handle-less error.
func withPrior(_ prior: OpaquePointer?, _ name: String, _ body: (Prior) throws -> Void) -> noisear_status {
    guard let p = handle(prior, as: Prior.self) else {
        return guarded { throw NoiseError.invalidArgument("\(name): the prior is NULL") }
    }
    return guarded(p.context) { try body(p) }
}

/// Prompt embeddings [B, T, D] from a caller's buffer, checked against the prior.
func embeddings(_ p: Prior, _ data: UnsafePointer<Float>?, _ b: Int64, _ t: Int64, _ d: Int64) throws -> Tensor {
    let n = try elements([b, t, d], "prompt_embeds")
    try p.prior.checkEmbeddings(batch: Int(b), tokens: Int(t), dim: Int(d))
    let host = HostTensor(shape: [Int(b), Int(t), Int(d)], data: try floats(data, n, "prompt_embeds"))
    try host.requireFinite("prompt_embeds")
    return try Tensor(host.data, shape: host.shape, on: p.context.device)
}

/// Refuses a call whose estimated working memory exceeds the device's (NOISEAR_ERR_OOM),
/// before anything is allocated.
func checkMemory(_ p: Prior, batch: Int64, tokens: Int64, _ name: String) throws {
    guard batch > 0, tokens >= 0 else { return }  // the shape checks name these
    let bytes = p.prior.estimatedBytes(batch: Int(clamping: batch), tokens: Int(clamping: tokens))
    try MemoryBudget.check(bytes, on: p.context.device, what: "\(name) with batch \(batch) and \(tokens) tokens")
}

/// A latent-shaped caller buffer [B, C, H, W] as a tensor.
func latent(_ p: Prior, _ data: UnsafePointer<Float>?, count: Int, batch: Int64, _ what: String) throws -> Tensor {
    let (shape, n) = try latentShape(p, count: count, batch: batch, what)
    let host = HostTensor(shape: shape, data: try floats(data, n, what))
    try host.requireFinite(what)
    return try Tensor(host.data, shape: shape, on: p.context.device)
}

@_cdecl("noisear_prior_sample")
public func noisear_prior_sample(_ prior: OpaquePointer?, _ promptEmbeds: UnsafePointer<Float>?, _ batch: Int64,
                                 _ tokens: Int64, _ dim: Int64, _ params: UnsafePointer<noisear_sample_params>?,
                                 _ out: UnsafeMutablePointer<Float>?, _ outCount: Int) -> noisear_status {
    withPrior(prior, "noisear_prior_sample") { p in
        guard case .noiseAR(let net) = p.prior else {
            throw NoiseError.unsupported("noisear_prior_sample needs a NoiseAR prior; an NPNet maps noise with noisear_prior_golden")
        }
        let sp = params?.pointee ?? noisear_sample_default_params()
        let device = p.context.device
        try checkLatentOut(p, out, outCount, batch: batch, "out")
        try checkMemory(p, batch: batch, tokens: tokens, "noisear_prior_sample")
        let text = try embeddings(p, promptEmbeds, batch, tokens, dim)
        let eps = try sp.eps.map { try latent(p, $0, count: outCount, batch: batch, "eps") }
        let rng = try gaussianSource(sp.rng, "params.rng")
        if rng == .philox && eps == nil { try Seeds.check(sp.seed, count: Int(batch), option: "seed") }
        let noise = try device.noGrad {
            try NoisePriors.noiseAR(net, text: text, seed: sp.seed, temperature: sp.temperature, strength: sp.strength,
                                    eps: eps, cached: !sp.uncached, rng: gaussianSource(sp.rng, "params.rng")) { done, total in
                sp.progress.map { $0(Int32(done), Int32(total), sp.progress_user_data) } ?? true
            }
        }
        try store(noise.toArray(), out, capacity: outCount, "out")
    }
}

@_cdecl("noisear_prior_score")
public func noisear_prior_score(_ prior: OpaquePointer?, _ promptEmbeds: UnsafePointer<Float>?, _ batch: Int64,
                                _ tokens: Int64, _ dim: Int64, _ noise: UnsafePointer<Float>?, _ noiseCount: Int,
                                _ temperature: Float, _ mu: UnsafeMutablePointer<Float>?,
                                _ logvar: UnsafeMutablePointer<Float>?, _ logProb: UnsafeMutablePointer<Float>?) -> noisear_status {
    withPrior(prior, "noisear_prior_score") { p in
        guard case .noiseAR(let net) = p.prior else {
            throw NoiseError.unsupported("an NPNet has no likelihood; noisear_prior_score needs a NoiseAR prior")
        }
        guard temperature > 0 && temperature.isFinite else {
            throw NoiseError.invalidArgument("temperature must be a positive number, got \(temperature)")
        }
        guard logProb != nil else { throw NoiseError.invalidArgument("noisear_prior_score: log_prob is NULL") }
        _ = try latentShape(p, count: noiseCount, batch: batch, "noise")
        try checkMemory(p, batch: batch, tokens: tokens, "noisear_prior_score")
        let text = try embeddings(p, promptEmbeds, batch, tokens, dim)
        let x = try latent(p, noise, count: noiseCount, batch: batch, "noise")
        let (m, lv, lp) = try p.context.device.noGrad {
            let (m, lv) = try net.predict(noise: x, text: text)
            return (m, lv, try net.logProb(noise: x, text: text, temperature: temperature))
        }
        try store(m.toArray(), mu, capacity: noiseCount, "mu", optional: true)
        try store(lv.toArray(), logvar, capacity: noiseCount, "logvar", optional: true)
        try store(lp.toArray(), logProb, capacity: Int(batch), "log_prob")
    }
}

@_cdecl("noisear_prior_golden")
public func noisear_prior_golden(_ prior: OpaquePointer?, _ noise: UnsafePointer<Float>?, _ noiseCount: Int,
                                 _ promptEmbeds: UnsafePointer<Float>?, _ batch: Int64, _ tokens: Int64, _ dim: Int64,
                                 _ out: UnsafeMutablePointer<Float>?, _ outCount: Int) -> noisear_status {
    withPrior(prior, "noisear_prior_golden") { p in
        guard case .npnet(let net) = p.prior else {
            throw NoiseError.unsupported("noisear_prior_golden needs an NPNet; a NoiseAR prior samples with noisear_prior_sample")
        }
        try checkLatentOut(p, out, outCount, batch: batch, "out")
        try checkMemory(p, batch: batch, tokens: tokens, "noisear_prior_golden")
        let text = try embeddings(p, promptEmbeds, batch, tokens, dim)
        let x = try latent(p, noise, count: noiseCount, batch: batch, "noise")
        let golden = try p.context.device.noGrad { try net.golden(noise: x, promptEmbeds: text) }
        try store(golden.toArray(), out, capacity: outCount, "out")
    }
}

// MARK: - the shapes world

@_cdecl("noisear_shapes_default_params")
public func noisear_shapes_default_params() -> noisear_shapes_params {
    noisear_shapes_params(prompt: nil, seed: 0, batch: 1, steps: 30, cfg: 5, sampler: nil, prior: nil, prior_path: nil,
                          temperature: 0.5, strength: 1, model_path: nil, progress: nil, progress_user_data: nil,
                          rng: NOISEAR_RNG_PHILOX)
}

@_cdecl("noisear_shapes_sample")
public func noisear_shapes_sample(_ ctx: OpaquePointer?, _ params: UnsafePointer<noisear_shapes_params>?,
                                  _ rgb: UnsafeMutablePointer<UInt8>?, _ rgbBytes: Int,
                                  _ width: UnsafeMutablePointer<Int32>?, _ height: UnsafeMutablePointer<Int32>?) -> noisear_status {
    guard let c = handle(ctx, as: Context.self) else {
        return guarded { throw NoiseError.invalidArgument("noisear_shapes_sample: the context is NULL") }
    }
    return guarded(c) {
        guard let sp = params?.pointee else { throw NoiseError.invalidArgument("noisear_shapes_sample: params is NULL") }
        guard let rgb else { throw NoiseError.invalidArgument("noisear_shapes_sample: rgb is NULL") }
        let prompt = try string(sp.prompt, "params.prompt")
        let sampler = try SamplerKind.parse(sp.sampler.map { String(cString: $0) } ?? "dpmpp2m")
        let prior = try NoisePriorKind.parse(sp.prior.map { String(cString: $0) } ?? "gaussian", option: "params.prior")
        let request = ShapesSampleRequest(
            prompt: prompt, seed: sp.seed, batch: Int(sp.batch),
            settings: SamplingSettings(sampler: sampler, steps: Int(sp.steps), cfg: sp.cfg),
            prior: prior, priorPath: sp.prior_path.map { String(cString: $0) },
            temperature: sp.temperature, strength: sp.strength, rng: try gaussianSource(sp.rng, "params.rng"))
        try request.validate()
        let size = Scene.size
        let (need, o) = (request.batch * size * size).multipliedReportingOverflow(by: 3)
        guard !o, rgbBytes == need else {
            throw NoiseError.shapeMismatch("rgb holds \(rgbBytes) bytes; \(request.batch) images of \(size)x\(size)x3 need \(need)")
        }
        guard let url = sp.model_path.map({ URL(fileURLWithPath: String(cString: $0)) })
            ?? ShippedModels.locate(ShippedModels.diffusionFile) else {
            throw NoiseError.io("no model: set params.model_path or NOISEAR_MODEL (the shipped \(ShippedModels.diffusionFile) was not found)")
        }
        let model: TextToImageModel
        if let m = c.models[url.path] {
            model = m
        } else {
            model = try TextToImageModel.load(url, device: c.device)
            c.models[url.path] = model
        }
        let result = try ShapesSampling.sample(request, model: model, progress: { done, total in
            guard let cb = sp.progress else { return true }
            return cb(Int32(done), Int32(total), sp.progress_user_data)
        })
        var offset = 0
        for image in result.images {
            image.withUnsafeBufferPointer { src in
                if let base = src.baseAddress { (rgb + offset).update(from: base, count: src.count) }
            }
            offset += image.count
        }
        width?.pointee = Int32(size)
        height?.pointee = Int32(size)
    }
}

@_cdecl("noisear_shapes_reward")
public func noisear_shapes_reward(_ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32,
                                  _ prompt: UnsafePointer<CChar>?, _ score: UnsafeMutablePointer<Double>?) -> noisear_status {
    guarded {
        guard let rgb else { throw NoiseError.invalidArgument("noisear_shapes_reward: rgb is NULL") }
        guard let score else { throw NoiseError.invalidArgument("noisear_shapes_reward: score is NULL") }
        guard width > 0, height > 0, width <= 16384, height <= 16384 else {
            throw NoiseError.shapeMismatch("image \(width)x\(height): sizes must be in 1...16384")
        }
        let n = Int(width) * Int(height) * 3
        let text = try string(prompt, "noisear_shapes_reward: prompt")
        let result = try Reward.evaluate(image: Array(UnsafeBufferPointer(start: rgb, count: n)),
                                         width: Int(width), height: Int(height), prompt: text)
        score.pointee = result.score
    }
}
