#include "board.h"

#include <string.h>

#include "cobs.h"
#include "crc32.h"
#include "ekb_config.h"
#include "ekb_model.h"
#include "ekb_train.h"
#include "hal.h"
#include "le_bytes.h"
#include "sha256.h"

#define PROTO_VERSION 1
#define FRAME_OVERHEAD 14
#define FRAME_MAX (FRAME_OVERHEAD + EKB_MAX_PAYLOAD)
#define RAW_MAX (FRAME_MAX + FRAME_MAX / 254 + 2)
#define BODY_MAX (EKB_MAX_PAYLOAD - 2)

enum { T_INFO = 0x20, T_DEPLOY_BEGIN, T_DEPLOY_CHUNK, T_DEPLOY_END, T_INFER, T_TRAIN_LAST,
       T_GET_WEIGHTS, T_RESET, T_SET_WEIGHTS, T_BENCH, T_TRAIN_SETUP,
       T_TRAIN_STEP, T_EVAL, T_PARAMS_GET, T_PARAMS_SET, T_ERROR = 0x7F, T_REPLY = 0x80 };
enum { E_DAMAGED = 1, E_REFUSED, E_NO_FIT, E_CHUNK_CRC, E_HASH, E_NO_MODEL, E_BUSY };
enum { FORMAT_EKB = 2, DT_F32 = 0, DT_I8 = 1 };

static uint8_t raw[RAW_MAX];     /* bytes of the packet being received */
static size_t raw_len;
static int raw_overflow;
static uint8_t rx[FRAME_MAX];    /* the decoded request frame */
static uint8_t tx[FRAME_MAX];    /* the last reply frame, kept to replay it */
static size_t tx_len;
static int have_last;
static uint16_t last_seq;
static uint32_t last_crc;

/* Two slots: a deploy writes the one not in use and switches only once the new model has
 * passed its SHA-256 and its checks, so a failed deploy leaves the working model running. */
static uint8_t model_slot[2][EKB_MODEL_SLOT] EKB_MODEL_PLACEMENT;
static int active_slot;
static ekb_model model, staged;
static int loaded, trained, deploying;
static uint32_t model_len, expect_len, written;
static uint8_t expect_sha[32], model_sha[32];

static int8_t xq[EKB_MAX_WIDTH], yq[EKB_MAX_CLASSES];
static float feat[EKB_MAX_WIDTH], logits[EKB_MAX_CLASSES];

static const char *err_text;

#define NAK_TEXT 64
static uint8_t nak_buf[FRAME_OVERHEAD + 3 + NAK_TEXT]; /* NAKs never overwrite tx */

/* Frames the body already in buf[12..] and sends it; returns the frame's length. */
static size_t send_frame(uint8_t *buf, uint8_t type, uint16_t seq, size_t body_len)
{
    size_t len = 2 + body_len;
    buf[0] = 'E'; buf[1] = 'K'; buf[2] = PROTO_VERSION; buf[3] = type; buf[4] = 0; buf[5] = 0;
    wr32(buf + 6, (uint32_t)len);
    wr16(buf + 10, seq);
    wr32(buf + 10 + len, ekb_crc32(0, buf, 10 + len));
    ekb_cobs_send(buf, FRAME_OVERHEAD + len);
    return FRAME_OVERHEAD + len;
}

static size_t error_body(uint8_t *buf, size_t max_text, uint8_t code, const char *text)
{
    size_t n = strlen(text);
    if (n > max_text) n = max_text;
    buf[12] = code;
    memcpy(buf + 13, text, n);
    return 1 + n;
}

static void nak(const char *why)
{
    send_frame(nak_buf, T_ERROR, 0xFFFF, error_body(nak_buf, NAK_TEXT, E_DAMAGED, why));
}

/* Each handler reads the request body, writes its reply body at `out` and returns its
 * length, or returns -code with err_text set. */
static long refuse(int code, const char *why)
{
    err_text = why;
    return -code;
}

