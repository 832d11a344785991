/*
 * noisear.h — C API of noisear-gpu: learned initial-noise priors (NoiseAR, NPNet) for diffusion
 * pipelines, on OpenCL or Vulkan devices or the CPU.
 *
 * Link with libnoisear.so (`swift build -c release` puts it in .build/release/).
 *
 * Conventions
 * - Opaque handles with create/free pairs. `*_free(NULL)` does nothing.
 * - Every call that can fail returns a noisear_status: 0 (NOISEAR_OK) or a negative code. The
 *   message of the last failure is kept per handle (noisear_context_last_error) and, for calls
 *   made without a handle or that could not create one, per thread (noisear_last_error).
 *   The library never aborts on bad input: a wrong shape, a missing file, a malformed checkpoint
 *   or an unknown device is a status and a message.
 * - Buffers are caller-owned float32 arrays in C order with explicit shapes and element counts;
 *   the library never frees what it did not allocate and never keeps a caller's pointer after
 *   a call returns. Strings returned by the library live as long as their handle (or, for
 *   noisear_last_error, until the thread's next failing call).
 * - Threads: a context and the priors loaded on it must be used by one thread at a time; calls
 *   on different contexts may run concurrently on different threads. noisear_device_count,
 *   noisear_device_get, noisear_set_log_callback, noisear_abi_version and noisear_version are
 *   safe from any thread.
 * - Randomness: by default image b of a batch draws from the Philox4x32-10 stream seed + b, so
 *   one seed gives the same noise on every device; with NOISEAR_RNG_TORCH the batch's standard
 *   normals are torch.randn([B, ...], generator=torch.Generator().manual_seed(seed)) bit for
 *   bit, as diffusers and ComfyUI draw them (drawn on the host, so also the same on every device).
 */
#ifndef NOISEAR_H
#define NOISEAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes; compare with noisear_abi_version() at run time. */
#define NOISEAR_ABI_VERSION 2

typedef enum noisear_status {
    NOISEAR_OK = 0,
    NOISEAR_ERR_INVALID_ARGUMENT = -1, /* a value out of range, a NULL pointer, a bad name */
    NOISEAR_ERR_SHAPE = -2,            /* shapes or element counts that do not fit together */
    NOISEAR_ERR_IO = -3,               /* a file that cannot be read or written */
    NOISEAR_ERR_FORMAT = -4,           /* a malformed or refused file (safetensors, .pth) */
    NOISEAR_ERR_DEVICE = -5,           /* no such device, or the device failed */
    NOISEAR_ERR_UNSUPPORTED = -6,      /* the operation does not apply (e.g. scoring an NPNet) */
    NOISEAR_ERR_CANCELLED = -7,        /* a progress callback returned false */
    NOISEAR_ERR_OOM = -8,              /* the request needs more memory than the device or host
                                        * has (estimated before any allocation) */
    NOISEAR_ERR_INTERNAL = -99
} noisear_status;

/* The library's ABI version (NOISEAR_ABI_VERSION of the header it was built with). */
int noisear_abi_version(void);
/* The library's version, e.g. "0.9.0". */
const char *noisear_version(void);
/* A short name of a status, e.g. "NOISEAR_ERR_SHAPE". */
const char *noisear_status_name(noisear_status status);
/* The message of this thread's last failure of a call made without a handle
 * (device queries, context creation); "" when none. */
const char *noisear_last_error(void);

/* Log messages: 1 info (notices), 2 warning (e.g. an op falling back to the CPU backend),
 * 3 error (each failure's message, also returned through the last-error calls). NULL restores
 * the default: warnings to standard error, nothing else. */
typedef void (*noisear_log_callback)(int level, const char *message, void *user_data);
void noisear_set_log_callback(noisear_log_callback callback, void *user_data);

/* Progress of a long call: `done` of `total` steps. Return false to cancel the call
 * (it then returns NOISEAR_ERR_CANCELLED). */
typedef bool (*noisear_progress_callback)(int done, int total, void *user_data);

/* ---- devices ---------------------------------------------------------------------------- */

typedef struct noisear_device_info {
    char id[32];         /* "cpu", "opencl:N" or "vulkan:N": what noisear_context_params.device takes */
    char backend[16];    /* "cpu", "opencl" or "vulkan" */
    char type[16];       /* "cpu", "gpu", "accelerator" or "other" */
    char name[128];
    char vendor[128];
    uint64_t memory_bytes;
    int32_t compute_units;
} noisear_device_info;

