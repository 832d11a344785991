import CBLAS
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// OpenBLAS's kernel choice, corrected where its CPU detection comes out too low.
///
/// A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from CPUID when it loads, and takes AVX
/// as unusable when CPUID's OSXSAVE bit is clear. Some hypervisors clear that bit while the
/// guest kernel has AVX, AVX2 and AVX-512 enabled (it lists them in /proc/cpuinfo only then):
/// OpenBLAS then runs its Prescott (SSE3) kernels, about ten times slower (seen here: 26
/// against 246 GFLOP/s for a 1024^3 SGEMM on two cores). When the user has not chosen
/// (`OPENBLAS_CORETYPE`), the core OpenBLAS picked is older than the instruction sets the
/// kernel reports, and OpenBLAS can re-select (its exported gotoblas_dynamic_quit/init), the
/// best core those flags allow is selected once, before the first BLAS call of the process:
/// SkylakeX with AVX-512 F/BW/DQ/VL, Haswell with AVX2 and FMA, SandyBridge with AVX.
enum BLASCore {
    /// What was done, for `devices` and logs: nil when OpenBLAS's own choice stands.
    static let correction: String? = {
        let c = correct()
        // The CPU backend spreads its work over the cores itself; OpenBLAS's own threads would
        // spin against those workers (on two cores a parallel softmax ran at half speed beside
        // them), so OpenBLAS runs single-threaded inside each of our tasks.
        openblas_set_num_threads(1)
        return c
    }()

    private static func correct() -> String? {
        #if os(Linux)
            let env = ProcessInfo.processInfo.environment
            guard env["OPENBLAS_CORETYPE"] == nil,
                  let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                  let flagLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
            else { return nil }
            let flags = Set(flagLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
            let want: String
            if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) {
                want = "SkylakeX"
            } else if flags.contains("avx2") && flags.contains("fma") {
                want = "Haswell"
            } else if flags.contains("avx") {
                want = "SandyBridge"
            } else {
                return nil
            }
            typealias CoreName = @convention(c) () -> UnsafeMutablePointer<CChar>?
            typealias Call = @convention(c) () -> Void
            let all = UnsafeMutableRawPointer(bitPattern: 0)
            guard let nameSym = dlsym(all, "openblas_get_corename"),
                  let quitSym = dlsym(all, "gotoblas_dynamic_quit"),
                  let initSym = dlsym(all, "gotoblas_dynamic_init")
            else { return nil }
            let coreName = unsafeBitCast(nameSym, to: CoreName.self)
            let current = coreName().map { String(cString: $0) } ?? ""
            // The cores too old for the flags found (OpenBLAS's names, lower-cased).
            let pre: Set<String> = ["unknown", "prescott", "core2", "penryn", "dunnington", "nehalem", "atom",
                                    "katmai", "coppermine", "northwood", "banias", "opteron", "barcelona"]
            let weaker: Set<String> = want == "SandyBridge" ? pre : (want == "Haswell" ? pre.union(["sandybridge"])
                : pre.union(["sandybridge", "haswell", "zen"]))
            guard weaker.contains(current.lowercased()) else { return nil }
            setenv("OPENBLAS_CORETYPE", want, 1)
            unsafeBitCast(quitSym, to: Call.self)()
            unsafeBitCast(initSym, to: Call.self)()
            unsetenv("OPENBLAS_CORETYPE")
            let now = coreName().map { String(cString: $0) } ?? "?"
            return "OpenBLAS picked \(current) kernels on a CPU with \(want)-class instructions; using \(now)"
        #else
            return nil
        #endif
    }
}