static long do_info(uint8_t *out)
{
    const char *name = EKB_BOARD_NAME;
    size_t n = strlen(name);
    const ekb_layer *first = &model.layer[0];
    const ekb_layer *last = loaded ? &model.layer[model.n_layers - 1] : first;
    memset(out, 0, 105);
    wr16(out, PROTO_VERSION);
    out[2] = FORMAT_EKB;
    out[3] = (uint8_t)((loaded ? 1 : 0) | (trained ? 2 : 0));
    wr32(out + 4, EKB_RAM_BYTES);
    wr32(out + 8, EKB_FLASH_BYTES);
    wr32(out + 12, EKB_CLOCK_HZ);
    wr32(out + 16, 2UL * EKB_MAX_WIDTH);
    wr32(out + 20, EKB_MODEL_SLOT);
    wr32(out + 24, EKB_MAX_PAYLOAD);
    if (loaded) {
        wr32(out + 28, model_len);
        wr32(out + 32, 2UL * model.max_width);
        memcpy(out + 36, model_sha, 32);
        out[68] = model.in_dtype;
        out[69] = trained ? DT_F32 : DT_I8;
        wr32(out + 72, first->in);
        wrf(out + 76, model.in_scale);
        wri(out + 80, model.in_zp);
        wr32(out + 84, last->out);
        wrf(out + 88, trained ? 1.0f : last->out_scale);
        wri(out + 92, trained ? 0 : last->out_zp);
        wr32(out + 96, last->in);
        wr32(out + 100, last->out);
    }
    if (n > 255) n = 255;
    out[104] = (uint8_t)n;
    memcpy(out + 105, name, n);
    return (long)(105 + n);
}

static long do_deploy_begin(const uint8_t *in, size_t len, uint8_t *out)
{
    if (len != 40) return refuse(E_REFUSED, "DEPLOY_BEGIN: expected 40 bytes");
    if (in[4] != FORMAT_EKB)
        return refuse(E_REFUSED, "this firmware takes EKB models (format 2); convert the .tflite on the host");
    if (rd32(in) > EKB_MODEL_SLOT)
        return refuse(E_NO_FIT, "the model does not fit the firmware's model slot (EKB_MODEL_SLOT)");
    if (rd32(in) == 0) return refuse(E_REFUSED, "DEPLOY_BEGIN: empty model");
    expect_len = rd32(in);
    memcpy(expect_sha, in + 8, 32);
    written = 0;
    deploying = 1;
    wr32(out, BODY_MAX - 8);
    return 4;
}

static long do_deploy_chunk(const uint8_t *in, size_t len, uint8_t *out)
{
    uint32_t off, crc, n;
    if (!deploying) return refuse(E_REFUSED, "DEPLOY_CHUNK without DEPLOY_BEGIN");
    if (len < 8) return refuse(E_REFUSED, "DEPLOY_CHUNK: short");
    off = rd32(in);
    crc = rd32(in + 4);
    n = (uint32_t)(len - 8);
    if (off > written || off + n > expect_len)
        return refuse(E_REFUSED, "DEPLOY_CHUNK: offset out of order or past the model's end");
    memcpy(model_slot[1 - active_slot] + off, in + 8, n);
    if (ekb_crc32(0, model_slot[1 - active_slot] + off, n) != crc)
        return refuse(E_CHUNK_CRC, "chunk failed its CRC after writing");
    if (off + n > written) written = off + n;
    wr32(out, written);
    return 4;
}

static long do_deploy_end(size_t len, uint8_t *out)
{
    uint8_t sha[32];
    int rc;
    if (len != 0) return refuse(E_REFUSED, "DEPLOY_END: expected an empty body");
    if (!deploying) return refuse(E_REFUSED, "DEPLOY_END without DEPLOY_BEGIN");
    if (written != expect_len) return refuse(E_REFUSED, "DEPLOY_END before every chunk arrived");
    deploying = 0;
    ekb_sha256(model_slot[1 - active_slot], expect_len, sha);
    if (memcmp(sha, expect_sha, 32) != 0)
        return refuse(E_HASH, "the model's SHA-256 does not match; deploy it again");
    rc = ekb_model_parse(&staged, model_slot[1 - active_slot], expect_len, &err_text);
    if (rc != EKB_OK) return -rc;
    active_slot = 1 - active_slot;
    model = staged;
    memcpy(model_sha, sha, 32);
    model_len = expect_len;
    ekb_head_init(&model);
    loaded = 1;
    trained = 0;
    wr32(out, 2UL * model.max_width);
    wr32(out + 4, model_len);
    return 8;
}