/* The number of devices: the CPU backend first, then every OpenCL device, then every Vulkan
 * device. Never negative. */
int noisear_device_count(void);
/* Device `index` (0 <= index < noisear_device_count()). */
noisear_status noisear_device_get(int index, noisear_device_info *out);

/* ---- contexts --------------------------------------------------------------------------- */

typedef struct noisear_context noisear_context;

typedef struct noisear_context_params {
    /* "auto" (a discrete GPU, then an integrated one, on OpenCL or Vulkan; else the CPU
     * backend: see the README), "cpu", "opencl", "opencl:N", "vulkan", "vulkan:N"; NULL means
     * $NOISEAR_DEVICE or "auto". */
    const char *device;
} noisear_context_params;

noisear_context_params noisear_context_default_params(void);
noisear_status noisear_context_create(const noisear_context_params *params, noisear_context **out);
void noisear_context_free(noisear_context *ctx);
/* The id of the device the context runs on ("cpu", "opencl:0", "vulkan:0"). */
const char *noisear_context_device(const noisear_context *ctx);
/* The message of the last failure of a call on this context or on a prior loaded on it. */
const char *noisear_context_last_error(const noisear_context *ctx);

/* ---- Gaussian noise ---------------------------------------------------------------------- */

typedef enum noisear_rng {
    NOISEAR_RNG_PHILOX = 0, /* image b from the Philox4x32-10 stream seed + b */
    NOISEAR_RNG_TORCH = 1   /* PyTorch's CPU generator (mt19937), as torch.randn draws */
} noisear_rng;

/* Standard-normal noise for `batch` images into out (out_count = batch * elements per image).
 * batch_index (NULL: 0, 1, ..., batch - 1) says which index each image has in a larger batch,
 * as ComfyUI's latent batch_index does: with NOISEAR_RNG_TORCH one generator seeded `seed`
 * draws one image for every index from 0 to the largest listed, and the listed ones are kept in
 * order (ComfyUI's prepare_noise); with NOISEAR_RNG_PHILOX image i is stream seed + index. */
noisear_status noisear_gaussian_noise(noisear_rng rng, uint64_t seed, int64_t batch, const int64_t *batch_index,
                                      float *out, size_t out_count);

/* ---- priors ----------------------------------------------------------------------------- */

typedef struct noisear_prior noisear_prior;

typedef enum noisear_prior_kind {
    NOISEAR_PRIOR_NOISEAR = 1, /* autoregressive patch prior: sample and score */
    NOISEAR_PRIOR_NPNET = 2    /* golden-noise network: noise in, better noise out */
} noisear_prior_kind;

/* Loads a prior: .safetensors (the authors' key names) or the authors' PyTorch .pth
 * (zip or legacy format; read without PyTorch and without running any pickled code).
 * The kind is detected from the keys. */
noisear_status noisear_prior_load(noisear_context *ctx, const char *path, noisear_prior **out);

/* What a checkpoint may not say about its network. 0 means: from a `config.json` (or
 * `NAME.json`) beside the checkpoint when it has the key, else the file's own config, else the
 * authors' released value. */
typedef struct noisear_prior_load_params {
    int32_t heads;     /* NoiseAR attention heads ("n_heads"; the authors' checkpoints use 1) */
    int32_t svd_heads; /* NPNet singular-value branch attention heads ("svd_attention_heads"; 8) */
} noisear_prior_load_params;

noisear_prior_load_params noisear_prior_load_default_params(void);
/* noisear_prior_load with options (params may be NULL: the defaults). */
noisear_status noisear_prior_load_ex(noisear_context *ctx, const char *path, const noisear_prior_load_params *params,
                                     noisear_prior **out);
void noisear_prior_free(noisear_prior *prior);
/* The message of the last failure on the prior's context (the prior keeps its context alive,
 * so this works after noisear_context_free too); "" when none. */
const char *noisear_prior_last_error(const noisear_prior *prior);
noisear_prior_kind noisear_prior_get_kind(const noisear_prior *prior);
/* The latent of one image: channels, height, width. */
void noisear_prior_latent_shape(const noisear_prior *prior, int64_t shape[3]);
/* What the prior needs of prompt embeddings [B, T, D]: for NoiseAR the width D (any T); for
 * NPNet, which projects the flattened T x D, the product T * D (any T and D with that product;
 * the authors' SDXL checkpoints take 77 x 2048). */
