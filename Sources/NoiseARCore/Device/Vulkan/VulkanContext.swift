import CVulkan
import Foundation

/// A logical Vulkan device with its compute queue and the device-level functions the backend
/// uses. Destroyed last: memory blocks, staging chunks and the backend hold it.
final class VulkanContext {
    let instance: VulkanInstance
    let physical: VkPhysicalDevice
    let device: VkDevice
    let queue: VkQueue
    let queueFamily: UInt32
    let properties: VkPhysicalDeviceProperties
    let memory: VkPhysicalDeviceMemoryProperties
    let fp64: Bool

    let destroyDevice: PFN_vkDestroyDevice
    let deviceWaitIdle: PFN_vkDeviceWaitIdle
    let createBuffer: PFN_vkCreateBuffer
    let destroyBuffer: PFN_vkDestroyBuffer
    let getBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements
    let allocateMemory: PFN_vkAllocateMemory
    let freeMemory: PFN_vkFreeMemory
    let bindBufferMemory: PFN_vkBindBufferMemory
    let mapMemory: PFN_vkMapMemory
    let unmapMemory: PFN_vkUnmapMemory
    let createShaderModule: PFN_vkCreateShaderModule
    let destroyShaderModule: PFN_vkDestroyShaderModule
    let createDescriptorSetLayout: PFN_vkCreateDescriptorSetLayout
    let destroyDescriptorSetLayout: PFN_vkDestroyDescriptorSetLayout
    let createPipelineLayout: PFN_vkCreatePipelineLayout
    let destroyPipelineLayout: PFN_vkDestroyPipelineLayout
    let createComputePipelines: PFN_vkCreateComputePipelines
    let destroyPipeline: PFN_vkDestroyPipeline
    let createPipelineCache: PFN_vkCreatePipelineCache
    let getPipelineCacheData: PFN_vkGetPipelineCacheData
    let destroyPipelineCache: PFN_vkDestroyPipelineCache
    let createDescriptorPool: PFN_vkCreateDescriptorPool
    let destroyDescriptorPool: PFN_vkDestroyDescriptorPool
    let resetDescriptorPool: PFN_vkResetDescriptorPool
    let allocateDescriptorSets: PFN_vkAllocateDescriptorSets
    let updateDescriptorSets: PFN_vkUpdateDescriptorSets
    let createCommandPool: PFN_vkCreateCommandPool
    let destroyCommandPool: PFN_vkDestroyCommandPool
    let resetCommandPool: PFN_vkResetCommandPool
    let allocateCommandBuffers: PFN_vkAllocateCommandBuffers
    let beginCommandBuffer: PFN_vkBeginCommandBuffer
    let endCommandBuffer: PFN_vkEndCommandBuffer
    let cmdBindPipeline: PFN_vkCmdBindPipeline
    let cmdBindDescriptorSets: PFN_vkCmdBindDescriptorSets
    let cmdPushConstants: PFN_vkCmdPushConstants
    let cmdDispatch: PFN_vkCmdDispatch
    let cmdPipelineBarrier: PFN_vkCmdPipelineBarrier
    let cmdCopyBuffer: PFN_vkCmdCopyBuffer
    let queueSubmit: PFN_vkQueueSubmit
    let createFence: PFN_vkCreateFence
    let destroyFence: PFN_vkDestroyFence
    let waitForFences: PFN_vkWaitForFences
    let resetFences: PFN_vkResetFences