static int finite_f32(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float f = rdf(p + 4 * i);
        if (!(f >= -3.4e38f && f <= 3.4e38f)) return 0;
    }
    return 1;
}

/* Row r of the request's inputs as int8 (quantizing float rows as TFLM's QUANTIZE does). */
static int load_input(const uint8_t *rows, uint8_t dt, uint16_t r)
{
    uint16_t f, F = model.layer[0].in;
    if (dt == DT_I8) {
        memcpy(xq, rows + (size_t)r * F, F);
        return 1;
    }
    if (dt != DT_F32) return 0;
    for (f = 0; f < F; f++)
        xq[f] = ekb_quantize(rdf(rows + 4 * ((size_t)r * F + f)), model.in_scale, model.in_zp);
    return 1;
}

static long do_infer(const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t dt;
    uint16_t n, r, c, F, C;
    size_t isz, osz;
    if (!loaded) return refuse(E_NO_MODEL, "no model deployed");
    if (len < 4) return refuse(E_REFUSED, "INFER: short");
    dt = in[0];
    n = rd16(in + 2);
    F = model.layer[0].in;
    C = model.layer[model.n_layers - 1].out;
    if (dt != DT_I8 && dt != DT_F32) return refuse(E_REFUSED, "INFER: unknown dtype");
    isz = dt == DT_I8 ? 1 : 4;
    if (len != 4 + (size_t)n * F * isz) return refuse(E_REFUSED, "INFER: length does not match n x features");
    osz = trained ? 4 : 1;
    if (16 + (size_t)n * C * osz > BODY_MAX) return refuse(E_BUSY, "INFER: reply would exceed the frame buffer");
    if (dt == DT_F32 && !finite_f32(in + 4, (size_t)n * F))
        return refuse(E_REFUSED, "INFER: an input is NaN or infinite");
    out[0] = trained ? DT_F32 : DT_I8;
    out[1] = 0;
    wr16(out + 2, n);
    wr16(out + 4, C);
    wr16(out + 6, 0);
    wrf(out + 8, trained ? 1.0f : model.layer[model.n_layers - 1].out_scale);
    wri(out + 12, trained ? 0 : model.layer[model.n_layers - 1].out_zp);
    for (r = 0; r < n; r++) {
        load_input(in + 4, dt, r);
        ekb_model_run(&model, xq, yq, feat);
        if (trained) {
            ekb_head_logits(&model, feat, logits);
            for (c = 0; c < C; c++) wrf(out + 16 + 4 * ((size_t)r * C + c), logits[c]);
        } else {
            memcpy(out + 16 + (size_t)r * C, yq, C);
        }
    }
    return (long)(16 + (size_t)n * C * osz);
}

