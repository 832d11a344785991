import COpenCL
import Foundation

/// Thin helpers over the OpenCL C API: error mapping and info queries.
enum CL {
    static func name(_ code: cl_int) -> String {
        switch code {
        case 0: return "CL_SUCCESS"
        case -1: return "CL_DEVICE_NOT_FOUND"
        case -2: return "CL_DEVICE_NOT_AVAILABLE"
        case -3: return "CL_COMPILER_NOT_AVAILABLE"
        case -4: return "CL_MEM_OBJECT_ALLOCATION_FAILURE"
        case -5: return "CL_OUT_OF_RESOURCES"
        case -6: return "CL_OUT_OF_HOST_MEMORY"
        case -7: return "CL_PROFILING_INFO_NOT_AVAILABLE"
        case -8: return "CL_MEM_COPY_OVERLAP"
        case -9: return "CL_IMAGE_FORMAT_MISMATCH"
        case -10: return "CL_IMAGE_FORMAT_NOT_SUPPORTED"
        case -11: return "CL_BUILD_PROGRAM_FAILURE"
        case -12: return "CL_MAP_FAILURE"
        case -13: return "CL_MISALIGNED_SUB_BUFFER_OFFSET"
        case -14: return "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST"
        case -15: return "CL_COMPILE_PROGRAM_FAILURE"
        case -16: return "CL_LINKER_NOT_AVAILABLE"
        case -17: return "CL_LINK_PROGRAM_FAILURE"
        case -18: return "CL_DEVICE_PARTITION_FAILED"
        case -19: return "CL_KERNEL_ARG_INFO_NOT_AVAILABLE"
        case -30: return "CL_INVALID_VALUE"
        case -31: return "CL_INVALID_DEVICE_TYPE"
        case -32: return "CL_INVALID_PLATFORM"
        case -33: return "CL_INVALID_DEVICE"
        case -34: return "CL_INVALID_CONTEXT"
        case -35: return "CL_INVALID_QUEUE_PROPERTIES"
        case -36: return "CL_INVALID_COMMAND_QUEUE"
        case -37: return "CL_INVALID_HOST_PTR"
        case -38: return "CL_INVALID_MEM_OBJECT"
        case -39: return "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR"
        case -40: return "CL_INVALID_IMAGE_SIZE"
        case -41: return "CL_INVALID_SAMPLER"
        case -42: return "CL_INVALID_BINARY"
        case -43: return "CL_INVALID_BUILD_OPTIONS"
        case -44: return "CL_INVALID_PROGRAM"
        case -45: return "CL_INVALID_PROGRAM_EXECUTABLE"
        case -46: return "CL_INVALID_KERNEL_NAME"
        case -47: return "CL_INVALID_KERNEL_DEFINITION"
        case -48: return "CL_INVALID_KERNEL"
        case -49: return "CL_INVALID_ARG_INDEX"
        case -50: return "CL_INVALID_ARG_VALUE"
        case -51: return "CL_INVALID_ARG_SIZE"
        case -52: return "CL_INVALID_KERNEL_ARGS"
        case -53: return "CL_INVALID_WORK_DIMENSION"
        case -54: return "CL_INVALID_WORK_GROUP_SIZE"
        case -55: return "CL_INVALID_WORK_ITEM_SIZE"
        case -56: return "CL_INVALID_GLOBAL_OFFSET"
        case -57: return "CL_INVALID_EVENT_WAIT_LIST"
        case -58: return "CL_INVALID_EVENT"
        case -59: return "CL_INVALID_OPERATION"
        case -60: return "CL_INVALID_GL_OBJECT"
        case -61: return "CL_INVALID_BUFFER_SIZE"
        case -62: return "CL_INVALID_MIP_LEVEL"
        case -63: return "CL_INVALID_GLOBAL_WORK_SIZE"
        case -64: return "CL_INVALID_PROPERTY"
        case -1001: return "CL_PLATFORM_NOT_FOUND_KHR"
        default: return "CL_UNKNOWN_ERROR"
        }
    }

    /// Throws a `NoiseError.openCL` naming the call unless `code` is CL_SUCCESS.
    @inline(__always)
    static func check(_ code: cl_int, _ call: @autoclosure () -> String) throws {
        if code != CL_SUCCESS { throw NoiseError.openCL(call: call(), code: code, name: name(code)) }
    }

    /// All platforms; an ICD loader with no platform (-1001) yields an empty list, not an error.
    static func platforms() throws -> [cl_platform_id] {
        var n: cl_uint = 0
        let err = clGetPlatformIDs(0, nil, &n)
        if err == -1001 || n == 0 { return [] }
        try check(err, "clGetPlatformIDs")
        var ids = [cl_platform_id?](repeating: nil, count: Int(n))
        try check(clGetPlatformIDs(n, &ids, nil), "clGetPlatformIDs")
        return ids.compactMap { $0 }
    }