    init(instance: VulkanInstance, index: Int) throws {
        self.instance = instance
        let pd = instance.physicalDevices[index]
        physical = pd
        properties = instance.properties(pd)
        memory = instance.memoryProperties(pd)
        guard let family = instance.computeQueueFamily(pd) else {
            throw NoiseError.device("Vulkan device \(index) has no compute queue")
        }
        queueFamily = family
        let available = instance.features(pd)
        fp64 = available.shaderFloat64 != 0
        var enabled = VkPhysicalDeviceFeatures()
        enabled.shaderFloat64 = fp64 ? 1 : 0
        var priority: Float = 1
        var dev: VkDevice?
        let result = withUnsafePointer(to: &priority) { prio -> VkResult in
            var q = VkDeviceQueueCreateInfo()
            q.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
            q.queueFamilyIndex = family
            q.queueCount = 1
            q.pQueuePriorities = prio
            return withUnsafePointer(to: &q) { qp in
                withUnsafePointer(to: &enabled) { fp in
                    var info = VkDeviceCreateInfo()
                    info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                    info.queueCreateInfoCount = 1
                    info.pQueueCreateInfos = qp
                    info.pEnabledFeatures = fp
                    return instance.createDevice(pd, &info, nil, &dev)
                }
            }
        }
        try VK.check(result, "vkCreateDevice")
        guard let dev else { throw NoiseError.device("vkCreateDevice returned no device") }
        device = dev
        let gdpa = instance.getDeviceProcAddr
        func load<T>(_ name: String) throws -> T { try VK.function(name, from: "device") { gdpa(dev, $0) } }
        destroyDevice = try load("vkDestroyDevice")
        deviceWaitIdle = try load("vkDeviceWaitIdle")
        createBuffer = try load("vkCreateBuffer")
        destroyBuffer = try load("vkDestroyBuffer")
        getBufferMemoryRequirements = try load("vkGetBufferMemoryRequirements")
        allocateMemory = try load("vkAllocateMemory")
        freeMemory = try load("vkFreeMemory")
        bindBufferMemory = try load("vkBindBufferMemory")
        mapMemory = try load("vkMapMemory")
        unmapMemory = try load("vkUnmapMemory")
        createShaderModule = try load("vkCreateShaderModule")
        destroyShaderModule = try load("vkDestroyShaderModule")
        createDescriptorSetLayout = try load("vkCreateDescriptorSetLayout")
        destroyDescriptorSetLayout = try load("vkDestroyDescriptorSetLayout")
        createPipelineLayout = try load("vkCreatePipelineLayout")
        destroyPipelineLayout = try load("vkDestroyPipelineLayout")
        createComputePipelines = try load("vkCreateComputePipelines")
        destroyPipeline = try load("vkDestroyPipeline")
        createPipelineCache = try load("vkCreatePipelineCache")
        getPipelineCacheData = try load("vkGetPipelineCacheData")
        destroyPipelineCache = try load("vkDestroyPipelineCache")
        createDescriptorPool = try load("vkCreateDescriptorPool")
        destroyDescriptorPool = try load("vkDestroyDescriptorPool")
        resetDescriptorPool = try load("vkResetDescriptorPool")
        allocateDescriptorSets = try load("vkAllocateDescriptorSets")
        updateDescriptorSets = try load("vkUpdateDescriptorSets")
        createCommandPool = try load("vkCreateCommandPool")
        destroyCommandPool = try load("vkDestroyCommandPool")
        resetCommandPool = try load("vkResetCommandPool")
        allocateCommandBuffers = try load("vkAllocateCommandBuffers")
        beginCommandBuffer = try load("vkBeginCommandBuffer")
        endCommandBuffer = try load("vkEndCommandBuffer")
        cmdBindPipeline = try load("vkCmdBindPipeline")
        cmdBindDescriptorSets = try load("vkCmdBindDescriptorSets")
        cmdPushConstants = try load("vkCmdPushConstants")
        cmdDispatch = try load("vkCmdDispatch")
        cmdPipelineBarrier = try load("vkCmdPipelineBarrier")
        cmdCopyBuffer = try load("vkCmdCopyBuffer")
        queueSubmit = try load("vkQueueSubmit")
        createFence = try load("vkCreateFence")
        destroyFence = try load("vkDestroyFence")
        waitForFences = try load("vkWaitForFences")
        resetFences = try load("vkResetFences")
        let getQueue: PFN_vkGetDeviceQueue = try load("vkGetDeviceQueue")
        var q: VkQueue?
        getQueue(dev, family, 0, &q)
        guard let q else {
            destroyDevice(dev, nil)
            throw NoiseError.device("vkGetDeviceQueue returned no queue")
        }
        queue = q
    }

    deinit {
        _ = deviceWaitIdle(device)
        destroyDevice(device, nil)
    }

    var limits: VkPhysicalDeviceLimits { properties.limits }

    /// A memory type allowed by `bits` with all of `flags`, preferring `preferred` too.
    func memoryType(bits: UInt32, required: UInt32, preferred: UInt32) -> UInt32? {
        let types = withUnsafeBytes(of: memory.memoryTypes) { raw in
            Array(raw.bindMemory(to: VkMemoryType.self).prefix(Int(memory.memoryTypeCount)))
        }
        var fallback: UInt32?
        for (i, t) in types.enumerated() where bits & (1 << UInt32(i)) != 0 {
            guard t.propertyFlags & required == required else { continue }
            if t.propertyFlags & preferred == preferred { return UInt32(i) }
            if fallback == nil { fallback = UInt32(i) }
        }
        return fallback
    }