static long do_train(const uint8_t *in, size_t len, uint8_t *out)
{
    float lr, T, alpha, loss = 0.0f, kl;
    uint8_t dt, agree;
    uint16_t n, r, c, F, C;
    const uint8_t *labels, *rows, *teach;
    float t[EKB_MAX_CLASSES];
    size_t isz;
    if (!loaded) return refuse(E_NO_MODEL, "no model deployed");
    if (len < 16) return refuse(E_REFUSED, "TRAIN_LAST: short");
    lr = rdf(in); T = rdf(in + 4); alpha = rdf(in + 8);
    dt = in[12];
    n = rd16(in + 14);
    F = model.layer[0].in;
    C = model.layer[model.n_layers - 1].out;
    if (dt != DT_I8 && dt != DT_F32) return refuse(E_REFUSED, "TRAIN_LAST: unknown dtype");
    if (!(lr >= 0.0f && lr < 1e6f) || !(T > 0.0f && T < 1e6f) || !(alpha >= 0.0f && alpha <= 1.0f))
        return refuse(E_REFUSED, "TRAIN_LAST: lr, temperature or alpha out of range");
    isz = dt == DT_I8 ? 1 : 4;
    if (n == 0 || len != 16 + 2 * (size_t)n + (size_t)n * F * isz + 4 * (size_t)n * C)
        return refuse(E_REFUSED, "TRAIN_LAST: length does not match n, features and classes");
    if (8 + 5 * (size_t)n > BODY_MAX) return refuse(E_BUSY, "TRAIN_LAST: batch too large");
    labels = in + 16;
    rows = labels + 2 * (size_t)n;
    teach = rows + (size_t)n * F * isz;
    for (r = 0; r < n; r++)
        if (rd16(labels + 2 * r) >= C) return refuse(E_REFUSED, "TRAIN_LAST: a label is out of range");
    if (dt == DT_F32 && !finite_f32(rows, (size_t)n * F))
        return refuse(E_REFUSED, "TRAIN_LAST: an input is NaN or infinite");
    if (!finite_f32(teach, (size_t)n * C))
        return refuse(E_REFUSED, "TRAIN_LAST: a teacher logit is NaN or infinite");
    ekb_head_zero_grad(&model);
    for (r = 0; r < n; r++) {
        load_input(rows, dt, r);
        ekb_model_run(&model, xq, yq, feat);
        for (c = 0; c < C; c++) t[c] = rdf(teach + 4 * ((size_t)r * C + c));
        loss += ekb_head_accumulate(&model, feat, t, rd16(labels + 2 * r), T, alpha, n, &kl, &agree);
        wrf(out + 8 + 4 * (size_t)r, kl);
        out[8 + 4 * (size_t)n + r] = agree;
    }
    if (!(loss >= -3.4e38f && loss <= 3.4e38f))
        return refuse(E_REFUSED, "TRAIN_LAST: the loss is not finite; the weights are unchanged");
    if (lr > 0.0f) {
        if (!ekb_head_step(&model, lr))
            return refuse(E_REFUSED, "TRAIN_LAST: the step would overflow a weight; the weights are unchanged");
        trained = 1;
    }
    wrf(out, loss / (float)n);
    wr16(out + 4, n);
    wr16(out + 6, 0);
    return (long)(8 + 5 * (size_t)n);
}

static long do_weights(const uint8_t *in, size_t len, uint8_t *out)
{
    uint32_t off, total, n, i;
    uint16_t want;
    if (!loaded) return refuse(E_NO_MODEL, "no model deployed");
    if (len != 6) return refuse(E_REFUSED, "GET_WEIGHTS: expected 6 bytes");
    off = rd32(in);
    want = rd16(in + 4);
    total = ekb_head_bytes(&model);
    if (off > total) return refuse(E_REFUSED, "GET_WEIGHTS: offset past the end");
    n = total - off;
    if (n > want) n = want;
    if (n > BODY_MAX - 16) n = BODY_MAX - 16;
    wr32(out, model.layer[model.n_layers - 1].in);
    wr32(out + 4, model.layer[model.n_layers - 1].out);
    wr32(out + 8, total);
    wr32(out + 12, off);
    for (i = 0; i < n; i++)
        out[16 + i] = ekb_head_byte(&model, off + i);
    return (long)(16 + n);
}

static long do_set_weights(const uint8_t *in, size_t len, uint8_t *out)
{
    uint32_t off, n, total;
    if (!loaded) return refuse(E_NO_MODEL, "no model deployed");
    if (len < 4 || (len - 4) % 4 != 0) return refuse(E_REFUSED, "SET_WEIGHTS: expected offset u32 and whole float32 values");
    off = rd32(in);
    n = (uint32_t)(len - 4);
    total = ekb_head_bytes(&model);
    if (off % 4 != 0 || off > total || n > total - off)
        return refuse(E_REFUSED, "SET_WEIGHTS: offset or length past the layer's weights");
    if (!finite_f32(in + 4, n / 4)) return refuse(E_REFUSED, "SET_WEIGHTS: a weight is NaN or infinite");
    ekb_head_set_bytes(&model, off, in + 4, n);
    trained = 1;
    wr32(out, off + n);
    return 4;
}

/* The port's counter of retired instructions (SysTick under QEMU's -icount) or 0 when the
 * board cannot count; weak, so a port without one links. */
uint64_t ekb_port_ticks(void) __attribute__((weak));
uint64_t ekb_port_ticks(void) { return 0; }

/* BENCH: n inferences of one int8 row, timed by the port's counter. Body: n u16, reserved
 * u16, row i8[F]. Reply: ticks u64 (0: cannot count), n u16, counts u8, reserved u8. */
