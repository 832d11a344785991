import Foundation
import NoiseARCore
import NoiseARModels

extension NoisePriors {
    /// The shipped shapes-world NoiseAR prior.
    public static let noiseARFile = "shapes-noisear.safetensors"
    /// The shipped shapes-world NPNet.
    public static let npnetFile = "shapes-npnet.safetensors"

    /// The shapes world's NoiseAR source: prompt embeddings from the diffusion model's text
    /// encoder, image i drawn from stream seeds[i] (runs of consecutive seeds share a batch).
    public static func noiseAR(_ net: NoiseARNet, model: TextToImageModel, temperature: Float = 0.5,
                               strength: Float = 1) throws -> NoiseSource {
        let want = [3, Scene.size, Scene.size]
        try requireShape(net.config.latentShape == want,
                         "the NoiseAR prior's latent \(net.config.latentShape) does not match the shapes-world model's \(want)")
        try requireShape(net.config.contextDim == model.config.text.hiddenSize,
                         "the NoiseAR prior takes \(net.config.contextDim)-wide prompt embeddings; the model's text encoder gives \(model.config.text.hiddenSize)")
        return { prompts, seeds in
            try require(prompts.count == seeds.count, "\(prompts.count) prompts for \(seeds.count) seeds")
            var parts: [Tensor] = []
            var start = 0
            while start < seeds.count {
                var end = start + 1
                while end < seeds.count && seeds[end] == seeds[end - 1] &+ 1 { end += 1 }
                let text = try model.device.noGrad { try model.encode(Array(prompts[start..<end])) }
                parts.append(try noiseAR(net, text: text, seed: seeds[start], temperature: temperature, strength: strength))
                start = end
            }
            return parts.count == 1 ? parts[0] : try Tensor.concat(parts, axis: 0)
        }
    }
}

extension NoisePrior {
    /// The shipped shapes-world prior of a kind ($NOISEAR_PRIOR / $NOISEAR_NPNET, the source
    /// tree, or beside the binary), or `path` when given.
    public static func shapesWorld(_ kind: NoisePriorKind, path: String?, device: Device) throws -> NoisePrior {
        let (file, variable) = kind == .npnet ? (NoisePriors.npnetFile, "NOISEAR_NPNET") : (NoisePriors.noiseARFile, "NOISEAR_PRIOR")
        guard kind != .gaussian else { throw NoiseError.invalidArgument("gaussian noise has no weights") }
        guard let url = path.map({ URL(fileURLWithPath: $0) }) ?? ShippedModels.locate(file, variable: variable) else {
            throw NoiseError.io("no \(kind.rawValue) weights: pass a weights file or set \(variable) (the shipped \(file) was not found)")
        }
        return try load(url, device: device, expected: kind)
    }
}
