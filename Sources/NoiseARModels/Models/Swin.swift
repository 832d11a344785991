import Foundation
import NoiseARCore

/// Settings of timm's `SwinTransformer` (v1) as far as `forward_features` needs them. JSON keys
/// are timm's constructor arguments; missing ones take swin_tiny's values (the NPNet authors').
public struct SwinConfig: Codable, Sendable, Equatable {
    public var imgSize = 224
    public var patchSize = 4
    public var inChans = 3
    public var windowSize = 7
    public var embedDim = 96
    public var depths = [2, 2, 6, 2]
    public var numHeads = [3, 6, 12, 24]
    public var mlpRatio = 4
    public var layerNormEps: Float = 1e-5

    public init() {}

    enum CodingKeys: String, CodingKey {
        case imgSize = "img_size", patchSize = "patch_size", inChans = "in_chans", windowSize = "window_size"
        case embedDim = "embed_dim", depths, numHeads = "num_heads", mlpRatio = "mlp_ratio"
        case layerNormEps = "layer_norm_eps"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SwinConfig()
        imgSize = try c.decodeIfPresent(Int.self, forKey: .imgSize) ?? d.imgSize
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? d.patchSize
        inChans = try c.decodeIfPresent(Int.self, forKey: .inChans) ?? d.inChans
        windowSize = try c.decodeIfPresent(Int.self, forKey: .windowSize) ?? d.windowSize
        embedDim = try c.decodeIfPresent(Int.self, forKey: .embedDim) ?? d.embedDim
        depths = try c.decodeIfPresent([Int].self, forKey: .depths) ?? d.depths
        numHeads = try c.decodeIfPresent([Int].self, forKey: .numHeads) ?? d.numHeads
        mlpRatio = try c.decodeIfPresent(Int.self, forKey: .mlpRatio) ?? d.mlpRatio
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? d.layerNormEps
    }

    /// Number of stages.
    public var stages: Int { depths.count }
    /// Feature-map side of stage i (patch grid halved by every merge before it).
    public func resolution(stage i: Int) -> Int { (imgSize / patchSize) >> i }
    /// Channels of stage i.
    public func dim(stage i: Int) -> Int { embedDim << i }
    /// Side of the final feature map.
    public var outputResolution: Int { resolution(stage: max(stages - 1, 0)) }
    /// Channels of the final feature map.
    public var outputDim: Int { dim(stage: max(stages - 1, 0)) }
    /// timm's per-stage window: the whole map when it is no larger than the window (then no shift).
    public func window(stage i: Int) -> (size: Int, shift: Int) {
        let r = resolution(stage: i)
        return r <= windowSize ? (r, 0) : (windowSize, windowSize / 2)
    }

    /// Throws `invalidArgument` naming the first field out of range; `source` names the file
    /// (or model) in the message.
    public func validate(source: String = "Swin") throws { try validate(ConfigCheck(source: source)) }

    func validate(_ c: ConfigCheck) throws {
        try c.int("img_size", imgSize, max: 4096)
        try c.int("patch_size", patchSize, max: imgSize)
        try c.multiple("img_size", imgSize, of: "patch_size", patchSize)
        try c.int("in_chans", inChans, max: 1024)
        try c.int("window_size", windowSize, max: 64)
        try c.int("embed_dim", embedDim, max: ConfigCheck.maxWidth)
        try c.int("mlp_ratio", mlpRatio, max: 64)
        try c.epsilon("layer_norm_eps", Double(layerNormEps))
        try c.count("depths", depths.count, max: 16)
        try c.sameCount("num_heads", numHeads.count, as: "depths", depths.count)
        for i in 0..<stages {
            try c.int("depths[\(i)]", depths[i], max: 256)
            try c.int("num_heads[\(i)]", numHeads[i], max: 1024)
            let r = resolution(stage: i)
            if r < 1 || (i < stages - 1 && r % 2 != 0) {
                throw c.error("depths", "a list of \(stages)",
                              "stage \(i) would see a \(r)x\(r) map (img_size \(imgSize) / patch_size \(patchSize) halved \(i) times), which cannot be merged 2x2")
            }
            let e = c.name("embed_dim")
            let dim = try c.product("\(e) x 2^\(i) (stage \(i) width)", [embedDim, 1 << i], max: 1 << 20)
            try c.product("\(c.name("mlp_ratio")) x (\(e) x 2^\(i))^2 (stage \(i) mlp.fc1.weight)", [mlpRatio, dim, dim])
            if dim % numHeads[i] != 0 {
                throw c.error("num_heads[\(i)]", "\(numHeads[i])", "must divide the stage \(i) width embed_dim x 2^\(i) = \(dim)")
            }
            let w = window(stage: i).size
            if r % w != 0 {
                throw c.error("window_size", "\(windowSize)",
                              "must divide the stage \(i) map size \(r) (padding is not supported)")
            }
            // The shifted-window mask [nW, 1, N, N] is r^2 w^2 values.
            try c.product("(stage \(i) map size x \(c.name("window_size")))^2 (attention mask)", [r, r, w, w], max: 1 << 28)
        }
    }
}