static long do_bench(const uint8_t *in, size_t len, uint8_t *out)
{
    uint16_t n, i, F;
    uint64_t t0, t1;
    if (!loaded) return refuse(E_NO_MODEL, "no model deployed");
    F = model.layer[0].in;
    if (len != 4 + (size_t)F) return refuse(E_REFUSED, "BENCH: expected n u16, reserved u16 and one int8 row");
    n = rd16(in);
    if (n == 0) return refuse(E_REFUSED, "BENCH: n must be at least 1");
    memcpy(xq, in + 4, F);
    t0 = ekb_port_ticks();
    for (i = 0; i < n; i++)
        ekb_model_run(&model, xq, yq, feat);
    t1 = ekb_port_ticks();
    wr32(out, (uint32_t)(t1 - t0));
    wr32(out + 4, (uint32_t)((t1 - t0) >> 32));
    wr16(out + 8, n);
    out[10] = t0 != 0 || t1 != 0;
    out[11] = 0;
    return 12;
}

static long do_reset(const uint8_t *in, size_t len)
{
    if (len != 1 || in[0] > 1) return refuse(E_REFUSED, "RESET: expected one byte, 0 or 1");
    deploying = 0;
    trained = 0;
    if (in[0] == 1) {
        loaded = 0;
        memset(&model, 0, sizeof model);
        model_len = 0;
        memset(model_sha, 0, sizeof model_sha);
    } else if (loaded) {
        ekb_head_init(&model);
    }
    return 0;
}

/* ---- the float student (ekb_train.c; docs/protocol.md, section 11.8) ---- */
#define SETUP_FIXED 48
#define PLAN_BYTES 32
#define FRAME_BUFFERS (RAW_MAX + 2 * FRAME_MAX + sizeof nak_buf)

static void put_setup(uint8_t *out, const ekb_train_setup *s)
{
    uint8_t l;
    memset(out, 0, SETUP_FIXED + 4 * (size_t)s->n_layers);
    out[0] = s->optimizer; out[1] = s->n_layers; out[2] = s->x_dtype; out[3] = s->halting;
    wr16(out + 4, s->in); wr16(out + 6, s->rows); wr32(out + 8, s->n_ids);
    wrf(out + 12, s->temperature); wrf(out + 16, s->alpha); wrf(out + 20, s->beta1);
    wrf(out + 24, s->beta2); wrf(out + 28, s->adam_eps); wrf(out + 32, s->halt_eps);
    out[36] = s->patience; out[37] = s->threshold;
    wrf(out + 40, s->x_lo); wrf(out + 44, s->x_step);
    for (l = 0; l < s->n_layers; l++) {
        wr16(out + SETUP_FIXED + 4 * l, s->units[l]);
        out[SETUP_FIXED + 4 * l + 2] = s->act[l];
    }
}

static void put_plan(uint8_t *out, const ekb_train_plan *p)
{
    wr32(out, p->capacity); wr32(out + 4, p->used); wr32(out + 8, p->params);
    wr32(out + 12, p->grads); wr32(out + 16, p->optimizer); wr32(out + 20, p->activations);
    wr32(out + 24, p->settle); wr32(out + 28, (uint32_t)FRAME_BUFFERS);
}

/* TRAIN_SETUP: an empty body asks what is set up (n_layers 0: nothing); otherwise it lays
 * the student out in the arena (weights zero: PARAMS_SET them). Reply: plan, then setup. */
