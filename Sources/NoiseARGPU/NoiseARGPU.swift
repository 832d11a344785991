// The library as one import: the compute layer (NoiseARCore: devices, tensors, ops, I/O), the
// models and diffusion (NoiseARModels: NoiseAR, NPNet, UNet, schedulers, the sampler loop) and
// the shapes world (NoiseARShapes: scenes, prompts, reward, the shipped models, collection,
// evaluation and training).
@_exported import NoiseARCore
@_exported import NoiseARModels
@_exported import NoiseARShapes