/// timm's `SwinTransformer.forward_features` (v1, timm >= 0.9 layout: NHWC features, the patch
/// merging at the start of stages 1...). Parameters are registered under `prefix` with timm's
/// names (`patch_embed.proj`, `layers.i.blocks.j.attn.qkv`, `layers.i.downsample.reduction`,
/// `norm`, ...).
///
///     x = LN(conv_p(x))                          [B, H/p, W/p, E]   patch_embed
///     per stage i: (i > 0) x = merge(x)           concat 2x2 neighbours, LN(4C), Linear(4C -> 2C)
///                  per block j: x = x + proj(W-MSA(LN1(x)))  (shifted by window/2 on odd j)
///                               x = x + fc2(GELU(fc1(LN2(x))))
///     x = LN(x)                                  [B, r, r, E 2^(S-1)]
struct SwinTransformer {
    struct Block {
        let norm1: LayerNorm, norm2: LayerNorm
        let qkv: Linear, proj: Linear              // attn.qkv [3C, C], attn.proj [C, C]
        let relativeBias: Tensor                   // attn.relative_position_bias_table [(2w-1)^2, heads]
        let fc1: Linear, fc2: Linear               // mlp.fc1 [r C, C], mlp.fc2 [C, r C]
        let heads: Int, window: Int, shift: Int
    }
    struct Merge { let norm: LayerNorm; let reduction: Linear }  // norm [4C], reduction [2C, 4C] (no bias)
    struct Stage { let downsample: Merge?; let blocks: [Block] }

    let config: SwinConfig
    let patchProj: Conv2d          // patch_embed.proj [E, in, p, p], stride p
    let patchNorm: LayerNorm       // patch_embed.norm [E]
    let stages: [Stage]
    let norm: LayerNorm            // norm [E 2^(S-1)]
    /// Per-stage constants: the relative-position index (flattened [N * N]) and, for stages with
    /// shifted windows, the attention mask [nW, 1, N, N] (0 within a region, -100 across).
    let relativeIndex: [[Int]]
    let shiftMasks: [Tensor?]

    init(_ p: Parameters, _ prefix: String, config c: SwinConfig) throws {
        try c.validate()
        config = c
        let eps = c.layerNormEps
        patchProj = try Conv2d(p, prefix + "patch_embed.proj", c.inChans, c.embedDim, kernel: c.patchSize,
                               stride: c.patchSize)
        patchNorm = try LayerNorm(p, prefix + "patch_embed.norm", c.embedDim, eps: eps)
        var stages: [Stage] = [], index: [[Int]] = [], masks: [Tensor?] = []
        for i in 0..<c.stages {
            let dim = c.dim(stage: i), (w, shift) = c.window(stage: i)
            let lp = prefix + "layers.\(i)."
            let merge = i == 0 ? nil : Merge(norm: try LayerNorm(p, lp + "downsample.norm", 2 * dim, eps: eps),
                                            reduction: try Linear(p, lp + "downsample.reduction", 2 * dim, dim, bias: false))
            let blocks = try (0..<c.depths[i]).map { j in
                let bp = lp + "blocks.\(j)."
                let table = try p.make(bp + "attn.relative_position_bias_table", [(2 * w - 1) * (2 * w - 1), c.numHeads[i]],
                                       .normal(0.02))
                return Block(norm1: try LayerNorm(p, bp + "norm1", dim, eps: eps),
                             norm2: try LayerNorm(p, bp + "norm2", dim, eps: eps),
                             qkv: try Linear(p, bp + "attn.qkv", dim, 3 * dim),
                             proj: try Linear(p, bp + "attn.proj", dim, dim),
                             relativeBias: table,
                             fc1: try Linear(p, bp + "mlp.fc1", dim, c.mlpRatio * dim),
                             fc2: try Linear(p, bp + "mlp.fc2", c.mlpRatio * dim, dim),
                             heads: c.numHeads[i], window: w, shift: j % 2 == 1 ? shift : 0)
            }
            stages.append(Stage(downsample: merge, blocks: blocks))
            index.append(Self.relativePositionIndex(window: w))
            masks.append(shift > 0 && c.depths[i] > 1
                         ? try Self.shiftMask(resolution: c.resolution(stage: i), window: w, shift: shift, device: p.device)
                         : nil)
        }
        self.stages = stages
        norm = try LayerNorm(p, prefix + "norm", c.outputDim, eps: eps)
        relativeIndex = index
        shiftMasks = masks
    }

