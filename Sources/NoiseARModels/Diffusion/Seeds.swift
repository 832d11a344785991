import Foundation
import NoiseARCore

/// Seeds of a batch: image i of a batch uses seed + i (Philox stream seed + i, the same numbers
/// on every device).
public enum Seeds {
    /// The largest seed (PyTorch's and ComfyUI's range: 0 ... 2^64 - 1).
    public static let maximum = UInt64.max

    /// The seed to use for `--seed value`: the value itself, or for nil (-1) a random one in
    /// 0..<2^31 (which the caller prints, so the run can be repeated).
    public static func resolve(_ value: UInt64?) -> UInt64 {
        value ?? UInt64.random(in: 0..<(1 << 31))
    }

    /// Checks that seeds `first ..< first + count` stay within `maximum` (refused up front, with
    /// the largest first seed that would fit).
    public static func check(_ first: UInt64, count: Int, option: String = "--seed") throws {
        try require(count >= 0, "\(option): a negative number of seeds (\(count))")
        guard count > 0 else { return }
        let last = UInt64(count - 1)
        guard first <= maximum, last <= maximum - first else {
            throw NoiseError.invalidArgument(
                "\(option) \(first) with \(count) seeds would pass the largest seed \(maximum): use \(option) at most \(maximum - min(maximum, last))")
        }
    }

    /// `count` consecutive seeds from `first`, checked as `check` does.
    public static func consecutive(from first: UInt64, count: Int, option: String = "--seed") throws -> [UInt64] {
        try check(first, count: count, option: option)
        return (0..<UInt64(count)).map { first + $0 }
    }
}