    static func devices(_ platform: cl_platform_id) throws -> [cl_device_id] {
        var n: cl_uint = 0
        let err = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &n)
        if err == CL_DEVICE_NOT_FOUND || n == 0 { return [] }
        try check(err, "clGetDeviceIDs")
        var ids = [cl_device_id?](repeating: nil, count: Int(n))
        try check(clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), n, &ids, nil),
                  "clGetDeviceIDs")
        return ids.compactMap { $0 }
    }

    static func platformString(_ p: cl_platform_id, _ param: Int32) -> String {
        var size = 0
        guard clGetPlatformInfo(p, cl_platform_info(param), 0, nil, &size) == CL_SUCCESS,
            size > 0
        else { return "" }
        var buf = [CChar](repeating: 0, count: size + 1)
        guard clGetPlatformInfo(p, cl_platform_info(param), size, &buf, nil) == CL_SUCCESS
        else { return "" }
        return cString(buf)
    }

    static func deviceString(_ d: cl_device_id, _ param: Int32) -> String {
        var size = 0
        guard clGetDeviceInfo(d, cl_device_info(param), 0, nil, &size) == CL_SUCCESS, size > 0
        else { return "" }
        var buf = [CChar](repeating: 0, count: size + 1)
        guard clGetDeviceInfo(d, cl_device_info(param), size, &buf, nil) == CL_SUCCESS
        else { return "" }
        return cString(buf)
    }

    static func deviceValue<T: FixedWidthInteger>(_ d: cl_device_id, _ param: Int32, _: T.Type)
        -> T
    {
        var v: T = 0
        _ = clGetDeviceInfo(d, cl_device_info(param), MemoryLayout<T>.size, &v, nil)
        return v
    }

    static func cString(_ buf: [CChar]) -> String {
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    /// A device's description for listings.
    static func info(_ d: cl_device_id, platform p: cl_platform_id, index: Int) -> DeviceInfo {
        let type = deviceValue(d, CL_DEVICE_TYPE, cl_device_type.self)
        let kind: DeviceInfo.Kind =
            type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0 ? .gpu
            : type & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 ? .accelerator
            : type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 ? .cpu : .other
        let ext = deviceString(d, CL_DEVICE_EXTENSIONS)
        return DeviceInfo(
            id: "opencl:\(index)", backend: "opencl", name: deviceString(d, CL_DEVICE_NAME),
            vendor: deviceString(d, CL_DEVICE_VENDOR), kind: kind,
            platform: platformString(p, CL_PLATFORM_NAME) + " " + platformString(p, CL_PLATFORM_VERSION),
            memoryBytes: deviceValue(d, CL_DEVICE_GLOBAL_MEM_SIZE, cl_ulong.self),
            computeUnits: Int(deviceValue(d, CL_DEVICE_MAX_COMPUTE_UNITS, cl_uint.self)),
            openCLCVersion: deviceString(d, CL_DEVICE_OPENCL_C_VERSION),
            driverVersion: deviceString(d, CL_DRIVER_VERSION),
            fp16: ext.contains("cl_khr_fp16"), fp64: ext.contains("cl_khr_fp64"),
            limits: [
                "CL_DEVICE_MAX_WORK_GROUP_SIZE": deviceValue(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, Int.self),
                "CL_DEVICE_LOCAL_MEM_SIZE": Int(clamping: deviceValue(d, CL_DEVICE_LOCAL_MEM_SIZE, cl_ulong.self)),
                "CL_DEVICE_MAX_MEM_ALLOC_SIZE": Int(clamping: deviceValue(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, cl_ulong.self)),
            ])
    }

    /// Whether the device shares memory with the host (an integrated GPU); false on discrete GPUs.
    static func hostUnifiedMemory(_ d: cl_device_id) -> Bool {
        deviceValue(d, CL_DEVICE_HOST_UNIFIED_MEMORY, cl_bool.self) != 0
    }

    /// The limits that bound kernel parameters: work-group and work-item sizes, local memory.
    static func limits(_ d: cl_device_id, fp64: Bool) -> KernelLimits {
        let wg = deviceValue(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, Int.self)
        let dims = min(Int(deviceValue(d, CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS, cl_uint.self)), 16)
        var sizes = [Int](repeating: 0, count: max(dims, 0))
        if !sizes.isEmpty,
            clGetDeviceInfo(d, cl_device_info(CL_DEVICE_MAX_WORK_ITEM_SIZES),
                            sizes.count * MemoryLayout<Int>.size, &sizes, nil) != CL_SUCCESS
        {
            sizes = []
        }
        let local = deviceValue(d, CL_DEVICE_LOCAL_MEM_SIZE, cl_ulong.self)
        return KernelLimits(maxWorkGroupSize: wg, maxWorkItemSizes: sizes,
                            localMemoryBytes: Int(clamping: local), fp64: fp64)
    }

    /// Every OpenCL device of every platform, numbered in enumeration order.
    /// Serialises platform and device enumeration: the ICD loader's first clGetPlatformIDs
    /// initialises global state, and two threads doing it at once can see no platform or crash
    /// (seen with ocl-icd when many threads open devices at start-up).
    private static let enumerationLock = NSLock()

    static func allDevices() throws -> [(platform: cl_platform_id, device: cl_device_id)] {
        enumerationLock.lock()
        defer { enumerationLock.unlock() }
        var out: [(cl_platform_id, cl_device_id)] = []
        for p in try platforms() {
            for d in (try? devices(p)) ?? [] { out.append((p, d)) }
        }
        return out
    }
}