    /// timm's relative_position_index: for tokens a = (ya, xa), b = (yb, xb) of a w x w window,
    /// (ya - yb + w - 1) (2w - 1) + (xa - xb + w - 1), row-major over (a, b).
    static func relativePositionIndex(window w: Int) -> [Int] {
        let n = w * w
        var out = [Int](repeating: 0, count: n * n)
        for a in 0..<n {
            for b in 0..<n {
                out[a * n + b] = (a / w - b / w + w - 1) * (2 * w - 1) + (a % w - b % w + w - 1)
            }
        }
        return out
    }

    /// The shifted-window mask [nW, 1, N, N]: the map is cut into 3 x 3 regions by
    /// [0, r-w), [r-w, r-s), [r-s, r) along each axis; tokens of different regions get -100.
    static func shiftMask(resolution r: Int, window w: Int, shift s: Int, device: Device) throws -> Tensor {
        func band(_ i: Int) -> Int { i < r - w ? 0 : i < r - s ? 1 : 2 }
        let nw = r / w, n = w * w
        var out = [Float](repeating: 0, count: nw * nw * n * n)
        for wy in 0..<nw {
            for wx in 0..<nw {
                let region = (0..<n).map { t in band(wy * w + t / w) * 3 + band(wx * w + t % w) }
                let base = (wy * nw + wx) * n * n
                for a in 0..<n {
                    for b in 0..<n where region[a] != region[b] { out[base + a * n + b] = -100 }
                }
            }
        }
        return try Tensor(out, shape: [nw * nw, 1, n, n], on: device)
    }

    /// A token order of one image's r x r map: order[k] is the natural (row-major) index of the
    /// token held in row k.
    typealias TokenOrder = [Int]

    /// The order of a block's windows: torch.roll by -shift on both axes, then the partition into
    /// w x w windows, row-major over the windows and within each (timm's window_partition). Its
    /// inverse is timm's window_reverse followed by the roll back.
    static func windowOrder(resolution r: Int, window w: Int, shift s: Int) -> TokenOrder {
        let nw = r / w
        var out = TokenOrder(repeating: 0, count: r * r)
        for wy in 0..<nw {
            for wx in 0..<nw {
                for ty in 0..<w {
                    for tx in 0..<w {
                        let k = ((wy * nw + wx) * w + ty) * w + tx
                        out[k] = ((wy * w + ty + s) % r) * r + (wx * w + tx + s) % r
                    }
                }
            }
        }
        return out
    }

    /// The patch merging's order: output token (i, j) of the (r/2) x (r/2) map owns four rows in
    /// a row, its neighbours (2i, 2j), (2i+1, 2j), (2i, 2j+1), (2i+1, 2j+1), so [rows, C] in this
    /// order reshapes to timm's concatenation [rows / 4, 4C].
    static func mergeOrder(resolution r: Int) -> TokenOrder {
        let h = r / 2
        var out = TokenOrder(repeating: 0, count: r * r)
        for i in 0..<h {
            for j in 0..<h {
                for q in 0..<4 { out[(i * h + j) * 4 + q] = (2 * i + (q & 1)) * r + 2 * j + (q >> 1) }
            }
        }
        return out
    }