    /// A buffer with its own memory (`hostVisible`: mapped, coherent).
    func makeBuffer(bytes: Int, hostVisible: Bool) throws -> (VkBuffer, VkDeviceMemory, UnsafeMutableRawPointer?) {
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(bytes)
        info.usage = UInt32(VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
            | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue)
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        try VK.check(createBuffer(device, &info, nil, &buffer), "vkCreateBuffer(\(bytes) bytes)")
        guard let buffer else { throw NoiseError.device("vkCreateBuffer returned no buffer") }
        var req = VkMemoryRequirements()
        getBufferMemoryRequirements(device, buffer, &req)
        let hostFlags = UInt32(VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue)
        let localFlag = UInt32(VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue)
        let type = hostVisible
            ? memoryType(bits: req.memoryTypeBits, required: hostFlags,
                         preferred: hostFlags | UInt32(VK_MEMORY_PROPERTY_HOST_CACHED_BIT.rawValue))
            : memoryType(bits: req.memoryTypeBits, required: 0, preferred: localFlag)
        guard let type else {
            destroyBuffer(device, buffer, nil)
            throw NoiseError.device("Vulkan device has no suitable memory type for a \(hostVisible ? "staging" : "device") buffer")
        }
        var alloc = VkMemoryAllocateInfo()
        alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        alloc.allocationSize = req.size
        alloc.memoryTypeIndex = type
        var mem: VkDeviceMemory?
        let r = allocateMemory(device, &alloc, nil, &mem)
        guard r == VK_SUCCESS, let mem else {
            destroyBuffer(device, buffer, nil)
            throw NoiseError.device("Vulkan vkAllocateMemory(\(bytes) bytes) failed: \(VK.name(r))")
        }
        do {
            try VK.check(bindBufferMemory(device, buffer, mem, 0), "vkBindBufferMemory")
            var mapped: UnsafeMutableRawPointer?
            if hostVisible {
                try VK.check(mapMemory(device, mem, 0, VkDeviceSize(VK_WHOLE_SIZE), 0, &mapped), "vkMapMemory")
            }
            return (buffer, mem, mapped)
        } catch {
            destroyBuffer(device, buffer, nil)
            freeMemory(device, mem, nil)
            throw error
        }
    }

    func release(buffer: VkBuffer, memory mem: VkDeviceMemory) {
        destroyBuffer(device, buffer, nil)
        freeMemory(device, mem, nil)
    }
}

/// One device-memory allocation with a buffer over all of it, sub-allocated first-fit.
final class VulkanBlock {
    let id: Int
    let buffer: VkBuffer
    let memory: VkDeviceMemory
    let size: Int
    /// Free ranges (offset, size), sorted by offset, coalesced.
    var free: [(offset: Int, size: Int)]

    init(id: Int, buffer: VkBuffer, memory: VkDeviceMemory, size: Int) {
        self.id = id; self.buffer = buffer; self.memory = memory; self.size = size
        free = [(0, size)]
    }

    func take(_ bytes: Int) -> Int? {
        guard let i = free.firstIndex(where: { $0.size >= bytes }) else { return nil }
        let r = free[i]
        if r.size == bytes { free.remove(at: i) } else { free[i] = (r.offset + bytes, r.size - bytes) }
        return r.offset
    }

    func give(_ offset: Int, _ bytes: Int) {
        var i = 0
        while i < free.count && free[i].offset < offset { i += 1 }
        free.insert((offset, bytes), at: i)
        if i + 1 < free.count && free[i].offset + free[i].size == free[i + 1].offset {
            free[i].size += free[i + 1].size
            free.remove(at: i + 1)
        }
        if i > 0 && free[i - 1].offset + free[i - 1].size == free[i].offset {
            free[i - 1].size += free[i].size
            free.remove(at: i)
        }
    }

    var isEmpty: Bool { free.count == 1 && free[0].size == size }
}

/// Device memory for tensors: a few large blocks (drivers cap the number of allocations),
/// each sub-allocated in 256-byte-aligned ranges. A freed range can be reused at once: the
/// backend orders every command after earlier commands that touch an overlapping range.
final class VulkanMemoryPool {
    static let blockBytes = 64 << 20
    static let alignment = 256
    let context: VulkanContext
    private(set) var blocks: [VulkanBlock] = []
    private var nextID = 0
    private let lock = NSLock()