int64_t noisear_prior_embed_size(const noisear_prior *prior);

typedef struct noisear_sample_params {
    uint64_t seed;          /* PHILOX: image b draws from stream seed + b; TORCH: the batch from seed */
    float temperature;      /* scale of the predicted standard deviation (default 0.5) */
    float strength;         /* 0: the Gaussian noise of the same draws ... 1: the prior (default 1) */
    const float *eps;       /* optional standard-normal draws to replay, [B, C, H, W]; NULL: from seed */
    bool uncached;          /* re-run the prefix per patch instead of the key/value cache */
    noisear_progress_callback progress; /* optional, per patch */
    void *progress_user_data;
    noisear_rng rng;        /* the source of the standard normals when eps is NULL (default PHILOX) */
} noisear_sample_params;

noisear_sample_params noisear_sample_default_params(void);

/* NoiseAR: initial latents out [B, C, H, W] (out_count = B*C*H*W floats) from prompt
 * embeddings [B, T, D]. */
noisear_status noisear_prior_sample(noisear_prior *prior, const float *prompt_embeds, int64_t batch,
                                    int64_t tokens, int64_t dim, const noisear_sample_params *params,
                                    float *out, size_t out_count);

/* NoiseAR: exact log-likelihood of noises [B, C, H, W] at `temperature` (1 = the model's own
 * density): teacher-forced mu and logvar (latent-shaped, NULL to skip) and log_prob [B] in nats. */
noisear_status noisear_prior_score(noisear_prior *prior, const float *prompt_embeds, int64_t batch,
                                   int64_t tokens, int64_t dim, const float *noise, size_t noise_count,
                                   float temperature, float *mu, float *logvar, float *log_prob);

/* NPNet: the golden noise [B, C, H, W] for an initial noise [B, C, H, W] and prompt
 * embeddings [B, T, D]. */
noisear_status noisear_prior_golden(noisear_prior *prior, const float *noise, size_t noise_count,
                                    const float *prompt_embeds, int64_t batch, int64_t tokens, int64_t dim,
                                    float *out, size_t out_count);

/* ---- the shapes world: prompt in, RGB images out --------------------------------------- */

typedef struct noisear_shapes_params {
    const char *prompt;       /* e.g. "a red circle to the left of a blue square" */
    uint64_t seed;            /* image i uses seed + i */
    int32_t batch;            /* images (default 1) */
    int32_t steps;            /* sampler steps (default 30) */
    double cfg;               /* classifier-free guidance (default 5) */
    const char *sampler;      /* "ddim", "dpmpp2m" (default), "euler", "euler-a", "ddpm" */
    const char *prior;        /* "gaussian" (default), "noisear", "npnet" */
    const char *prior_path;   /* prior weights; NULL: the shipped ones */
    float temperature;        /* NoiseAR temperature (default 0.5) */
    float strength;           /* NoiseAR strength (default 1) */
    const char *model_path;   /* the text-to-image model; NULL: $NOISEAR_MODEL or the shipped one */
    noisear_progress_callback progress; /* optional, per sampler step */
    void *progress_user_data;
    noisear_rng rng;          /* initial noise: PHILOX (image i from seed + i, default) or TORCH */
} noisear_shapes_params;

noisear_shapes_params noisear_shapes_default_params(void);

/* Samples `batch` images of the shapes-world model: 8-bit RGB, row-major, each width*height*3
 * bytes, written one after the other into `rgb` (rgb_bytes = batch * width * height * 3).
 * width/height (may be NULL) receive the image size (32). */
noisear_status noisear_shapes_sample(noisear_context *ctx, const noisear_shapes_params *params,
                                     uint8_t *rgb, size_t rgb_bytes, int32_t *width, int32_t *height);

/* The exact prompt-fidelity reward of an 8-bit RGB image (width*height*3 bytes) for a prompt:
 * the fraction of its facts that hold, in [0, 1]. */
noisear_status noisear_shapes_reward(const uint8_t *rgb, int32_t width, int32_t height, const char *prompt,
                                     double *score);

#ifdef __cplusplus
}
#endif

#endif /* NOISEAR_H */
