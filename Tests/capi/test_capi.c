/* Exercises every function of include/noisear.h, error paths included, as a C host would.
 *
 *   test_capi PTH_DIR WORK_DIR
 *
 * WORK_DIR holds inputs written by the Swift test (CAPITests.swift): dims.txt ("B T D" of the
 * NoiseAR inputs, then of the NPNet inputs) and raw little-endian float32 arrays; the program
 * writes its outputs there for the Swift test to compare with the reference fixtures.
 * Prints "N passed, M failed" and exits non-zero when anything failed. */
#include "noisear.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0, failed = 0;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            passed++;                                                     \
        } else {                                                          \
            failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
        }                                                                 \
    } while (0)

static char work[4096], pth[4096];

static const char *path(const char *dir, const char *name) {
    static char buf[8][4200];
    static int slot = 0;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, name);
    return buf[slot];
}

static float *read_floats(const char *name, size_t count) {
    FILE *f = fopen(path(work, name), "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", name); exit(2); }
    float *p = malloc(count * sizeof(float));
    size_t n = fread(p, sizeof(float), count, f);
    fclose(f);
    if (n != count) { fprintf(stderr, "%s: %zu of %zu floats\n", name, n, count); exit(2); }
    return p;
}

static void write_floats(const char *name, const float *p, size_t count) {
    FILE *f = fopen(path(work, name), "wb");
    if (!f || fwrite(p, sizeof(float), count, f) != count) { fprintf(stderr, "cannot write %s\n", name); exit(2); }
    fclose(f);
}

static int log_messages = 0;
static void on_log(int level, const char *message, void *user_data) {
    (void)level;
    (void)message;
    (*(int *)user_data)++;
}

static bool stop_after_two(int done, int total, void *user_data) {
    (void)total;
    (*(int *)user_data)++;
    return done < 2;
}

static bool count_progress(int done, int total, void *user_data) {
    (void)done;
    (void)total;
    (*(int *)user_data)++;
    return true;
}

/* Two threads, two contexts, the same request: both must equal the single-thread result. */
struct job {
    const char *prior_path; /* own copy: path() is not thread-safe */
    int64_t b, t, d;
    const float *embeds;
    float *out;
    size_t count;
    noisear_status status;
};