    /// Tokens [B r^2, C] held in order `from` (nil: natural), reordered to `to` (nil: natural) by
    /// one row gather; no work when the orders agree.
    static func reorder(_ x: Tensor, from: TokenOrder?, to: TokenOrder?, tokens n: Int) throws -> Tensor {
        var position = Array(0..<n)                        // natural index -> row in x
        if let from { for (k, t) in from.enumerated() { position[t] = k } }
        let index = (0..<n).map { position[to?[$0] ?? $0] }
        if index == Array(0..<n) { return x }
        let batch = x.shape[0] / n
        var all = [Int](); all.reserveCapacity(x.shape[0])
        for b in 0..<batch { all.append(contentsOf: index.lazy.map { b * n + $0 }) }
        return try Tensor.gather(x, indices: all)
    }

    /// Images [B, in, H, W] -> features [B, r, r, C] (NHWC).
    ///
    /// The tokens are kept as rows [B r^2, C] in the order the next block's windows want: the
    /// norms, projections and feed-forward work per token, so only the attention needs the
    /// windows, and the roll, partition, reverse and roll back of consecutive blocks (and the
    /// patch merging's neighbour concatenation) become one row gather between blocks; the
    /// attention's residual is added in its output projection.
    func callAsFunction(_ images: Tensor) throws -> Tensor {
        let c = config
        try requireShape(images.rank == 4 && images.shape[1] == c.inChans && images.shape[2] == c.imgSize
                            && images.shape[3] == c.imgSize,
                         "Swin input \(images.shape) does not match [B, \(c.inChans), \(c.imgSize), \(c.imgSize)]")
        let batch = images.shape[0]
        var x = try patchNorm(patchProj(images).permuted([0, 2, 3, 1]))          // [B, r, r, E]
        x = try x.reshaped([x.count / c.embedDim, c.embedDim])
        var order: TokenOrder? = nil
        for (i, stage) in stages.enumerated() {
            let r = c.resolution(stage: i)
            if let m = stage.downsample {
                // [B (2r)^2, C/2] in merge order -> [B r^2, 2C] natural.
                let previous = c.resolution(stage: i - 1)
                x = try Self.reorder(x, from: order, to: Self.mergeOrder(resolution: previous), tokens: previous * previous)
                x = try m.reduction(m.norm(x.reshaped([x.shape[0] / 4, 4 * x.shape[1]])))
                order = nil
            }
            for block in stage.blocks {
                let windows = Self.windowOrder(resolution: r, window: block.window, shift: block.shift)
                x = try Self.reorder(x, from: order, to: windows, tokens: r * r)
                order = windows
                x = try self.block(block, x, bias: blockBias(block, stage: i))
            }
        }
        let r = c.outputResolution
        x = try Self.reorder(x, from: order, to: nil, tokens: r * r)
        return try norm(x).reshaped([batch, r, r, c.outputDim])
    }

    /// A block's attention bias: the relative-position bias [1, heads, N, N], plus the shifted
    /// windows' mask [nW, 1, N, N] when the block is shifted.
    func blockBias(_ b: Block, stage i: Int) throws -> Tensor {
        let rel = try relativeBias(b, index: relativeIndex[i])
        guard b.shift > 0 else { return rel }
        guard let mask = shiftMasks[i] else {
            throw NoiseError.invalidArgument("Swin stage \(i): shifted block without a mask")
        }
        return try rel + mask   // [nW, heads, N, N]
    }

    /// The block's relative-position bias [1, heads, N, N] gathered from its table.
    func relativeBias(_ b: Block, index: [Int]) throws -> Tensor {
        let n = b.window * b.window
        return try Tensor.gather(b.relativeBias, indices: index).reshaped([n, n, b.heads]).permuted([2, 0, 1])
            .reshaped([1, b.heads, n, n])
    }

    /// One block on tokens [B r^2, C] held in its window order (each run of N = w^2 rows one
    /// window, an image's windows row-major):
    ///     x1 = x + proj(W-MSA(LN1(x)))     x2 = x1 + fc2(GELU(fc1(LN2(x1))))
    func block(_ blk: Block, _ x: Tensor, bias: Tensor) throws -> Tensor {
        let n = blk.window * blk.window, ch = x.shape[1]
        let windows = try blk.norm1(x).reshaped([x.shape[0] / n, n, ch])
        // qkv [B nW, N, 3C]: the heads read in place without a tape.
        let a = try Tensor.attention(packed: blk.qkv(windows), heads: blk.heads, bias: bias)   // [B nW, N, C]
        let x1 = try blk.proj(a.reshaped([x.shape[0], ch]), residual: x)
        return try blk.fc2(blk.fc1(blk.norm2(x1), activation: .gelu), residual: x1)
    }
}