static long do_train_setup(const uint8_t *in, size_t len, uint8_t *out)
{
    ekb_train_setup s;
    ekb_train_plan p;
    uint8_t l;
    int rc;
    memset(&p, 0, sizeof p);
    p.capacity = EKB_TRAIN_ARENA / 4 * 4;
    if (len == 0) {
        if (!ekb_train_ready()) {
            put_plan(out, &p);
            memset(out + PLAN_BYTES, 0, SETUP_FIXED);
            return PLAN_BYTES + SETUP_FIXED;
        }
        put_plan(out, ekb_train_current_plan());
        put_setup(out + PLAN_BYTES, ekb_train_current());
        return PLAN_BYTES + SETUP_FIXED + 4L * ekb_train_current()->n_layers;
    }
    if (len < SETUP_FIXED || len != SETUP_FIXED + 4 * (size_t)in[1] || in[1] == 0 || in[1] > EKB_TRAIN_MAX_LAYERS)
        return refuse(E_REFUSED, "TRAIN_SETUP: expected 48 bytes and 4 per layer (1 to EKB_TRAIN_MAX_LAYERS layers)");
    memset(&s, 0, sizeof s);
    s.optimizer = in[0]; s.n_layers = in[1]; s.x_dtype = in[2]; s.halting = in[3] ? 1 : 0;
    s.in = rd16(in + 4); s.rows = rd16(in + 6); s.n_ids = rd32(in + 8);
    s.temperature = rdf(in + 12); s.alpha = rdf(in + 16); s.beta1 = rdf(in + 20);
    s.beta2 = rdf(in + 24); s.adam_eps = rdf(in + 28); s.halt_eps = rdf(in + 32);
    s.patience = in[36]; s.threshold = in[37]; s.x_lo = rdf(in + 40); s.x_step = rdf(in + 44);
    for (l = 0; l < s.n_layers; l++) {
        s.units[l] = rd16(in + SETUP_FIXED + 4 * l);
        s.act[l] = in[SETUP_FIXED + 4 * l + 2];
    }
    if (s.rows > EKB_TRAIN_MAX_ROWS)
        return refuse(E_NO_FIT, "TRAIN_SETUP: more rows per frame than EKB_TRAIN_MAX_ROWS");
    rc = ekb_train_configure(&s, &p, &err_text);
    if (rc != 0) return -rc;
    put_plan(out, &p);
    put_setup(out + PLAN_BYTES, &s);
    return PLAN_BYTES + SETUP_FIXED + 4L * s.n_layers;
}

static size_t x_bytes(void) { return ekb_train_current()->x_dtype == EKB_X_U8 ? 1 : 4; }

static long need_student(void)
{
    return ekb_train_ready() ? 0 : refuse(E_NO_MODEL, "no student set up (TRAIN_SETUP)");
}

/* TRAIN_STEP: flags u8, dtype u8, n u16, batch u16, reserved u16, lr f32, reserved u32,
 * ids u32[n], labels u16[n], x[n][F], teacher f32[n][C]. Reply: loss_sum f32, kl_sum f32,
 * n u16, agree u16, correct u16, k u16, instructions u64, counted u8, 3 reserved, ids u32[k]. */
static long do_train_step(const uint8_t *in, size_t len, uint8_t *out)
{
    const ekb_train_setup *s = ekb_train_current();
    uint16_t n, batch, r, C;
    uint8_t flags;
    float lr;
    const uint8_t *ids, *labels, *x, *teach;
    ekb_step_result res;
    uint64_t t0, t1;
    int rc;
    if (need_student()) return -E_NO_MODEL;
    if (len < 16) return refuse(E_REFUSED, "TRAIN_STEP: short");
    flags = in[0]; n = rd16(in + 2); batch = rd16(in + 4); lr = rdf(in + 8);
    C = ekb_train_classes();
    if (in[1] != s->x_dtype) return refuse(E_REFUSED, "TRAIN_STEP: input dtype differs from TRAIN_SETUP's");
    if (n == 0 || n > s->rows || batch < n || flags > 7)
        return refuse(E_REFUSED, "TRAIN_STEP: n must be 1..rows and batch >= n; flags 0..7");
    if (len != 16 + (size_t)n * (6 + s->in * x_bytes() + 4 * (size_t)C))
        return refuse(E_REFUSED, "TRAIN_STEP: length does not match n, features and classes");
    if (!(lr >= 0.0f && lr < 1e6f)) return refuse(E_REFUSED, "TRAIN_STEP: lr out of range");
    ids = in + 16; labels = ids + 4 * (size_t)n; x = labels + 2 * (size_t)n;
    teach = x + (size_t)n * s->in * x_bytes();
    for (r = 0; r < n; r++) {
        if (rd16(labels + 2 * r) >= C) return refuse(E_REFUSED, "TRAIN_STEP: a label is out of range");
        if (!(flags & EKB_STEP_MEASURE) && rd32(ids + 4 * r) >= s->n_ids)
            return refuse(E_REFUSED, "TRAIN_STEP: a sample id is past TRAIN_SETUP's count");
    }
    if (s->x_dtype == EKB_X_F32 && !finite_f32(x, (size_t)n * s->in))
        return refuse(E_REFUSED, "TRAIN_STEP: an input is NaN or infinite");
    if (!finite_f32(teach, (size_t)n * C))
        return refuse(E_REFUSED, "TRAIN_STEP: a teacher logit is NaN or infinite");
    t0 = ekb_port_ticks();
    rc = ekb_train_frame(flags, n, batch, lr, ids, labels, x, teach, &res, out + 28, &err_text);
    t1 = ekb_port_ticks();
    if (rc != 0) return -rc;
    wrf(out, res.loss_sum); wrf(out + 4, res.kl_sum);
    wr16(out + 8, n); wr16(out + 10, res.agree); wr16(out + 12, res.correct);
    wr16(out + 14, res.n_settled);
    wr32(out + 16, (uint32_t)(t1 - t0)); wr32(out + 20, (uint32_t)((t1 - t0) >> 32));
    out[24] = t0 != 0 || t1 != 0; out[25] = out[26] = out[27] = 0;
    return 28 + 4L * res.n_settled;
}

