import CVulkan
import Foundation

/// The Vulkan backend: the GLSL twins of the OpenCL kernels (`Kernels/vulkan/*.comp`, compiled
/// to SPIR-V by glslc at build time and embedded), launched with the same arguments as on
/// OpenCL (`KernelBackend`).
///
/// - Memory: tensors are 256-byte-aligned ranges of a few large device-local blocks
///   (`VulkanMemoryPool`); uploads and downloads go through host-visible staging chunks.
/// - Commands: recorded into one command buffer and submitted when the host needs a result
///   (download, `synchronize`) or a descriptor pool fills up. A pipeline barrier is recorded
///   only before a command whose buffer ranges overlap those of a command since the last one.
/// - Kernel parameters are specialization constants (ids in `specIDs`, the same names as
///   the OpenCL defines); the GPU parameter set is used with the environment's overrides.
/// - Pipelines are cached on disk beside the OpenCL programs (`NOISEAR_KERNEL_CACHE`), keyed by
///   the SPIR-V, the device and its driver, with the same integrity checks.
public final class VulkanBackend: KernelBackend {
    public let info: DeviceInfo
    public let params: KernelParams
    public let limits: KernelLimits
    let context: VulkanContext
    /// The device limits each launch and `supports` check (read once: the limits struct is large).
    let storageBufferRange: Int, pushConstantBytes: Int, maxGroupCount: [Int]
    let pool: VulkanMemoryPool
    let staging: VulkanStaging
    let environment: [String: String]
    private let disabled: Set<OpKind>
    private let diskCache: KernelDiskCache
    private let cacheKey: String
    private var pipelineCache: VkPipelineCache?
    private var pipelineCacheDirty = false
    private var modules: [String: VkShaderModule] = [:]
    private var setLayouts: [Int: (VkDescriptorSetLayout, VkPipelineLayout)] = [:]
    private var pipelines: [String: VkPipeline] = [:]
    private let commandPool: VkCommandPool
    private let commandBuffer: VkCommandBuffer
    private let fence: VkFence
    private let descriptorPool: VkDescriptorPool
    private var recording = false
    private var setsUsed = 0
    /// Buffer ranges (block id, start, end) touched since the last barrier.
    private var touched: [(Int, Int, Int)] = []
    private var scratch: [String: VulkanBuffer] = [:]
    private lazy var dummy: VulkanBuffer? = try? VulkanBuffer(count: 1, pool: pool)
    /// Dispatches recorded since the backend opened (for launch counts in benchmarks).
    public private(set) var dispatches = 0
    public var launches: Int { dispatches }
    /// Submissions to the queue since the backend opened.
    public private(set) var submissions = 0
    /// Device-memory allocations (blocks) tensors are sub-allocated from.
    public var memoryBlocks: Int { pool.blocks.count }
    /// The on-disk pipeline cache entry (nil when `NOISEAR_KERNEL_CACHE=off`).
    public var pipelineCacheURL: URL? { diskCache.url(cacheKey) }

    static let maxSets = 512
    static let maxBindings = 8
    static let pushBytes = 128

    /// Specialization constant ids of the kernel parameters (Kernels/vulkan/common.glsl).
    static let specIDs: [(String, UInt32)] = [
        ("GEMM_TSM", 3), ("GEMM_TSN", 4), ("GEMM_TSK", 5), ("GEMM_WPTM", 6), ("GEMM_WPTN", 7),
        ("ROW_WG", 8), ("ATT_QB", 9), ("ATT_KB", 10), ("ATT_WG", 11), ("ATT_LOCAL", 12),
        ("ATT_D", 13), ("ATT_DV", 14), ("ATT_VW", 15), ("SVD_WG", 16),
        ("CONV_TSM", 17), ("CONV_TSN", 18), ("CONV_TSK", 19), ("CONV_WPTM", 20), ("CONV_WPTN", 21),
    ]

