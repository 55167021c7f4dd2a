// Golden values from llama.cpp's own ggml-cpu build, for
// src/backend/cpu/quant/testdata/ggml_golden.txt. Not part of the product:
// build and run it with ./run.sh against a llama.cpp CPU build (see there).
//
// Inputs come from a splitmix64 stream that the Rust test regenerates
// exactly, so only hashes and result bits are recorded.

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"

typedef double ggml_float;
void ggml_vec_dot_f16(int n, float *s, size_t bs, ggml_fp16_t *x, size_t bx, ggml_fp16_t *y, size_t by, int nrc);
ggml_float ggml_vec_soft_max_f32(const int n, float *y, const float *x, float max);
void ggml_vec_silu_f32(const int n, float *y, const float *x);
void ggml_vec_swiglu_f32(const int n, float *y, const float *x, const float *g);
extern ggml_fp16_t ggml_table_gelu_f16[1 << 16];

static uint64_t sm(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Uniform in [-1, 1), exactly representable.
static float uf(uint64_t *s) { return (float)(sm(s) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }

static void gen_row(uint64_t seed, int n, int kind, float *x) {
    uint64_t s = seed;
    for (int i = 0; i < n; i++) x[i] = uf(&s);
    switch (kind) {
    case 1: for (int i = 0; i < n; i++) x[i] *= 1e-3f; break;
    case 2: for (int i = 0; i < n; i++) x[i] *= 3000.0f; break;
    case 3: for (int i = 0; i < n; i++) if ((i / 32) % 2 == 0) x[i] = 0.0f; break;
    case 4: x[(seed * 7) % (uint64_t)n] = 40.0f; break;
    case 5: for (int i = 0; i < n; i++) if ((i / 64) % 2 == 0) x[i] = 0.25f; break;
    case 6:
        // Half-integers with a block maximum of 127: the Q8 multiplier is 1,
        // so every element is a rounding tie.
        for (int i = 0; i < n; i++) x[i] = (float)((int)(sm(&s) % 255) - 127) * 0.5f;
        for (int i = 0; i < n; i += 32) x[i] = 127.0f;
        break;
    case 7:
        // The largest magnitude both negative and positive in each Q8_K
        // super-block, the negative one first in every other: the per-row
        // and the 4-row Q8_K quantizers pick opposite signs there.
        for (int i = 0; i + 256 <= n; i += 256) {
            x[i + 3] = (i / 256) % 2 ? 5.0f : -5.0f;
            x[i + 200] = -x[i + 3];
        }
        break;
    }
}

static uint64_t fnv(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

// y = W x through a real ggml graph, with W in the CPU_REPACK buffer when
// that buffer accepts it (as llama.cpp loads weights): the arithmetic
// llama.cpp really runs, not just the type's vec_dot.
static void graph_matmul_q(enum ggml_type ty, int n, int rows, int cols, const uint8_t *q, const float *x, float *y) {
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    typedef ggml_backend_buffer_type_t *(*extra_fn)(ggml_backend_dev_t);
    extra_fn get_extra = (extra_fn)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t repack = NULL;
    for (ggml_backend_buffer_type_t *b = get_extra(dev); b && *b; b++) {
        if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) repack = *b;
    }
    struct ggml_init_params ip = {64 * ggml_tensor_overhead() + ggml_graph_overhead(), NULL, true};
    struct ggml_context *cw = ggml_init(ip);
    struct ggml_context *cx = ggml_init(ip);
    struct ggml_tensor *W = ggml_new_tensor_2d(cw, ty, n, rows);
    struct ggml_tensor *X = ggml_new_tensor_2d(cx, GGML_TYPE_F32, n, cols);
    struct ggml_tensor *Y = ggml_mul_mat(cx, W, X);
    // The x86 repack rules (repack.cpp): Q4_0 and Q4_K with AVX2, Q2_K with
    // AVX-512, when the row count is a multiple of 8. Other types stay in
    // the plain CPU buffer, as llama.cpp leaves them.
    int repacked = (ty == GGML_TYPE_Q4_0 || ty == GGML_TYPE_Q4_K || ty == GGML_TYPE_Q2_K) && rows % 8 == 0;
    ggml_backend_buffer_t bw =
        ggml_backend_alloc_ctx_tensors_from_buft(cw, repacked ? repack : ggml_backend_cpu_buffer_type());
    ggml_backend_buffer_t bx = ggml_backend_alloc_ctx_tensors(cx, be);
    size_t rb = ggml_row_size(ty, n);
    ggml_backend_tensor_set(W, q, 0, rb * rows);
    ggml_backend_tensor_set(X, x, 0, sizeof(float) * n * cols);
    struct ggml_cgraph *gf = ggml_new_graph(cx);
    ggml_build_forward_expand(gf, Y);
    ggml_backend_cpu_set_n_threads(be, 1);
    ggml_backend_graph_compute(be, gf);
    ggml_backend_tensor_get(Y, y, 0, sizeof(float) * rows * cols);
    ggml_backend_buffer_free(bw);
    ggml_backend_buffer_free(bx);
    ggml_free(cw);
    ggml_free(cx);
    ggml_backend_free(be);
}

// The same with float weights quantized by ggml's reference quantizer.
static void graph_matmul(enum ggml_type ty, int n, int rows, int cols, const float *w, const float *x, float *y) {
    size_t rb = ggml_row_size(ty, n);
    uint8_t *q = malloc(rb * rows);
    for (int r = 0; r < rows; r++) ggml_get_type_traits(ty)->from_float_ref(w + (size_t)r * n, q + r * rb, n);
    graph_matmul_q(ty, n, rows, cols, q, x, y);
    free(q);
}

// One prefill record: y = W x for `cols` columns through the graph, printed
// as one hash per output column (its `rows` floats).
static void print_prefill(const char *tag, enum ggml_type ty, int n, int rows, int seed, int cols, const uint8_t *q,
                          const float *x, float *y) {
    graph_matmul_q(ty, n, rows, cols, q, x, y);
    printf("%s %s %d %d %d %d", tag, ggml_type_name(ty), n, rows, seed, cols);
    for (int c = 0; c < cols; c++) printf(" %016llx", (unsigned long long)fnv(y + (size_t)c * rows, sizeof(float) * rows));
    printf("\n");
}

// Loads a 2-d tensor's raw bytes from a GGUF file; NULL when absent.
static uint8_t *load_tensor(const char *path, const char *name, enum ggml_type *ty, int *n, int *rows) {
    struct ggml_context *meta = NULL;
    struct gguf_init_params gp = {true, &meta};
    struct gguf_context *g = gguf_init_from_file(path, gp);
    if (!g) return NULL;
    uint8_t *q = NULL;
    int64_t id = gguf_find_tensor(g, name);
    struct ggml_tensor *t = ggml_get_tensor(meta, name);
    FILE *f = fopen(path, "rb");
    if (id >= 0 && t && f) {
        size_t bytes = ggml_nbytes(t);
        q = malloc(bytes);
        if (fseek(f, (long)(gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id)), SEEK_SET) != 0 ||
            fread(q, 1, bytes, f) != bytes) {
            free(q);
            q = NULL;
        }
        *ty = t->type;
        *n = (int)t->ne[0];
        *rows = (int)t->ne[1];
    }
    if (f) fclose(f);
    ggml_free(meta);
    gguf_free(g);
    return q;
}

// Prompt processing with repacked Q4_K weights: llama.cpp computes columns
// in groups of four with its repacked gemm and the last cols % 4 with the
// gemv. 24 rows take both the AVX-512 (16 rows) and the AVX2 (8 rows) loops
// of the gemm; 19 columns its 16-column loop as well.
static void prefill_records(const char *gemma) {
    const int ns[] = {256, 1024};
    const int rows = 24;
    float *w = malloc(sizeof(float) * 1024 * rows), *x = malloc(sizeof(float) * 1024 * 19);
    float *y = malloc(sizeof(float) * 640 * 19);
    uint8_t *q = malloc(ggml_row_size(GGML_TYPE_Q4_K, 1024) * rows);
    for (int ni = 0; ni < 2; ni++) {
        int n = ns[ni];
        size_t rb = ggml_row_size(GGML_TYPE_Q4_K, n);
        for (int seed = 0; seed < 4; seed++) {
            for (int r = 0; r < rows; r++) {
                gen_row(20000 + 100 * seed + r, n, r % 6, w + (size_t)r * n);
                ggml_get_type_traits(GGML_TYPE_Q4_K)->from_float_ref(w + (size_t)r * n, q + r * rb, n);
            }
            for (int c = 0; c < 19; c++) gen_row(20050 + 100 * seed + c, n, (seed + c) % 8, x + (size_t)c * n);
            for (int cols = 1; cols <= 9; cols++) print_prefill("prefill", GGML_TYPE_Q4_K, n, rows, seed, cols, q, x, y);
            print_prefill("prefill", GGML_TYPE_Q4_K, n, rows, seed, 19, q, x, y);
            // Column independence: the second group of four repeats column 0
            // in place and column 3 one place over, beside new columns.
            memcpy(x + 4 * (size_t)n, x, sizeof(float) * n);
            memcpy(x + 5 * (size_t)n, x + 3 * (size_t)n, sizeof(float) * n);
            print_prefill("prefill-indep", GGML_TYPE_Q4_K, n, rows, seed, 8, q, x, y);
        }
    }
    // Gemma 3's first attn_output (the tensor whose prefill this is about).
    enum ggml_type ty;
    int n, nrow;
    uint8_t *gq = gemma ? load_tensor(gemma, "blk.0.attn_output.weight", &ty, &n, &nrow) : NULL;
    if (gq && ty == GGML_TYPE_Q4_K && n == 1024 && nrow == 640) {
        for (int seed = 0; seed < 2; seed++) {
            for (int c = 0; c < 9; c++) gen_row(30000 + 100 * seed + c, n, (seed + c) % 8, x + (size_t)c * n);
            for (int cols = 1; cols <= 9; cols++) print_prefill("prefill-gemma", ty, n, nrow, seed, cols, gq, x, y);
        }
    } else if (gemma) {
        fprintf(stderr, "oracle: %s: no 640x1024 Q4_K blk.0.attn_output.weight\n", gemma);
        exit(1);
    }
    free(gq); free(w); free(x); free(y); free(q);
}

int main(int argc, char **argv) {
    ggml_cpu_init();
    // Matmuls through llama.cpp's real graph, with weights in the CPU_REPACK
    // buffer where it takes them (Q4_0, Q4_K and, with AVX-512, Q2_K are
    // repacked eight rows at a time): one column is the decode path, four
    // the prefill path.
    {
        const enum ggml_type gtypes[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
                                         GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,
                                         GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
        int n = 2048, rows = 16;
        float *w = malloc(sizeof(float) * n * rows), *xx = malloc(sizeof(float) * n * 4), *yy = malloc(sizeof(float) * rows * 4);
        for (size_t t = 0; t < sizeof(gtypes) / sizeof(gtypes[0]); t++) {
            for (int seed = 0; seed < 4; seed++) {
                for (int r = 0; r < rows; r++) gen_row(9000 + 100 * seed + r, n, r % 6, w + (size_t)r * n);
                for (int c = 0; c < 4; c++) gen_row(9050 + 100 * seed + c, n, (seed + c) % 6, xx + (size_t)c * n);
                for (int cols = 1; cols <= 4; cols += 3) {
                    graph_matmul(gtypes[t], n, rows, cols, w, xx, yy);
                    printf("graph %s %d %d %d %016llx\n", ggml_type_name(gtypes[t]), n, seed, cols,
                           (unsigned long long)fnv(yy, sizeof(float) * rows * cols));
                }
            }
        }
        free(w); free(xx); free(yy);
    }
    const enum ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
                                    GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,
                                    GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_F16,  GGML_TYPE_BF16,
                                    GGML_TYPE_F32};
    const int ns[] = {256, 2304, 4096};
    float *x = malloc(4096 * 4), *y = malloc(4096 * 4), *d = malloc(4096 * 4);
    uint8_t *wq = malloc(4096 * 8), *aq = malloc(4096 * 8);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        enum ggml_type ty = types[t];
        const struct ggml_type_traits *tr = ggml_get_type_traits(ty);
        const struct ggml_type_traits_cpu *tc = ggml_get_type_traits_cpu(ty);
        enum ggml_type at = tc->vec_dot_type;
        const struct ggml_type_traits_cpu *ta = ggml_get_type_traits_cpu(at);
        for (int ni = 0; ni < 3; ni++) {
            int n = ns[ni];
            if (ty == GGML_TYPE_F16 || ty == GGML_TYPE_BF16 || ty == GGML_TYPE_F32) n -= 3 * ni + 1;
            for (int kind = 0; kind < 7; kind++) {
                uint64_t seed = 1000 * t + 100 * ni + kind;
                gen_row(seed, n, kind, x);
                gen_row(seed + 50, n, (kind + 1) % 7, y);
                size_t wb = ggml_row_size(ty, n), ab = ggml_row_size(at, n);
                if (ty == GGML_TYPE_F32) memcpy(wq, x, wb);
                else tr->from_float_ref(x, wq, n);
                ta->from_float(y, aq, n);
                float s = 0;
                tc->vec_dot(n, &s, 0, wq, 0, aq, 0, 1);
                if (ty == GGML_TYPE_F32) memcpy(d, wq, wb);
                else tr->to_float(wq, d, n);
                printf("dot %s %d %d %016llx %016llx %08x %016llx\n", ggml_type_name(ty), n, kind,
                       (unsigned long long)fnv(wq, wb), (unsigned long long)fnv(aq, ab), bits(s),
                       (unsigned long long)fnv(d, 4 * (size_t)n));
            }
        }
    }
    // Activation quantizers on their own, including Q8_K.
    const enum ggml_type acts[] = {GGML_TYPE_Q8_0, GGML_TYPE_Q8_1, GGML_TYPE_Q8_K};
    for (int a = 0; a < 3; a++) {
        for (int kind = 0; kind < 7; kind++) {
            int n = 1024;
            gen_row(77 + kind, n, kind, x);
            ggml_get_type_traits_cpu(acts[a])->from_float(x, aq, n);
            size_t ab = ggml_row_size(acts[a], n);
            // ggml has no dequantizer for Q8_1: record zeros there.
            if (ggml_get_type_traits(acts[a])->to_float) ggml_get_type_traits(acts[a])->to_float(aq, d, n);
            else memset(d, 0, 4 * (size_t)n);
            printf("act %s %d %d %016llx %016llx\n", ggml_type_name(acts[a]), n, kind,
                   (unsigned long long)fnv(aq, ab), (unsigned long long)fnv(d, 4 * (size_t)n));
        }
    }
    // f16 attention dot, softmax, silu, swiglu.
    for (int n = 1; n <= 300; n += 37) {
        gen_row(500 + n, n, 0, x);
        gen_row(600 + n, n, 2, y);
        ggml_fp16_t *hx = (ggml_fp16_t *)wq, *hy = (ggml_fp16_t *)aq;
        for (int i = 0; i < n; i++) { hx[i] = ggml_fp32_to_fp16(x[i] * 4.0f); hy[i] = ggml_fp32_to_fp16(y[i] * 1e-3f); }
        float s = 0;
        ggml_vec_dot_f16(n, &s, 0, hx, 0, hy, 0, 1);
        printf("dotf16 %d %08x\n", n, bits(s));
        for (int i = 0; i < n; i++) x[i] *= 20.0f;
        float max = -INFINITY;
        for (int i = 0; i < n; i++) if (x[i] > max) max = x[i];
        double sum = ggml_vec_soft_max_f32(n, d, x, max);
        uint64_t sb; memcpy(&sb, &sum, 8);
        printf("softmax %d %016llx %016llx\n", n, (unsigned long long)fnv(d, 4 * (size_t)n), (unsigned long long)sb);
        for (int i = 0; i < n; i++) x[i] *= 0.5f;
        ggml_vec_silu_f32(n, d, x);
        printf("silu %d %016llx\n", n, (unsigned long long)fnv(d, 4 * (size_t)n));
        ggml_vec_swiglu_f32(n, d, x, y);
        printf("swiglu %d %016llx\n", n, (unsigned long long)fnv(d, 4 * (size_t)n));
    }
    printf("gelutable %016llx\n", (unsigned long long)fnv(ggml_table_gelu_f16, sizeof(ggml_table_gelu_f16)));
    prefill_records(argc > 1 ? argv[1] : NULL);
    return 0;
}