static void *sample_on_own_context(void *arg) {
    struct job *j = arg;
    noisear_context_params cp = noisear_context_default_params();
    cp.device = "cpu";
    noisear_context *ctx = NULL;
    noisear_prior *prior = NULL;
    j->status = noisear_context_create(&cp, &ctx);
    if (j->status == NOISEAR_OK) j->status = noisear_prior_load(ctx, j->prior_path, &prior);
    noisear_sample_params sp = noisear_sample_default_params();
    sp.seed = 42;
    for (int rep = 0; rep < 3 && j->status == NOISEAR_OK; rep++)
        j->status = noisear_prior_sample(prior, j->embeds, j->b, j->t, j->d, &sp, j->out, j->count);
    noisear_prior_free(prior);
    noisear_context_free(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: test_capi PTH_DIR WORK_DIR\n"); return 2; }
    snprintf(pth, sizeof pth, "%s", argv[1]);
    snprintf(work, sizeof work, "%s", argv[2]);
    long long nb, nt, nd, pb, pt, pd;
    FILE *dims = fopen(path(work, "dims.txt"), "r");
    if (!dims || fscanf(dims, "%lld %lld %lld %lld %lld %lld", &nb, &nt, &nd, &pb, &pt, &pd) != 6) {
        fprintf(stderr, "cannot read dims.txt\n");
        return 2;
    }
    fclose(dims);

    /* versions and names */
    CHECK(noisear_abi_version() == NOISEAR_ABI_VERSION, "abi %d", noisear_abi_version());
    CHECK(strlen(noisear_version()) > 0, "empty version");
    CHECK(strcmp(noisear_status_name(NOISEAR_ERR_SHAPE), "NOISEAR_ERR_SHAPE") == 0, "%s", noisear_status_name(NOISEAR_ERR_SHAPE));
    CHECK(strlen(noisear_status_name((noisear_status)12345)) > 0, "unknown status name");
    noisear_set_log_callback(on_log, &log_messages);

    /* devices */
    int count = noisear_device_count();
    CHECK(count >= 1, "%d devices", count);
    noisear_device_info info;
    CHECK(noisear_device_get(0, &info) == NOISEAR_OK && strcmp(info.id, "cpu") == 0, "device 0 is %s", info.id);
    CHECK(info.memory_bytes > 0 && info.compute_units > 0, "cpu memory %llu", (unsigned long long)info.memory_bytes);
    CHECK(noisear_device_get(count, &info) == NOISEAR_ERR_INVALID_ARGUMENT, "device past the end");
    CHECK(strstr(noisear_last_error(), "no device") != NULL, "last error: %s", noisear_last_error());
    CHECK(noisear_device_get(0, NULL) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL out");

    /* contexts */
    noisear_context *ctx = (noisear_context *)0x1;
    noisear_context_params cp = noisear_context_default_params();
    CHECK(cp.device == NULL, "default device");
    cp.device = "tpu:3";
    CHECK(noisear_context_create(&cp, &ctx) == NOISEAR_ERR_DEVICE && ctx == NULL, "unknown device");
    CHECK(strstr(noisear_last_error(), "tpu:3") != NULL, "last error: %s", noisear_last_error());
    CHECK(noisear_context_create(&cp, NULL) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL out");
    cp.device = "cpu";
    CHECK(noisear_context_create(&cp, &ctx) == NOISEAR_OK && ctx != NULL, "cpu context: %s", noisear_last_error());
    CHECK(strcmp(noisear_context_device(ctx), "cpu") == 0, "device %s", noisear_context_device(ctx));
    CHECK(strcmp(noisear_context_last_error(ctx), "") == 0, "fresh context error");

    /* loading priors */
    noisear_prior *prior = (noisear_prior *)0x1;
    CHECK(noisear_prior_load(ctx, path(work, "missing.pth"), &prior) == NOISEAR_ERR_IO && prior == NULL, "missing file");
    CHECK(strstr(noisear_context_last_error(ctx), "missing.pth") != NULL, "%s", noisear_context_last_error(ctx));
    noisear_status evil = noisear_prior_load(ctx, path(pth, "evil.pth"), &prior);
    CHECK(evil == NOISEAR_ERR_FORMAT && prior == NULL, "evil.pth: %s", noisear_status_name(evil));
    CHECK(strlen(noisear_context_last_error(ctx)) > 0, "no message for evil.pth");
    CHECK(noisear_prior_load(ctx, NULL, &prior) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL path");
    {   /* a malformed .pth (a pickle without PyTorch's magic number) is a format error, not I/O */
        FILE *f = fopen(path(work, "bad_magic.pth"), "wb");
        const unsigned char bad[] = {0x80, 0x02, 0x4B, 0x07, 0x2E};
        fwrite(bad, 1, sizeof bad, f);
        fclose(f);
        noisear_status st = noisear_prior_load(ctx, path(work, "bad_magic.pth"), &prior);
        CHECK(st == NOISEAR_ERR_FORMAT && prior == NULL, "bad magic: %s", noisear_status_name(st));
        CHECK(strstr(noisear_context_last_error(ctx), "not a PyTorch checkpoint") != NULL, "%s", noisear_context_last_error(ctx));
        CHECK(strcmp(noisear_status_name(NOISEAR_ERR_OOM), "NOISEAR_ERR_OOM") == 0, "OOM status name");
    }
    CHECK(noisear_prior_load(NULL, path(pth, "noisear_tiny.pth"), &prior) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL context");
    CHECK(noisear_prior_load(ctx, path(pth, "noisear_tiny.pth"), &prior) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_get_kind(prior) == NOISEAR_PRIOR_NOISEAR, "kind");
    int64_t shape[3];
    noisear_prior_latent_shape(prior, shape);
    CHECK(noisear_prior_embed_size(prior) == nd, "embed size %lld", (long long)noisear_prior_embed_size(prior));
    size_t latent = (size_t)(nb * shape[0] * shape[1] * shape[2]);
    float *embeds = read_floats("noisear_embeds.f32", (size_t)(nb * nt * nd));
    float *eps = read_floats("noisear_eps.f32", latent);
    float *noise = read_floats("noisear_noise.f32", latent);
    float *out = calloc(latent, sizeof(float)), *out2 = calloc(latent, sizeof(float));

    /* NoiseAR sampling: replayed eps (compared with the fixture by the Swift test), then seeds */
    noisear_sample_params sp = noisear_sample_default_params();
    CHECK(sp.temperature == 0.5f && sp.strength == 1.0f && sp.eps == NULL, "sample defaults");
    sp.eps = eps;
    int progress_calls = 0;
    sp.progress = count_progress;
    sp.progress_user_data = &progress_calls;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    CHECK(progress_calls == (int)((shape[1] / 2) * (shape[2] / 2)) || progress_calls > 0, "progress %d", progress_calls);
    write_floats("c_sample_eps.f32", out, latent);
    sp.eps = NULL;
    sp.progress = NULL;
    sp.seed = 42;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    write_floats("c_sample_seed42.f32", out, latent);
    sp.uncached = true;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out2, latent) == NOISEAR_OK, "uncached");
    double diff = 0;
    for (size_t i = 0; i < latent; i++) diff = fmax(diff, fabs(out[i] - out2[i]));
    CHECK(diff < 1e-4, "cached vs uncached %g", diff);
    sp.uncached = false;

    /* sampling errors */
    CHECK(noisear_prior_sample(prior, NULL, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL embeds");
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd + 1, &sp, out, latent) == NOISEAR_ERR_SHAPE, "wrong D");
    CHECK(strstr(noisear_context_last_error(ctx), "D = ") != NULL, "%s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent - 1) == NOISEAR_ERR_SHAPE, "short out");
    CHECK(noisear_prior_sample(prior, embeds, 0, nt, nd, &sp, out, latent) == NOISEAR_ERR_SHAPE, "batch 0");
    CHECK(noisear_prior_sample(prior, embeds, -1, nt, nd, &sp, out, latent) == NOISEAR_ERR_SHAPE, "batch -1");
    CHECK(noisear_prior_sample(prior, embeds, INT64_MAX, INT64_MAX, nd, &sp, out, latent) == NOISEAR_ERR_SHAPE, "overflow");
    CHECK(noisear_prior_sample(NULL, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL prior");
    /* A huge batch with a small output buffer is refused before any work (it used to abort the
       host on a 512 GB allocation), and SIZE_MAX is named as the size it is. */
    CHECK(noisear_prior_sample(prior, embeds, (int64_t)1 << 31, 1, nd, &sp, out, latent) == NOISEAR_ERR_SHAPE, "huge batch");
    CHECK(strstr(noisear_context_last_error(ctx), "needs") != NULL, "%s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, SIZE_MAX) == NOISEAR_ERR_SHAPE, "SIZE_MAX out");
    CHECK(strstr(noisear_context_last_error(ctx), "18446744073709551615") != NULL, "%s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, NULL, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL out");
    /* Prompts of 2^40 tokens: the working memory is estimated and refused before the
       embeddings are read or anything is allocated. */
    CHECK(noisear_prior_sample(prior, embeds, nb, (int64_t)1 << 40, nd, &sp, out, latent) == NOISEAR_ERR_OOM,
          "huge prompt: %s", noisear_context_last_error(ctx));
    CHECK(strstr(noisear_context_last_error(ctx), "out of memory") != NULL, "%s", noisear_context_last_error(ctx));
    /* A message from noisear_context_last_error lives as long as its context: a later failure on
       the same context does not free it (AddressSanitizer saw a use after free here). */
    const char *first_message = noisear_context_last_error(ctx);
    char first_copy[512];
    snprintf(first_copy, sizeof first_copy, "%s", first_message);
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd + 1, &sp, out, latent) == NOISEAR_ERR_SHAPE, "wrong D again");
    CHECK(strcmp(first_message, first_copy) == 0, "an earlier message changed or was freed");
    sp.temperature = -1;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "temperature -1");
    sp.temperature = 0.5f;
    sp.strength = 2;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "strength 2");
    sp.strength = 1;
    float saved = embeds[3];
    embeds[3] = NAN;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "NaN embeds");
    CHECK(strstr(noisear_context_last_error(ctx), "nan") != NULL, "%s", noisear_context_last_error(ctx));
    embeds[3] = saved;
    int calls = 0;
    sp.progress = stop_after_two;
    sp.progress_user_data = &calls;
    CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_ERR_CANCELLED && calls == 2, "cancel: %d calls", calls);
    sp.progress = NULL;

    {   /* a prior outlives its freed context, and its errors are still readable */
        noisear_context *ctx2 = NULL;
        noisear_prior *p2 = NULL;
        CHECK(noisear_context_create(&cp, &ctx2) == NOISEAR_OK, "%s", noisear_last_error());
        CHECK(noisear_prior_load(ctx2, path(pth, "noisear_tiny.pth"), &p2) == NOISEAR_OK, "%s", noisear_context_last_error(ctx2));
        noisear_context_free(ctx2);
        CHECK(noisear_prior_sample(p2, embeds, nb, nt, nd + 1, &sp, out, latent) == NOISEAR_ERR_SHAPE, "wrong D after free");
        CHECK(strstr(noisear_prior_last_error(p2), "D = ") != NULL, "%s", noisear_prior_last_error(p2));
        CHECK(noisear_prior_sample(p2, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_OK, "%s", noisear_prior_last_error(p2));
        noisear_prior_free(p2);
        CHECK(strstr(noisear_prior_last_error(NULL), "NULL") != NULL, "NULL prior message");
    }

    /* scoring */
    float *mu = calloc(latent, sizeof(float)), *logvar = calloc(latent, sizeof(float)), *log_prob = calloc((size_t)nb, sizeof(float));
    CHECK(noisear_prior_score(prior, embeds, nb, nt, nd, noise, latent, 1.0f, mu, logvar, log_prob) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    write_floats("c_mu.f32", mu, latent);
    write_floats("c_logvar.f32", logvar, latent);
    write_floats("c_log_prob.f32", log_prob, (size_t)nb);
    CHECK(noisear_prior_score(prior, embeds, nb, nt, nd, noise, latent, 1.0f, NULL, NULL, log_prob) == NOISEAR_OK, "log_prob only");
    CHECK(noisear_prior_score(prior, embeds, nb, nt, nd, noise, latent, 1.0f, mu, logvar, NULL) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL log_prob");
    CHECK(noisear_prior_score(prior, embeds, nb, nt, nd, noise, latent, 0.0f, mu, logvar, log_prob) == NOISEAR_ERR_INVALID_ARGUMENT, "temperature 0");
    CHECK(noisear_prior_score(prior, embeds, nb, nt, nd, noise, latent + 1, 1.0f, mu, logvar, log_prob) == NOISEAR_ERR_SHAPE, "noise count");
    CHECK(noisear_prior_golden(prior, noise, latent, embeds, nb, nt, nd, out, latent) == NOISEAR_ERR_UNSUPPORTED, "golden on NoiseAR");

    /* the other layouts and precisions of the same weights */
    const char *variants[] = {"noisear_tiny_wrapped.pth", "noisear_tiny_legacy.pth", "noisear_tiny_f16.pth", "noisear_tiny_bf16.pth"};
    const char *outs[] = {"c_sample_wrapped.f32", "c_sample_legacy.f32", "c_sample_f16.f32", "c_sample_bf16.f32"};
    sp.eps = eps;
    for (int v = 0; v < 4; v++) {
        noisear_prior *p = NULL;
        CHECK(noisear_prior_load(ctx, path(pth, variants[v]), &p) == NOISEAR_OK, "%s: %s", variants[v], noisear_context_last_error(ctx));
        CHECK(noisear_prior_sample(p, embeds, nb, nt, nd, &sp, out, latent) == NOISEAR_OK, "%s sample", variants[v]);
        write_floats(outs[v], out, latent);
        noisear_prior_free(p);
    }
    sp.eps = NULL;

    /* NPNet */
    noisear_prior *np = NULL;
    CHECK(noisear_prior_load(ctx, path(pth, "npnet_tiny.pth"), &np) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_get_kind(np) == NOISEAR_PRIOR_NPNET, "npnet kind");
    int64_t nshape[3];
    noisear_prior_latent_shape(np, nshape);
    CHECK(noisear_prior_embed_size(np) == pt * pd, "npnet embeds %lld", (long long)noisear_prior_embed_size(np));
    size_t nlatent = (size_t)(pb * nshape[0] * nshape[1] * nshape[2]);
    float *pnoise = read_floats("npnet_noise.f32", nlatent);
    float *pembeds = read_floats("npnet_embeds.f32", (size_t)(pb * pt * pd));
    float *golden = calloc(nlatent, sizeof(float));
    CHECK(noisear_prior_golden(np, pnoise, nlatent, pembeds, pb, pt, pd, golden, nlatent) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    write_floats("c_golden.f32", golden, nlatent);
    noisear_prior *old = NULL;
    CHECK(noisear_prior_load(ctx, path(pth, "npnet_tiny_oldtimm.pth"), &old) == NOISEAR_OK, "old timm: %s", noisear_context_last_error(ctx));
    CHECK(noisear_prior_golden(old, pnoise, nlatent, pembeds, pb, pt, pd, golden, nlatent) == NOISEAR_OK, "old timm golden");
    write_floats("c_golden_oldtimm.f32", golden, nlatent);
    noisear_prior_free(old);
    CHECK(noisear_prior_golden(np, pnoise, nlatent, pembeds, pb, pt + 1, pd, golden, nlatent) == NOISEAR_ERR_SHAPE, "npnet tokens");
    CHECK(noisear_prior_golden(np, pnoise, nlatent, pembeds, pb, pt * pd, 1, golden, nlatent) == NOISEAR_OK, "npnet [B, T*D, 1]");
    CHECK(noisear_prior_score(np, pembeds, pb, pt, pd, pnoise, nlatent, 1.0f, NULL, NULL, log_prob) == NOISEAR_ERR_UNSUPPORTED, "score npnet");
    CHECK(noisear_prior_sample(np, pembeds, pb, pt, pd, &sp, golden, nlatent) == NOISEAR_ERR_UNSUPPORTED, "sample npnet");
    noisear_prior_free(np);

    /* concurrency: two threads, two contexts */
    sp.seed = 42;
    struct job jobs[2];
    pthread_t threads[2];
    char prior_path[4200];
    snprintf(prior_path, sizeof prior_path, "%s", path(pth, "noisear_tiny.pth"));
    for (int i = 0; i < 2; i++) {
        jobs[i] = (struct job){prior_path, nb, nt, nd, embeds, calloc(latent, sizeof(float)), latent, NOISEAR_ERR_INTERNAL};
        pthread_create(&threads[i], NULL, sample_on_own_context, &jobs[i]);
    }
    float *single = read_floats("c_sample_seed42.f32", latent);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].status == NOISEAR_OK, "thread %d: %s", i, noisear_status_name(jobs[i].status));
        CHECK(memcmp(jobs[i].out, single, latent * sizeof(float)) == 0, "thread %d differs from the single-thread sample", i);
    }

    /* the shapes world */
    noisear_shapes_params shp = noisear_shapes_default_params();
    CHECK(shp.batch == 1 && shp.steps == 30 && shp.cfg == 5.0, "shapes defaults");
    shp.prompt = "a red circle to the left of a blue square";
    shp.seed = 7;
    shp.batch = 2;
    shp.steps = 4;
    int steps_seen = 0;
    shp.progress = count_progress;
    shp.progress_user_data = &steps_seen;
    unsigned char *rgb = calloc(2 * 32 * 32 * 3, 1);
    int32_t w = 0, h = 0;
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
    CHECK(w == 32 && h == 32 && steps_seen == 4, "%dx%d, %d steps", w, h, steps_seen);
    FILE *f = fopen(path(work, "c_shapes.rgb"), "wb");
    fwrite(rgb, 1, 2 * 32 * 32 * 3, f);
    fclose(f);
    double score = -1;
    CHECK(noisear_shapes_reward(rgb, 32, 32, shp.prompt, &score) == NOISEAR_OK && score >= 0 && score <= 1, "score %g", score);
    CHECK(noisear_shapes_reward(rgb, 32, 32, "a purple circle", &score) == NOISEAR_ERR_INVALID_ARGUMENT, "bad reward prompt");
    CHECK(noisear_shapes_reward(rgb, 0, 32, shp.prompt, &score) == NOISEAR_ERR_SHAPE, "zero width");
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 32 * 32 * 3, &w, &h) == NOISEAR_ERR_SHAPE, "rgb too small");
    shp.prompt = "a purple circle";
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_INVALID_ARGUMENT, "bad prompt");
    CHECK(strstr(noisear_context_last_error(ctx), "purple") != NULL, "%s", noisear_context_last_error(ctx));
    shp.prompt = "a red circle";
    shp.prior = "noisear";
    shp.prior_path = path(pth, "npnet_tiny.pth");
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) != NOISEAR_OK, "an NPNet file as the NoiseAR prior");
    shp.prior = "bogus";
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_INVALID_ARGUMENT, "bogus prior");
    shp.prior = NULL;
    shp.prior_path = NULL;
    shp.sampler = "heun";
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_INVALID_ARGUMENT, "bad sampler");
    shp.sampler = NULL;
    calls = 0;
    shp.progress = stop_after_two;
    shp.progress_user_data = &calls;
    CHECK(noisear_shapes_sample(ctx, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_CANCELLED && calls == 2, "cancel shapes");
    CHECK(noisear_shapes_sample(NULL, &shp, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL ctx");
    CHECK(noisear_shapes_sample(ctx, NULL, rgb, 2 * 32 * 32 * 3, &w, &h) == NOISEAR_ERR_INVALID_ARGUMENT, "NULL params");

    /* torch-compatible noise: the first values of torch.randn(5, generator=manual_seed(42))
       and of a 16-element draw (torch's other path), and ComfyUI's batch_index draws */
    {
        float small[5], big[32], pick[16];
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 42, 1, NULL, small, 5) == NOISEAR_OK, "%s", noisear_last_error());
        CHECK(fabsf(small[0] - 0.33669037f) < 1e-6f && fabsf(small[1] - 0.12880941f) < 1e-6f, "torch seed 42: %g %g", small[0], small[1]);
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 0, 2, NULL, big, 32) == NOISEAR_OK, "%s", noisear_last_error());
        CHECK(fabsf(big[0] + 1.1258398f) < 1e-6f, "torch seed 0, 32 elements: %g", big[0]);
        int64_t idx[2] = {1, 1};
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 0, 2, idx, pick, 32 - 16) == NOISEAR_OK, "%s", noisear_last_error());
        CHECK(memcmp(pick, pick + 8, 8 * sizeof(float)) == 0, "a repeated batch_index gives the same draw");
        CHECK(noisear_gaussian_noise((noisear_rng)7, 0, 1, NULL, small, 5) == NOISEAR_ERR_INVALID_ARGUMENT, "bad rng");
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 0, 2, NULL, small, 5) == NOISEAR_ERR_SHAPE, "count not a multiple");
        idx[0] = -1;
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 0, 2, idx, pick, 16) == NOISEAR_ERR_INVALID_ARGUMENT, "negative index");
        /* a NoiseAR sample with rng TORCH is the sample with eps = torch.randn of the latent */
        float *teps = calloc(latent, sizeof(float)), *a = calloc(latent, sizeof(float)), *b = calloc(latent, sizeof(float));
        CHECK(noisear_gaussian_noise(NOISEAR_RNG_TORCH, 11, 1, NULL, teps, latent) == NOISEAR_OK, "%s", noisear_last_error());
        noisear_sample_params tp = noisear_sample_default_params();
        tp.seed = 11;
        tp.rng = NOISEAR_RNG_TORCH;
        CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &tp, a, latent) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
        tp.rng = NOISEAR_RNG_PHILOX;
        tp.eps = teps;
        CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &tp, b, latent) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
        CHECK(memcmp(a, b, latent * sizeof(float)) == 0, "rng TORCH is eps = torch.randn");
        tp.eps = NULL;
        tp.rng = (noisear_rng)9;
        CHECK(noisear_prior_sample(prior, embeds, nb, nt, nd, &tp, b, latent) == NOISEAR_ERR_INVALID_ARGUMENT, "bad params.rng");
        free(teps); free(a); free(b);
    }

    /* What a checkpoint cannot say: a 4-head NoiseAR whose file has no config (heads4.safetensors,
       written by the Swift side) gives the reference sample only with heads = 4, given here or
       by a config.json beside it. */
    {
        long long hb, ht, hd, hc, hs;
        FILE *hf = fopen(path(work, "heads4_dims.txt"), "r");
        if (hf && fscanf(hf, "%lld %lld %lld %lld %lld", &hb, &ht, &hd, &hc, &hs) == 5) {
            size_t hn = (size_t)(hb * hc * hs * hs);
            float *he = read_floats("heads4_embeds.f32", (size_t)(hb * ht * hd)), *hx = read_floats("heads4_eps.f32", hn);
            float *ho = calloc(hn, sizeof(float));
            noisear_prior_load_params lp = noisear_prior_load_default_params();
            CHECK(lp.heads == 0 && lp.svd_heads == 0, "load defaults");
            noisear_sample_params hp = noisear_sample_default_params();
            hp.eps = hx;
            const char *files[3] = {"heads4.safetensors", "heads4.safetensors", "heads4_dir/model.safetensors"};
            const char *outs[3] = {"c_heads4_given.f32", "c_heads4_default.f32", "c_heads4_config.f32"};
            for (int k = 0; k < 3; k++) {
                noisear_prior *hpri = NULL;
                lp.heads = k == 0 ? 4 : 0;
                CHECK(noisear_prior_load_ex(ctx, path(work, files[k]), &lp, &hpri) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
                CHECK(noisear_prior_sample(hpri, he, hb, ht, hd, &hp, ho, hn) == NOISEAR_OK, "%s", noisear_context_last_error(ctx));
                write_floats(outs[k], ho, hn);
                noisear_prior_free(hpri);
            }
            noisear_prior *bad = NULL;
            lp.heads = -2;
            CHECK(noisear_prior_load_ex(ctx, path(work, files[0]), &lp, &bad) == NOISEAR_ERR_INVALID_ARGUMENT && bad == NULL, "heads -2");
            lp.heads = 3;  /* d_model 64 is not divisible by 3 */
            CHECK(noisear_prior_load_ex(ctx, path(work, files[0]), &lp, &bad) != NOISEAR_OK && bad == NULL, "heads 3");
            free(he); free(hx); free(ho);
        } else {
            CHECK(0, "heads4_dims.txt missing");
        }
        if (hf) fclose(hf);
    }

    CHECK(log_messages > 0, "the log callback saw no message");
    noisear_set_log_callback(NULL, NULL);

    noisear_prior_free(prior);
    noisear_prior_free(NULL);
    noisear_context_free(ctx);
    noisear_context_free(NULL);
    free(embeds); free(eps); free(noise); free(out); free(out2); free(mu); free(logvar); free(log_prob);
    free(pnoise); free(pembeds); free(golden); free(single); free(rgb);
    for (int i = 0; i < 2; i++) free(jobs[i].out);

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