/* EVAL: dtype u8, reserved u8, n u16, x[n][F]. Reply: n u16, C u16, logits f32[n][C]. */
static long do_eval(const uint8_t *in, size_t len, uint8_t *out)
{
    const ekb_train_setup *s = ekb_train_current();
    uint16_t n, C;
    if (need_student()) return -E_NO_MODEL;
    if (len < 4) return refuse(E_REFUSED, "EVAL: short");
    n = rd16(in + 2);
    C = ekb_train_classes();
    if (in[0] != s->x_dtype) return refuse(E_REFUSED, "EVAL: input dtype differs from TRAIN_SETUP's");
    if (n == 0 || n > s->rows) return refuse(E_REFUSED, "EVAL: n must be 1..rows");
    if (len != 4 + (size_t)n * s->in * x_bytes()) return refuse(E_REFUSED, "EVAL: length does not match n x features");
    if (4 + 4 * (size_t)n * C > BODY_MAX) return refuse(E_BUSY, "EVAL: reply would exceed the frame buffer");
    if (s->x_dtype == EKB_X_F32 && !finite_f32(in + 4, (size_t)n * s->in))
        return refuse(E_REFUSED, "EVAL: an input is NaN or infinite");
    ekb_train_eval(n, in + 4, out + 4);
    wr16(out, n); wr16(out + 2, C);
    return 4 + 4L * n * C;
}

/* PARAMS_GET: offset u32, max_len u16. Reply: total u32, offset u32, bytes. */
static long do_params_get(const uint8_t *in, size_t len, uint8_t *out)
{
    uint32_t off, total, n, i;
    if (need_student()) return -E_NO_MODEL;
    if (len != 6) return refuse(E_REFUSED, "PARAMS_GET: expected 6 bytes");
    off = rd32(in);
    total = 4 * ekb_train_param_count();
    if (off > total) return refuse(E_REFUSED, "PARAMS_GET: offset past the end");
    n = total - off;
    if (n > rd16(in + 4)) n = rd16(in + 4);
    if (n > BODY_MAX - 8) n = BODY_MAX - 8;
    wr32(out, total); wr32(out + 4, off);
    for (i = 0; i < n; i++) out[8 + i] = ekb_train_param_byte(off + i);
    return (long)(8 + n);
}

/* PARAMS_SET: offset u32 (multiple of 4), float32 values. Reply: written u32. */
static long do_params_set(const uint8_t *in, size_t len, uint8_t *out)
{
    uint32_t off, n, total;
    if (need_student()) return -E_NO_MODEL;
    if (len < 4 || (len - 4) % 4 != 0) return refuse(E_REFUSED, "PARAMS_SET: expected offset u32 and whole float32 values");
    off = rd32(in);
    n = (uint32_t)(len - 4);
    total = 4 * ekb_train_param_count();
    if (off % 4 != 0 || off > total || n > total - off)
        return refuse(E_REFUSED, "PARAMS_SET: offset or length past the student's weights");
    if (!finite_f32(in + 4, n / 4)) return refuse(E_REFUSED, "PARAMS_SET: a weight is NaN or infinite");
    ekb_train_set_params(off, in + 4, n);
    wr32(out, off + n);
    return 4;
}

