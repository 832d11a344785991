import Foundation

/// A size-bucketed cache of device (or host) allocations, as tinygrad's and ggml's allocators
/// keep: a freed buffer goes back to the free list of its bucket and the next allocation of
/// that bucket takes it, so that a sampler's steps reuse the same memory instead of asking the
/// system (the CPU backend paid for fresh zero-filled pages on every intermediate).
///
/// Buckets: sizes below `smallBytes` are not pooled (the system allocator handles them well);
/// above, a size rounds up to the next of eight steps per power of two (at most 12.5% slack).
/// At most `idleLimit` bytes wait in the free lists; beyond that a freed allocation goes back to
/// the system at once (an idle limit of 0 turns the pool off: nothing is bucketed). Thread-safe: buffers are freed wherever their last reference drops.
final class BufferPool<Handle>: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [Int: [Handle]] = [:]
    private(set) var idleBytes = 0
    /// Allocations served from the free lists, and those that went to the system.
    private(set) var hits = 0, misses = 0
    let idleLimit: Int
    let smallBytes: Int
    private let release: (Handle) -> Void

    init(idleLimit: Int, smallBytes: Int = 64 << 10, release: @escaping (Handle) -> Void) {
        self.idleLimit = idleLimit
        self.smallBytes = smallBytes
        self.release = release
    }

    /// The bucket `bytes` falls in (its capacity in bytes), or nil when it is not pooled.
    func bucket(_ bytes: Int) -> Int? {
        guard idleLimit > 0, bytes >= smallBytes, bytes <= Int.max / 4 else { return nil }
        // 8 steps per power of two: step = 2^(floor(log2 bytes) - 3).
        let log2 = Int.bitWidth - 1 - bytes.leadingZeroBitCount
        let step = 1 << (log2 - 3)
        return (bytes + step - 1) / step * step
    }

    /// An allocation for `bytes`: an idle one of its class (or of a class up to twice it), else
    /// `make(size)` with the class's size (the exact size when the request is not pooled).
    /// Returns it with its class (nil: not pooled; release it directly).
    func obtain(_ bytes: Int, make: (Int) throws -> Handle) rethrows -> (Handle, Int?) {
        guard let b = bucket(bytes) else { return (try make(bytes), nil) }
        if let (h, actual) = take(bucket: b) { return (h, actual) }
        return (try make(b), b)
    }

    /// A cached allocation for `bucket`: of that bucket, else of the smallest idle bucket up to
    /// twice its size (memory already held is reused rather than the process growing); nil
    /// when none is idle. Returns the allocation and the bucket it belongs to.
    func take(bucket: Int) -> (Handle, Int)? {
        lock.lock()
        defer { lock.unlock() }
        var best = bucket
        if free[bucket]?.isEmpty ?? true {
            best = Int.max
            for (size, list) in free where size > bucket && size <= 2 * bucket && size < best && !list.isEmpty {
                best = size
            }
        }
        if best != Int.max, var list = free[best], let h = list.popLast() {
            free[best] = list.isEmpty ? nil : list
            idleBytes -= best
            hits += 1
            return (h, best)
        }
        misses += 1
        return nil
    }

    /// Returns an allocation of `bucket` bytes to its free list (or to the system when the
    /// idle limit would be passed).
    func give(_ h: Handle, bucket: Int) {
        lock.lock()
        if idleBytes + bucket <= idleLimit {
            free[bucket, default: []].append(h)
            idleBytes += bucket
            lock.unlock()
        } else {
            lock.unlock()
            release(h)
        }
    }

    /// The counters, read together.
    var statistics: BufferPoolStatistics {
        lock.lock()
        defer { lock.unlock() }
        return BufferPoolStatistics(hits: hits, misses: misses, idleBytes: idleBytes, idleLimit: idleLimit)
    }

    deinit { for h in free.values.joined() { release(h) } }

    /// The default idle limit: an eighth of the memory named, between 256 MiB and 4 GiB.
    static func defaultIdleLimit(memoryBytes: UInt64) -> Int {
        Int(min(max(memoryBytes / 8, 256 << 20), 4 << 30))
    }
}

/// What a buffer pool has done: allocations served from its free lists (hits) and from the
/// system (misses), and the bytes waiting idle against their limit.
public struct BufferPoolStatistics: Sendable, Equatable {
    public var hits: Int, misses: Int, idleBytes: Int, idleLimit: Int
}
