import Foundation
#if os(Linux)
    import Synchronization
#endif

/// Runs body(0..<n) spread over the cores (serially for tiny n, and when called from inside
/// another parallel region or while another thread holds the pool).
@inline(__always)
func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    if n < 2 || WorkerPool.cores < 2 {
        for i in 0..<n { body(i) }
        return
    }
    // The body only touches disjoint memory per index (callers guarantee it).
    withoutActuallyEscaping(body) { escaping in
        WorkerPool.run(n, escaping)
    }
}

#if os(Linux)
    /// The CPU backend's worker threads: one per core besides the caller, which works too.
    ///
    /// Dispatch's concurrentPerform woke its second thread in about 40 us here, longer than many
    /// of a sampler step's ops take in total; these workers instead spin for a short while after
    /// each job (the next op follows within microseconds during sampling) before they sleep on a
    /// condition, as OpenMP runtimes and OpenBLAS's thread server do. Indices are claimed from
    /// an atomic counter, so a slow core does not hold the others up.
    final class WorkerPool: @unchecked Sendable {
        /// (read once: Foundation reads the cgroup files on every call, tens of microseconds)
        static let cores = ProcessInfo.processInfo.activeProcessorCount
        private static let shared = WorkerPool(workers: cores - 1)

        /// One parallel loop: its body, size and counters (workers keep a reference while they
        /// claim indices; a late one finds the counter exhausted).
        final class Job: @unchecked Sendable {
            var body: ((Int) -> Void)?
            let n: Int
            let next = Atomic<Int>(0)
            let done = Atomic<Int>(0)
            init(_ n: Int, _ body: @escaping (Int) -> Void) { self.n = n; self.body = body }

            /// Claims and runs indices until none is left.
            func work() {
                while true {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard i < n else { return }
                    runOne(i)
                    done.wrappingAdd(1, ordering: .releasing)
                }
            }

            /// Runs one index; the closure's reference ends here, before the index counts as
            /// done (the caller's withoutActuallyEscaping checks that nothing kept it).
            @inline(never)
            private func runOne(_ i: Int) { body?(i) }
        }

        private let generation = Atomic<Int>(0)
        private let busy = Atomic<Bool>(false)
        private let condition = NSCondition()
        private var current: Job?

        private init(workers: Int) {
            for _ in 0..<max(workers, 0) {
                let t = Thread { [unowned self] in self.loop() }
                t.name = "noisear-cpu-worker"
                t.start()
            }
        }

        static func run(_ n: Int, _ body: @escaping (Int) -> Void) {
            let pool = shared
            // Nested or concurrent parallel loops run serially on the calling thread.
            guard pool.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
                for i in 0..<n { body(i) }
                return
            }
            let job = Job(n, body)
            pool.condition.lock()
            pool.current = job
            pool.generation.wrappingAdd(1, ordering: .releasing)
            pool.condition.broadcast()
            pool.condition.unlock()
            job.work()
            while job.done.load(ordering: .acquiring) < n {}
            // Every claimed index has finished; no worker reads the body again.
            job.body = nil
            pool.condition.lock()
            pool.current = nil
            pool.condition.unlock()
            pool.busy.store(false, ordering: .releasing)
        }

        private func loop() {
            var seen = 0
            while true {
                // Spin a little for the next job, then sleep until one is published.
                var spins = 0
                while generation.load(ordering: .acquiring) == seen && spins < 200_000 { spins += 1 }
                condition.lock()
                while generation.load(ordering: .acquiring) == seen { condition.wait() }
                seen = generation.load(ordering: .acquiring)
                let job = current
                condition.unlock()
                job?.work()
            }
        }
    }
#else
    /// Elsewhere Dispatch's concurrentPerform spreads the loop.
    enum WorkerPool {
        static let cores = ProcessInfo.processInfo.activeProcessorCount
        static func run(_ n: Int, _ body: @escaping (Int) -> Void) {
            let box = UncheckedSendable(body)
            let workers = min(n, cores)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var i = w
                while i < n {
                    box.value(i)
                    i += workers
                }
            }
        }
    }
#endif