#ifdef EKB_TEST_FAULTS
/* Test builds only: request 0x3E makes the port fault on purpose (kind u8, see the port),
 * so the tests can check the MPU guard and the fault report. */
void ekb_port_test_fault(uint8_t kind);
#endif

static void handle(size_t frame_len)
{
    uint32_t plen, crc;
    uint16_t seq;
    uint8_t type;
    const uint8_t *body;
    size_t blen;
    long r;
    if (frame_len < 3 || rx[0] != 'E' || rx[1] != 'K' || rx[2] != PROTO_VERSION)
        return; /* line noise: stay silent, a NAK per burst of garbage would flood the host */
    if (frame_len < FRAME_OVERHEAD) {
        nak("truncated frame");
        return;
    }
    plen = rd32(rx + 6);
    if (plen > EKB_MAX_PAYLOAD || frame_len != FRAME_OVERHEAD + plen) {
        nak("frame length does not match its header");
        return;
    }
    crc = rd32(rx + 10 + plen);
    if (ekb_crc32(0, rx, 10 + plen) != crc) {
        nak("frame failed its CRC check");
        return;
    }
    if (plen < 2) {
        nak("frame has no sequence number");
        return;
    }
    type = rx[3];
    seq = rd16(rx + 10);
    if (have_last && seq == last_seq && crc == last_crc) {
        ekb_cobs_send(tx, tx_len); /* a resend: replay the reply, do not act twice */
        return;
    }
    body = rx + 12;
    blen = plen - 2;
    err_text = "unknown request type";
    switch (type) {
    case T_INFO: r = blen ? refuse(E_REFUSED, "INFO: expected an empty body") : do_info(tx + 12); break;
    case T_DEPLOY_BEGIN: r = do_deploy_begin(body, blen, tx + 12); break;
    case T_DEPLOY_CHUNK: r = do_deploy_chunk(body, blen, tx + 12); break;
    case T_DEPLOY_END: r = do_deploy_end(blen, tx + 12); break;
    case T_INFER: r = do_infer(body, blen, tx + 12); break;
    case T_TRAIN_LAST: r = do_train(body, blen, tx + 12); break;
    case T_GET_WEIGHTS: r = do_weights(body, blen, tx + 12); break;
    case T_RESET: r = do_reset(body, blen); break;
    case T_SET_WEIGHTS: r = do_set_weights(body, blen, tx + 12); break;
    case T_BENCH: r = do_bench(body, blen, tx + 12); break;
    case T_TRAIN_SETUP: r = do_train_setup(body, blen, tx + 12); break;
    case T_TRAIN_STEP: r = do_train_step(body, blen, tx + 12); break;
    case T_EVAL: r = do_eval(body, blen, tx + 12); break;
    case T_PARAMS_GET: r = do_params_get(body, blen, tx + 12); break;
    case T_PARAMS_SET: r = do_params_set(body, blen, tx + 12); break;
#ifdef EKB_TEST_FAULTS
    case 0x3E: ekb_port_test_fault(blen ? body[0] : 0); r = refuse(E_REFUSED, "no fault"); break;
#endif
    default: r = -E_REFUSED; break;
    }
    if (r >= 0)
        tx_len = send_frame(tx, (uint8_t)(type | T_REPLY), seq, (size_t)r);
    else
        tx_len = send_frame(tx, T_ERROR, seq, error_body(tx, BODY_MAX - 1, (uint8_t)-r, err_text));
    have_last = 1;
    last_seq = seq;
    last_crc = crc;
}

void ekb_board_feed(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] != 0) {
            if (raw_len < RAW_MAX) raw[raw_len++] = p[i];
            else raw_overflow = 1;
            continue;
        }
        if (!raw_overflow && raw_len > 0) {
            long len = ekb_cobs_decode(raw, raw_len, rx, sizeof rx);
            if (len >= 0) handle((size_t)len); /* undecodable packets are line noise */
        }
        raw_len = 0;
        raw_overflow = 0;
    }
}

void ekb_board_poll(void)
{
    uint8_t buf[64];
    size_t n = ekb_hal_read(buf, sizeof buf);
    if (n) ekb_board_feed(buf, n);
}

void ekb_board_init(void)
{
    raw_len = 0;
    raw_overflow = 0;
    have_last = 0;
    loaded = trained = deploying = 0;
}
