#if canImport(Glibc)
    import Glibc
#endif

/// The command-line tool's host-memory policy (a library leaves its host's allocator alone).
enum HostMemory {
    /// glibc serves blocks from 128 KiB up with fresh mmap pages and unmaps them on free, so
    /// every step of a sampler or trainer page-faults (and zero-fills) its intermediates anew.
    /// With blocks up to 256 MiB kept in the heap, and its top trimmed only beyond 512 MiB, a
    /// step reuses the memory of the previous one (figures in the README's speed section).
    /// glibc's `mallopt` is looked up at run time (M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3
    /// in malloc.h); other C libraries are left as they are.
    static func keepFreedBlocks() {
        #if canImport(Glibc)
            typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
            guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
            let mallopt = unsafeBitCast(sym, to: Mallopt.self)
            _ = mallopt(-3, 256 << 20)
            _ = mallopt(-1, 512 << 20)
        #endif
    }
}