    init(context: VulkanContext) { self.context = context }

    deinit {
        for b in blocks { context.release(buffer: b.buffer, memory: b.memory) }
    }

    func allocate(bytes: Int) throws -> (VulkanBlock, Int, Int) {
        let (padded, overflow) = max(bytes, 4).addingReportingOverflow(Self.alignment - 1)
        try require(!overflow, "Vulkan allocation of \(bytes) bytes")
        let size = padded / Self.alignment * Self.alignment
        lock.lock()
        defer { lock.unlock() }
        for b in blocks { if let off = b.take(size) { return (b, off, size) } }
        let blockSize = max(Self.blockBytes, size)
        let (buffer, mem, _) = try context.makeBuffer(bytes: blockSize, hostVisible: false)
        let block = VulkanBlock(id: nextID, buffer: buffer, memory: mem, size: blockSize)
        nextID += 1
        blocks.append(block)
        guard let off = block.take(size) else { throw NoiseError.device("Vulkan block sub-allocation failed") }
        return (block, off, size)
    }

    func release(_ block: VulkanBlock, _ offset: Int, _ size: Int) {
        lock.lock()
        defer { lock.unlock() }
        block.give(offset, size)
    }

    /// Frees empty blocks beyond the first (only when no command is in flight).
    func trim() {
        lock.lock()
        defer { lock.unlock() }
        var kept: [VulkanBlock] = []
        for b in blocks {
            if b.isEmpty && !kept.isEmpty && b.size > 0 {
                context.release(buffer: b.buffer, memory: b.memory)
            } else {
                kept.append(b)
            }
        }
        blocks = kept
    }
}

/// A float32 tensor buffer: a range of a `VulkanBlock`.
public final class VulkanBuffer: DeviceBuffer {
    public let count: Int
    let block: VulkanBlock
    let byteOffset: Int
    let byteSize: Int
    let pool: VulkanMemoryPool

    init(count: Int, pool: VulkanMemoryPool) throws {
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: 4)
        try require(!overflow, "Vulkan allocation of \(count) floats")
        (block, byteOffset, byteSize) = try pool.allocate(bytes: bytes)
        self.count = count
        self.pool = pool
    }

    deinit { pool.release(block, byteOffset, byteSize) }
}

/// Host-visible staging memory for uploads and downloads: bump-allocated chunks, reset after
/// each submission completes.
final class VulkanStaging {
    static let chunkBytes = 16 << 20
    let context: VulkanContext
    private var chunks: [(buffer: VkBuffer, memory: VkDeviceMemory, mapped: UnsafeMutableRawPointer, size: Int, used: Int)] = []

    init(context: VulkanContext) { self.context = context }

    deinit { for c in chunks { context.release(buffer: c.buffer, memory: c.memory) } }

    var bytesInUse: Int { chunks.reduce(0) { $0 + $1.used } }

    /// `bytes` of staging memory: the chunk's buffer, the offset in it and the mapped address.
    func allocate(_ bytes: Int) throws -> (VkBuffer, Int, UnsafeMutableRawPointer) {
        let size = (bytes + 255) / 256 * 256
        for i in chunks.indices where chunks[i].size - chunks[i].used >= size {
            let off = chunks[i].used
            chunks[i].used += size
            return (chunks[i].buffer, off, chunks[i].mapped + off)
        }
        let chunkSize = max(Self.chunkBytes, size)
        let (buffer, mem, mapped) = try context.makeBuffer(bytes: chunkSize, hostVisible: true)
        guard let mapped else {
            context.release(buffer: buffer, memory: mem)
            throw NoiseError.device("Vulkan staging memory could not be mapped")
        }
        chunks.append((buffer, mem, mapped, chunkSize, size))
        return (buffer, 0, mapped)
    }

    /// Forgets every allocation (the submission that used them has completed); chunks above
    /// the default size are given back.
    func reset() {
        var kept: [(buffer: VkBuffer, memory: VkDeviceMemory, mapped: UnsafeMutableRawPointer, size: Int, used: Int)] = []
        for var c in chunks {
            if c.size > Self.chunkBytes || kept.count >= 2 {
                context.release(buffer: c.buffer, memory: c.memory)
            } else {
                c.used = 0
                kept.append(c)
            }
        }
        chunks = kept
    }
}