    /// Opens Vulkan physical device number `index` (see `noisear-gpu devices`).
    public init(index: Int, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard !EmbeddedKernels.spirv.isEmpty else {
            throw NoiseError.device("this build has no Vulkan shaders (glslc was not found when it was built); rebuild with glslc installed")
        }
        let instance = try VulkanInstance.shared(environment: environment)
        guard !instance.physicalDevices.isEmpty else { throw NoiseError.device("no Vulkan device found") }
        guard index >= 0 && index < instance.physicalDevices.count else {
            throw NoiseError.device("no Vulkan device \(index): \(instance.physicalDevices.count) found (see `noisear-gpu devices`)")
        }
        info = instance.info(index)
        let ctx = try VulkanContext(instance: instance, index: index)
        context = ctx
        let l = ctx.limits
        storageBufferRange = Int(l.maxStorageBufferRange)
        pushConstantBytes = min(Self.pushBytes, Int(l.maxPushConstantsSize))
        maxGroupCount = VK.ints(l.maxComputeWorkGroupCount)
        limits = KernelLimits(maxWorkGroupSize: Int(l.maxComputeWorkGroupInvocations),
                              maxWorkItemSizes: VK.ints(l.maxComputeWorkGroupSize),
                              localMemoryBytes: Int(l.maxComputeSharedMemorySize), fp64: ctx.fp64)
        var p = try KernelParams.forDevice(.gpu, environment: environment)
        if environment["NOISEAR_KERNEL_PROFILE"] == "cpu" {
            // The CPU set's packed GEMM has no GLSL twin, nor its direct convolution's float16
            // form (one item per row of 64 pixels: loops llvmpipe would cut short); the GPU
            // set's values stand in for those left at the CPU set's, its other values apply.
            p.values["GEMM_VARIANT"] = 1
            for name in KernelParams.convNames where p.values[name] == KernelParams.cpuDefaults[name] {
                p.values[name] = KernelParams.gpuDefaults[name]
            }
        }
        try require(p["GEMM_VARIANT"] == 1,
                    "kernel parameter GEMM_VARIANT=\(p["GEMM_VARIANT"]): the Vulkan backend has only the tiled GEMM (1)")
        try p.validate(for: limits)
        params = p
        disabled = OpKind.disabled(environment: environment)
        self.environment = environment
        pool = VulkanMemoryPool(context: ctx)
        staging = VulkanStaging(context: ctx)
        diskCache = KernelDiskCache(environment: environment)
        let digest = sha256Hex(Data(EmbeddedKernels.spirv.keys.sorted().flatMap { k in
            Array(k.utf8) + Array((EmbeddedKernels.spirv[k] ?? "").utf8)
        }))
        let uuid = withUnsafeBytes(of: ctx.properties.pipelineCacheUUID) { $0.map { String(format: "%02x", $0) }.joined() }
        cacheKey = KernelDiskCache.key(source: "vulkan-pipelines|" + digest, options: uuid, device: info)

        let dev = ctx.device
        var poolInfo = VkCommandPoolCreateInfo()
        poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        poolInfo.queueFamilyIndex = ctx.queueFamily
        var cp: VkCommandPool?
        try VK.check(ctx.createCommandPool(dev, &poolInfo, nil, &cp), "vkCreateCommandPool")
        guard let cp else { throw NoiseError.device("vkCreateCommandPool returned nothing") }
        commandPool = cp
        var cbInfo = VkCommandBufferAllocateInfo()
        cbInfo.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
        cbInfo.commandPool = cp
        cbInfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
        cbInfo.commandBufferCount = 1
        var cb: VkCommandBuffer?
        try VK.check(ctx.allocateCommandBuffers(dev, &cbInfo, &cb), "vkAllocateCommandBuffers")
        guard let cb else { throw NoiseError.device("vkAllocateCommandBuffers returned nothing") }
        commandBuffer = cb
        var fenceInfo = VkFenceCreateInfo()
        fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
        var f: VkFence?
        try VK.check(ctx.createFence(dev, &fenceInfo, nil, &f), "vkCreateFence")
        guard let f else { throw NoiseError.device("vkCreateFence returned nothing") }
        fence = f
        var size = VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                        descriptorCount: UInt32(Self.maxSets * Self.maxBindings))
        var dp: VkDescriptorPool?
        let r = withUnsafePointer(to: &size) { sp -> VkResult in
            var dpInfo = VkDescriptorPoolCreateInfo()
            dpInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
            dpInfo.maxSets = UInt32(Self.maxSets)
            dpInfo.poolSizeCount = 1
            dpInfo.pPoolSizes = sp
            return ctx.createDescriptorPool(dev, &dpInfo, nil, &dp)
        }
        try VK.check(r, "vkCreateDescriptorPool")
        guard let dp else { throw NoiseError.device("vkCreateDescriptorPool returned nothing") }
        descriptorPool = dp
        try openPipelineCache()
    }

    deinit {
        try? flush()
        savePipelineCache()
        let dev = context.device
        for p in pipelines.values { context.destroyPipeline(dev, p, nil) }
        for (s, l) in setLayouts.values {
            context.destroyPipelineLayout(dev, l, nil)
            context.destroyDescriptorSetLayout(dev, s, nil)
        }
        for m in modules.values { context.destroyShaderModule(dev, m, nil) }
        if let pipelineCache { context.destroyPipelineCache(dev, pipelineCache, nil) }
        context.destroyDescriptorPool(dev, descriptorPool, nil)
        context.destroyFence(dev, fence, nil)
        context.destroyCommandPool(dev, commandPool, nil)
        scratch.removeAll()
        dummy = nil
    }

    /// Whether a family is enabled (`NOISEAR_DISABLE_OPS` turns families off).
    public func enables(_ kind: OpKind) -> Bool { !disabled.contains(kind) }

    /// Every call of an enabled family whose buffers each fit one storage-buffer binding
    /// (maxStorageBufferRange), within the kernels' own limits as on OpenCL (group norm takes
    /// gamma and beta together, fused attention head dims up to 256), with at most
    /// maxComputeWorkGroupCount[0] groups for the group-norm kernels (they have no count to
    /// stop spare groups of a folded launch), no batch-reduce GEMM, direct convolutions within
    /// `directConvolutionFits` (as on OpenCL) whose tiles of pixels and of channels stay within
    /// maxComputeWorkGroupCount[0] and [1], and, on a CPU Vulkan device, `withinLoopBudget`.
    public func supports(_ op: any PrimitiveOp) -> Bool {
        guard enables(op.kind) else { return false }
        for r in op.reads + op.writes {
            guard let b = r.buffer as? VulkanBuffer, b.byteSize <= storageBufferRange else { return false }
        }
        if info.kind == .cpu && !withinLoopBudget(op) { return false }
        let maxGroups = maxGroupCount[0]
        switch op {
        case let g as Op.GroupNorm: return (g.gamma == nil) == (g.beta == nil) && g.n * g.groups <= maxGroups
        case let g as Op.GroupNormBackward: return g.n * g.groups <= maxGroups
        case let a as Op.Attention: return a.desc.headDim <= 256 && a.desc.valueDim <= 256
        case let g as Op.Gemm: return !g.desc.reduceBatch || g.desc.batch0 * g.desc.batch1 == 1
        case let c as Op.Conv2d:
            guard directConvolutionFits(c) else { return false }
            let pixels = c.batch * c.geometry.outH * c.geometry.outW
            let tsn = max(params["CONV_TSN"], 1), tsm = convChannelTile(c.outChannels)
            return (pixels + tsn - 1) / tsn <= maxGroupCount[0] && (c.outChannels + tsm - 1) / tsm <= maxGroupCount[1]
        default: return true
        }
    }

    /// Mesa's llvmpipe (lavapipe), the Vulkan device of machines without a GPU, ends every
    /// loop of a shader invocation after 65,535 iterations in all, silently. On CPU Vulkan
    /// devices the calls whose per-item loops could come near that run elsewhere instead (the
    /// CPU backend, or for attention the GEMM + softmax + GEMM form): a budget of 32,768.
    func withinLoopBudget(_ op: any PrimitiveOp) -> Bool {
        let budget = 32768, rowWG = max(params["ROW_WG"], 1)
        switch op {
        case let g as Op.Gemm: return g.desc.k <= budget
        case let c as Op.Conv2d: return convLoopIterations(c) <= Double(budget)
        case let s as Op.Softmax: return 3 * s.cols <= budget * rowWG
        case let s as Op.SoftmaxBackward: return 3 * s.cols <= budget * rowWG
        case let l as Op.LayerNorm: return 3 * l.cols <= budget * rowWG
        case let l as Op.LayerNormBackward: return 3 * l.cols <= budget * rowWG && l.rows <= budget
        case let g as Op.GroupNorm: return 3 * g.spatial * (g.channels / max(g.groups, 1)) <= budget * rowWG
        case let g as Op.GroupNormBackward:
            return 3 * g.spatial * (g.channels / max(g.groups, 1)) <= budget * rowWG && g.n * g.spatial <= budget
        case let a as Op.Attention:
            return a.desc.tk * max(params["ATT_QB"], 1) * (a.desc.headDim + a.desc.valueDim) <= budget
        case let r as Op.Reduce:
            return r.reduce <= budget || (r.outer == 1 && r.inner < 4096 && r.reduce / 1024 <= budget)
        case let g as Op.GatherBackward: return g.list.buffer.count - g.list.offset <= budget  // occurrences of one row
        case let s as Op.SVD: return s.n <= (svdWorkGroup >= 64 ? 64 : 16)
        default: return true
        }
    }

    /// An upper bound of the loop iterations of one conv2d_direct invocation, every loop
    /// counted as if none were unrolled (llvmpipe unrolls only some): per slice of CONV_TSK
    /// taps, the item's share of the weight, input and tap loads and its register block's
    /// loops; plus the pixel table, the accumulators' set-up and the stores.
    func convLoopIterations(_ c: Op.Conv2d) -> Double {
        let tsm = Double(convChannelTile(c.outChannels)), tsn = Double(max(params["CONV_TSN"], 1))
        let tsk = Double(max(params["CONV_TSK"], 1))
        let wptm = Double(max(params["CONV_WPTM"], 1)), wptn = Double(max(params["CONV_WPTN"], 1))
        let items = max((tsn / wptn).rounded(.down), 1) * max((tsm / wptm).rounded(.down), 1)
        let k = Double(c.geometry.channels) * Double(c.geometry.kernelH) * Double(c.geometry.kernelW)
        let perStep = (tsk * tsm / items).rounded(.up) + (tsk * tsn / items).rounded(.up) + (tsk / items).rounded(.up)
            + 1 + tsk * (1 + wptn + wptm * (1 + wptn))
        return (k / tsk).rounded(.up) * perStep + (tsn / items).rounded(.up) + wptm * wptn + wptm * (1 + wptn)
    }

    // MARK: memory

    public func allocate(_ count: Int) throws -> any DeviceBuffer {
        try require(count >= 0, "negative allocation \(count)")
        return try VulkanBuffer(count: count, pool: pool)
    }

    func vbuf(_ b: any DeviceBuffer) throws -> VulkanBuffer {
        guard let v = b as? VulkanBuffer else {
            throw NoiseError.device("a buffer of another backend was passed to \(info.id)")
        }
        return v
    }

    public func upload(_ src: UnsafeBufferPointer<Float>, to dst: BufRef) throws {
        guard let base = src.baseAddress, src.count > 0 else { return }
        try checkRange(dst, src.count)
        let v = try vbuf(dst.buffer)
        let bytes = src.count * 4
        if staging.bytesInUse + bytes > 256 << 20 { try flush() }
        let (sbuf, soff, ptr) = try staging.allocate(bytes)
        ptr.copyMemory(from: base, byteCount: bytes)
        let dstOffset = v.byteOffset + dst.offset * 4
        try begin()
        order([(v.block.id, dstOffset, dstOffset + bytes)])
        var region = VkBufferCopy(srcOffset: VkDeviceSize(soff), dstOffset: VkDeviceSize(dstOffset), size: VkDeviceSize(bytes))
        context.cmdCopyBuffer(commandBuffer, sbuf, v.block.buffer, 1, &region)
    }

    public func download(_ src: BufRef, into dst: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = dst.baseAddress, dst.count > 0 else { return }
        try checkRange(src, dst.count)
        let v = try vbuf(src.buffer)
        let bytes = dst.count * 4
        let (sbuf, soff, ptr) = try staging.allocate(bytes)
        let srcOffset = v.byteOffset + src.offset * 4
        try begin()
        order([(v.block.id, srcOffset, srcOffset + bytes)])
        var region = VkBufferCopy(srcOffset: VkDeviceSize(srcOffset), dstOffset: VkDeviceSize(soff), size: VkDeviceSize(bytes))
        context.cmdCopyBuffer(commandBuffer, v.block.buffer, sbuf, 1, &region)
        try flush { UnsafeMutableRawPointer(base).copyMemory(from: ptr, byteCount: bytes) }
    }

    public func synchronize() throws { try flush() }

    public func scratchBuffer(_ name: String, _ count: Int) throws -> any DeviceBuffer {
        if let b = scratch[name], b.count >= count { return b }
        let b = try VulkanBuffer(count: count, pool: pool)
        scratch[name] = b
        return b
    }

    /// Vulkan reports no compute-unit count: the host's cores on a CPU device (lavapipe), else
    /// 64 work groups, enough to occupy the multiprocessors of most GPUs.
    public var parallelism: Int { info.kind == .cpu ? ProcessInfo.processInfo.activeProcessorCount : 64 }

    public func dummyBuffer() throws -> any DeviceBuffer {
        guard let d = dummy else { throw NoiseError.device("dummy buffer allocation failed") }
        return d
    }

    // MARK: command recording

    private func begin() throws {
        if recording { return }
        var info = VkCommandBufferBeginInfo()
        info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        info.flags = UInt32(VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue)
        try VK.check(context.beginCommandBuffer(commandBuffer, &info), "vkBeginCommandBuffer")
        recording = true
        touched.removeAll(keepingCapacity: true)
    }

    /// Records a barrier when any of `ranges` overlaps a range touched since the last one
    /// (read-after-write, write-after-read and write-after-write all need it; reads of the same
    /// weights in a row are the price of not knowing which operands a kernel writes).
    private func order(_ ranges: [(Int, Int, Int)]) {
        let clash = ranges.contains { r in
            touched.contains { t in t.0 == r.0 && t.1 < r.2 && r.1 < t.2 }
        }
        if clash {
            var barrier = VkMemoryBarrier()
            barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
            barrier.srcAccessMask = UInt32(VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue)
            barrier.dstAccessMask = UInt32(VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
                | VK_ACCESS_TRANSFER_READ_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue)
            let stages = UInt32(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue)
            context.cmdPipelineBarrier(commandBuffer, stages, stages, 0, 1, &barrier, 0, nil, 0, nil)
            touched.removeAll(keepingCapacity: true)
        }
        touched.append(contentsOf: ranges)
    }

    /// Submits what was recorded, waits, runs `then` (reading staging memory) and resets the
    /// per-submission pools.
    private func flush(then: () -> Void = {}) throws {
        guard recording else { then(); return }
        recording = false
        try VK.check(context.endCommandBuffer(commandBuffer), "vkEndCommandBuffer")
        var cb: VkCommandBuffer? = commandBuffer
        let r = withUnsafePointer(to: &cb) { cbp -> VkResult in
            var submit = VkSubmitInfo()
            submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
            submit.commandBufferCount = 1
            submit.pCommandBuffers = cbp
            return context.queueSubmit(context.queue, 1, &submit, fence)
        }
        try VK.check(r, "vkQueueSubmit")
        submissions += 1
        var f: VkFence? = fence
        try VK.check(context.waitForFences(context.device, 1, &f, 1, UInt64.max), "vkWaitForFences")
        try VK.check(context.resetFences(context.device, 1, &f), "vkResetFences")
        then()
        try VK.check(context.resetCommandPool(context.device, commandPool, 0), "vkResetCommandPool")
        try VK.check(context.resetDescriptorPool(context.device, descriptorPool, 0), "vkResetDescriptorPool")
        setsUsed = 0
        staging.reset()
        pool.trim()
        savePipelineCache()  // (only when pipelines were created since the last save)
    }

    // MARK: pipelines

    private func openPipelineCache() throws {
        let initial = diskCache.load(cacheKey) ?? Data()
        var cache: VkPipelineCache?
        let r = initial.withUnsafeBytes { raw -> VkResult in
            var info = VkPipelineCacheCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
            info.initialDataSize = raw.count
            info.pInitialData = raw.count > 0 ? raw.baseAddress : nil
            return context.createPipelineCache(context.device, &info, nil, &cache)
        }
        if r != VK_SUCCESS && !initial.isEmpty {
            // A stale entry the driver refuses: start empty (it is rewritten on save).
            var info = VkPipelineCacheCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
            try VK.check(context.createPipelineCache(context.device, &info, nil, &cache), "vkCreatePipelineCache")
        } else {
            try VK.check(r, "vkCreatePipelineCache")
        }
        pipelineCache = cache
    }

    private func savePipelineCache() {
        guard pipelineCacheDirty, let pipelineCache else { return }
        var size = 0
        guard context.getPipelineCacheData(context.device, pipelineCache, &size, nil) == VK_SUCCESS, size > 0 else { return }
        var data = Data(count: size)
        let ok = data.withUnsafeMutableBytes { raw in
            context.getPipelineCacheData(context.device, pipelineCache, &size, raw.baseAddress) == VK_SUCCESS
        }
        if ok {
            diskCache.store(cacheKey, data.prefix(size))
            pipelineCacheDirty = false
        }
    }

    /// SPIR-V of kernel `name` (its fp64 variant where the device has doubles).
    private func module(_ name: String) throws -> VkShaderModule {
        let variant = context.fp64 && EmbeddedKernels.spirv[name + ".fp64"] != nil ? name + ".fp64" : name
        if let m = modules[variant] { return m }
        guard let b64 = EmbeddedKernels.spirv[variant], let code = Data(base64Encoded: b64), code.count % 4 == 0 else {
            throw NoiseError.device("no Vulkan shader for kernel \(name)")
        }
        var m: VkShaderModule?
        let r = code.withUnsafeBytes { raw -> VkResult in
            var info = VkShaderModuleCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
            info.codeSize = raw.count
            info.pCode = raw.bindMemory(to: UInt32.self).baseAddress
            return context.createShaderModule(context.device, &info, nil, &m)
        }
        try VK.check(r, "vkCreateShaderModule(\(variant))")
        guard let m else { throw NoiseError.device("vkCreateShaderModule returned nothing") }
        modules[variant] = m
        return m
    }

    private func layouts(_ bindings: Int) throws -> (VkDescriptorSetLayout, VkPipelineLayout) {
        if let l = setLayouts[bindings] { return l }
        var entries = (0..<bindings).map { i -> VkDescriptorSetLayoutBinding in
            var b = VkDescriptorSetLayoutBinding()
            b.binding = UInt32(i)
            b.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            b.descriptorCount = 1
            b.stageFlags = UInt32(VK_SHADER_STAGE_COMPUTE_BIT.rawValue)
            return b
        }
        var setLayout: VkDescriptorSetLayout?
        let r = entries.withUnsafeMutableBufferPointer { ep -> VkResult in
            var info = VkDescriptorSetLayoutCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
            info.bindingCount = UInt32(bindings)
            info.pBindings = UnsafePointer(ep.baseAddress)
            return context.createDescriptorSetLayout(context.device, &info, nil, &setLayout)
        }
        try VK.check(r, "vkCreateDescriptorSetLayout")
        guard let setLayout else { throw NoiseError.device("vkCreateDescriptorSetLayout returned nothing") }
        var range = VkPushConstantRange(stageFlags: UInt32(VK_SHADER_STAGE_COMPUTE_BIT.rawValue), offset: 0,
                                        size: UInt32(pushConstantBytes))
        var sl: VkDescriptorSetLayout? = setLayout
        var pipelineLayout: VkPipelineLayout?
        let r2 = withUnsafePointer(to: &range) { rp in
            withUnsafePointer(to: &sl) { slp -> VkResult in
                var info = VkPipelineLayoutCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
                info.setLayoutCount = 1
                info.pSetLayouts = slp
                info.pushConstantRangeCount = 1
                info.pPushConstantRanges = rp
                return context.createPipelineLayout(context.device, &info, nil, &pipelineLayout)
            }
        }
        guard r2 == VK_SUCCESS, let pipelineLayout else {
            context.destroyDescriptorSetLayout(context.device, setLayout, nil)
            throw NoiseError.device("Vulkan vkCreatePipelineLayout failed: \(VK.name(r2))")
        }
        setLayouts[bindings] = (setLayout, pipelineLayout)
        return (setLayout, pipelineLayout)
    }

    private func pipeline(_ name: String, bindings: Int, spec: [UInt32]) throws -> VkPipeline {
        let key = name + "|" + String(bindings) + "|" + spec.map(String.init).joined(separator: ",")
        if let p = pipelines[key] { return p }
        let m = try module(name)
        let (_, layout) = try layouts(bindings)
        var entries = (0..<spec.count).map { i in
            VkSpecializationMapEntry(constantID: UInt32(i), offset: UInt32(4 * i), size: 4)
        }
        var values = spec
        var pipe: VkPipeline?
        let entryName = strdup("main")
        defer { free(entryName) }
        let r = entries.withUnsafeMutableBufferPointer { ep in
            values.withUnsafeMutableBytes { vp -> VkResult in
                var si = VkSpecializationInfo()
                si.mapEntryCount = UInt32(ep.count)
                si.pMapEntries = UnsafePointer(ep.baseAddress)
                si.dataSize = vp.count
                si.pData = UnsafeRawPointer(vp.baseAddress)
                return withUnsafePointer(to: &si) { sip in
                    var stage = VkPipelineShaderStageCreateInfo()
                    stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
                    stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
                    stage.module = m
                    stage.pName = UnsafePointer(entryName)
                    stage.pSpecializationInfo = sip
                    var info = VkComputePipelineCreateInfo()
                    info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
                    info.stage = stage
                    info.layout = layout
                    return context.createComputePipelines(context.device, pipelineCache, 1, &info, nil, &pipe)
                }
            }
        }
        try VK.check(r, "vkCreateComputePipelines(\(name))")
        guard let pipe else { throw NoiseError.device("vkCreateComputePipelines returned nothing") }
        pipelines[key] = pipe
        pipelineCacheDirty = true
        return pipe
    }

    // MARK: launches

    public func launchKernel(_ file: String, _ name: String, extra: [String: Int], global: [Int],
                             local: [Int]?, _ args: [KArg]) throws {
        if global.contains(where: { $0 == 0 }) { return }
        try require(global.count >= 1 && global.count <= 3 && global.allSatisfy { $0 > 0 },
                    "kernel \(name): global size \(global)")
        var bufs: [VulkanBuffer] = []
        var words: [UInt32] = []
        for a in args {
            switch a {
            case .buf(let b): bufs.append(try vbuf(b))
            case .i32(let x): words.append(UInt32(bitPattern: Int32(truncatingIfNeeded: x)))
            case .u32(let x): words.append(x)
            case .f32(let x): words.append(x.bitPattern)
            case .i8(let xs):
                for j in 0..<8 { words.append(UInt32(bitPattern: Int32(truncatingIfNeeded: j < xs.count ? xs[j] : 0))) }
            }
        }
        try require(bufs.count <= Self.maxBindings, "kernel \(name): \(bufs.count) buffers")
        try require(words.count * 4 <= pushConstantBytes,
                    "kernel \(name): \(words.count * 4) bytes of push constants")
        // Work-group size: the host's, else 64 along x.
        var lsize = [1, 1, 1]
        if let local {
            for (i, v) in local.prefix(3).enumerated() { lsize[i] = max(v, 1) }
        } else {
            lsize[0] = min(64, limits.maxLocal(0))
        }
        try require(lsize[0] * lsize[1] * lsize[2] <= limits.maxWorkGroupSize
                        && (0..<3).allSatisfy { lsize[$0] <= limits.maxLocal($0) },
                    "kernel \(name): work-group size \(lsize) above the device's limits")
        let maxCount = maxGroupCount
        var groups = [1, 1, 1]
        for i in 0..<global.count { groups[i] = (global[i] + lsize[i] - 1) / lsize[i] }
        if global.count == 1 && groups[0] > maxCount[0] {
            // Fold a long 1-D launch over x and y (the shaders index through gid0()).
            let total = groups[0]
            groups[0] = maxCount[0]
            groups[1] = (total + maxCount[0] - 1) / maxCount[0]
        }
        try require((0..<3).allSatisfy { groups[$0] <= maxCount[$0] },
                    "kernel \(name): \(groups) work groups above the device's limit \(maxCount)")
        var spec: [UInt32] = lsize.map { UInt32($0) }
        let all = params.values.merging(extra) { _, new in new }
        var byID = [UInt32](repeating: 0, count: Int(Self.specIDs.map(\.1).max() ?? 2) + 1)
        for (n, id) in Self.specIDs { byID[Int(id)] = UInt32(bitPattern: Int32(truncatingIfNeeded: all[n] ?? params[n])) }
        spec += byID[3...]
        let pipe = try pipeline(name, bindings: bufs.count, spec: spec)
        let (setLayout, pipelineLayout) = try layouts(bufs.count)

        if setsUsed >= Self.maxSets { try flush() }
        try begin()
        var set: VkDescriptorSet?
        var sl: VkDescriptorSetLayout? = setLayout
        let ar = withUnsafePointer(to: &sl) { slp -> VkResult in
            var info = VkDescriptorSetAllocateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
            info.descriptorPool = descriptorPool
            info.descriptorSetCount = 1
            info.pSetLayouts = slp
            return context.allocateDescriptorSets(context.device, &info, &set)
        }
        try VK.check(ar, "vkAllocateDescriptorSets")
        setsUsed += 1
        if !bufs.isEmpty {
            var infos = bufs.map { b in
                VkDescriptorBufferInfo(buffer: b.block.buffer, offset: VkDeviceSize(b.byteOffset), range: VkDeviceSize(b.byteSize))
            }
            infos.withUnsafeMutableBufferPointer { ip in
                var writes = (0..<bufs.count).map { i -> VkWriteDescriptorSet in
                    var w = VkWriteDescriptorSet()
                    w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                    w.dstSet = set
                    w.dstBinding = UInt32(i)
                    w.descriptorCount = 1
                    w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                    w.pBufferInfo = UnsafePointer(ip.baseAddress! + i)
                    return w
                }
                context.updateDescriptorSets(context.device, UInt32(writes.count), &writes, 0, nil)
            }
        }
        order(bufs.map { ($0.block.id, $0.byteOffset, $0.byteOffset + $0.byteSize) })
        context.cmdBindPipeline(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, pipe)
        context.cmdBindDescriptorSets(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, pipelineLayout, 0, 1, &set, 0, nil)
        if !words.isEmpty {
            words.withUnsafeBytes { raw in
                context.cmdPushConstants(commandBuffer, pipelineLayout, UInt32(VK_SHADER_STAGE_COMPUTE_BIT.rawValue), 0,
                                         UInt32(raw.count), raw.baseAddress)
            }
        }
        context.cmdDispatch(commandBuffer, UInt32(groups[0]), UInt32(groups[1]), UInt32(groups[2]))
        dispatches += 1
    }
}
