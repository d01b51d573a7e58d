#include "ekb_model.h"

#include <math.h>
#include <string.h>

#define HEADER_SIZE 16
#define LAYER_SIZE 32
#define GEOMETRY_SIZE 16

static float head_w[EKB_MAX_HEAD], head_b[EKB_MAX_CLASSES];
static float grad_w[EKB_MAX_HEAD], grad_b[EKB_MAX_CLASSES];

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static int32_t rd_i32(const uint8_t *p)
{
    uint32_t u = rd_u32(p);
    return u <= 0x7FFFFFFFUL ? (int32_t)u : -(int32_t)(0xFFFFFFFFUL - u) - 1;
}
static float rd_f32(const uint8_t *p)
{
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static int finite_positive(float f) { return f > 0.0f && f <= 3.4e38f; }
static int finite(float f) { return f >= -3.4e38f && f <= 3.4e38f; }
static int int8_zero_point(int32_t zp) { return zp >= -128 && zp <= 127; }

/* The per-channel constants as TFLM can have made them: multiplier in [0, 2^31), shift in
 * [-31, 30] (so every shift below is defined), finite scales. A hostile blob is refused
 * here, so the arithmetic never meets a value it is not defined for. */
static int channels_ok(const ekb_layer *L, uint16_t channels)
{
    uint16_t o;
    for (o = 0; o < channels; o++) {
        int32_t mult = rd_i32(L->mult + 4UL * o), shift = rd_i32(L->shift + 4UL * o);
        if (mult < 0 || shift < -31 || shift > 30 || !finite(rd_f32(L->wscale + 4UL * o)) ||
            !finite(rd_f32(L->bscale + 4UL * o)))
            return 0;
    }
    return 1;
}

int ekb_model_parse(ekb_model *m, const uint8_t *blob, uint32_t len, const char **why)
{
    uint32_t off = HEADER_SIZE;
    int i;
    if (len < HEADER_SIZE || memcmp(blob, "EKB1", 4) != 0) {
        *why = "not an EKB model (no EKB1 magic)";
        return EKB_E_REFUSED;
    }
    m->n_layers = blob[4];
    m->in_dtype = blob[5];
    m->out_dtype = blob[6];
    m->in_scale = rd_f32(blob + 8);
    m->in_zp = rd_i32(blob + 12);
    m->max_width = 0;
    if (!finite_positive(m->in_scale) || !int8_zero_point(m->in_zp)) {
        *why = "EKB model has an input scale or zero point out of range";
        return EKB_E_REFUSED;
    }
    if (m->n_layers == 0 || m->n_layers > EKB_MAX_LAYERS) {
        *why = "EKB model has no layers, or more than this firmware holds";
        return m->n_layers ? EKB_E_NO_FIT : EKB_E_REFUSED;
    }
    for (i = 0; i < m->n_layers; i++) {
        ekb_layer *L = &m->layer[i];
        uint64_t body;
        uint16_t channels;
        if ((uint64_t)off + LAYER_SIZE > len) {
            *why = "EKB model is truncated";
            return EKB_E_REFUSED;
        }
        L->in = rd_u16(blob + off);
        L->out = rd_u16(blob + off + 2);
        L->kind = blob[off + 5];
        L->in_zp = rd_i32(blob + off + 8);
        L->out_zp = rd_i32(blob + off + 12);
        L->act_min = rd_i32(blob + off + 16);
        L->act_max = rd_i32(blob + off + 20);
        L->in_scale = rd_f32(blob + off + 24);
        L->out_scale = rd_f32(blob + off + 28);
        off += LAYER_SIZE;
        if (L->in == 0 || L->out == 0 || (i > 0 && L->in != m->layer[i - 1].out) ||
            L->act_min > L->act_max || L->act_min < -128 || L->act_max > 127 ||
            L->kind > EKB_MEAN) {
            *why = "EKB model has an inconsistent layer";
            return EKB_E_REFUSED;
        }
        if (!int8_zero_point(L->in_zp) || !int8_zero_point(L->out_zp) ||
            !finite_positive(L->in_scale) || !finite_positive(L->out_scale)) {
            *why = "EKB model has a scale or zero point out of range";
            return EKB_E_REFUSED;
        }
        if (L->kind == EKB_DENSE) {
            channels = L->out;
            body = 20ULL * L->out + (uint64_t)L->in * L->out; /* 64-bit: no wrap-around */
        } else {
            const char *bad = 0;
            if ((uint64_t)off + GEOMETRY_SIZE > len) {
                *why = "EKB model is truncated";
                return EKB_E_REFUSED;
            }
            L->len_in = rd_u16(blob + off);
            L->ch_in = rd_u16(blob + off + 2);
            L->kernel = rd_u16(blob + off + 4);
            L->stride = rd_u16(blob + off + 6);
            L->pad = rd_u16(blob + off + 8);
            L->len_out = rd_u16(blob + off + 10);
            L->ch_out = rd_u16(blob + off + 12);
            off += GEOMETRY_SIZE;
            channels = L->ch_out;
            if ((uint32_t)L->len_in * L->ch_in != L->in || (uint32_t)L->len_out * L->ch_out != L->out ||
                L->kernel == 0 || L->stride == 0 || L->pad >= L->kernel)
                bad = "EKB model has an inconsistent 1-D layer";
            else if (L->kind == EKB_CONV1D) {
                /* TFLite's output length: VALID (pad 0) or SAME (pad = half the total) */
                uint32_t valid = L->len_in >= L->kernel ? (L->len_in - L->kernel) / L->stride + 1 : 0;
                uint32_t same = (L->len_in + L->stride - 1U) / L->stride;
                if (!((L->pad == 0 && (L->len_out == valid || L->len_out == same)) ||
                      (L->pad > 0 && L->len_out == same)) || L->len_out == 0)
                    bad = "EKB model has a conv1d layer of inconsistent length";
            } else if (L->kind == EKB_MEAN) {
                if (L->len_out != 1 || L->ch_out != L->ch_in || L->pad != 0)
                    bad = "EKB model has an inconsistent MEAN layer";
            } else if (L->ch_out != L->ch_in || L->pad != 0 || L->len_in < L->kernel ||
                       L->len_out != (L->len_in - L->kernel) / L->stride + 1) {
                bad = "EKB model has an inconsistent pooling layer";
            }
            if (bad) {
                *why = bad;
                return EKB_E_REFUSED;
            }
            body = L->kind == EKB_CONV1D
                ? 20ULL * L->ch_out + (uint64_t)L->ch_out * L->kernel * L->ch_in
                : L->kind == EKB_MEAN ? 8ULL : 0ULL;
        }
        if ((uint64_t)off + body > len) {
            *why = "EKB model is truncated";
            return EKB_E_REFUSED;
        }
        L->mult = blob + off;
        if (L->kind == EKB_MEAN) {
            int32_t mult = rd_i32(L->mult), shift = rd_i32(L->mult + 4);
            L->shift = L->mult + 4;
            if (mult < 0 || shift < -31 || shift > 30) {
                *why = "EKB model has a requantization multiplier, shift or scale out of range";
                return EKB_E_REFUSED;
            }
        } else if (L->kind == EKB_DENSE || L->kind == EKB_CONV1D) {
            L->shift = L->mult + 4UL * channels;
            L->wscale = L->shift + 4UL * channels;
            L->bscale = L->wscale + 4UL * channels;
            L->bias = L->bscale + 4UL * channels;
            L->w = (const int8_t *)(L->bias + 4UL * channels);
            if (!channels_ok(L, channels)) {
                *why = "EKB model has a requantization multiplier, shift or scale out of range";
                return EKB_E_REFUSED;
            }
        }
        off += (uint32_t)(body + ((4 - body % 4) % 4));
        if (L->in > m->max_width) m->max_width = L->in;
        if (L->out > m->max_width) m->max_width = L->out;
    }
    if (off != len) {
        *why = "EKB model has trailing bytes";
        return EKB_E_REFUSED;
    }
    if (m->max_width > EKB_MAX_WIDTH) {
        *why = "a layer is wider than the firmware's activation arena (EKB_MAX_WIDTH)";
        return EKB_E_NO_FIT;
    }
    {
        const ekb_layer *last = &m->layer[m->n_layers - 1];
        if (last->kind != EKB_DENSE) {
            *why = "EKB model does not end in a dense layer (TRAIN_LAST trains it)";
            return EKB_E_REFUSED;
        }
        if ((uint32_t)last->in * last->out > EKB_MAX_HEAD || last->out > EKB_MAX_CLASSES) {
            *why = "the last layer is larger than the firmware's trainable head (EKB_MAX_HEAD)";
            return EKB_E_NO_FIT;
        }
    }
    return EKB_OK;
}

/* gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, as TFLM's
 * MultiplyByQuantizedMultiplier uses them. Shifts of negative values are written so that
 * they do not depend on the compiler's choice for >> of a negative int. */
static int32_t srdhm(int32_t a, int32_t b)
{
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1LL - (1LL << 30));
    if (a == b && a == INT32_MIN)
        return INT32_MAX;
    return (int32_t)((ab + nudge) / (1LL << 31));
}
static int32_t asr(int32_t x, int e) { return x < 0 ? ~(~x >> e) : x >> e; }
static int32_t rdbpot(int32_t x, int e)
{
    int32_t mask = (int32_t)((1LL << e) - 1);
    int32_t rem = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return asr(x, e) + (rem > threshold ? 1 : 0);
}
int32_t ekb_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm((int32_t)((int64_t)x * ((int64_t)1 << left)), multiplier), right);
}

static void dense(const ekb_layer *L, const int8_t *x, int8_t *y)
{
    uint16_t o, i;
    for (o = 0; o < L->out; o++) {
        const int8_t *w = L->w + (size_t)o * L->in;
        int32_t acc = 0;
        int64_t wide;
        for (i = 0; i < L->in; i++) /* |sum| <= 256 * 127 * 255: no overflow */
            acc += (int32_t)w[i] * ((int32_t)x[i] - L->in_zp);
        /* a hostile bias may push the sum past int32: saturate, where TFLM would be undefined */
        wide = (int64_t)acc + rd_i32(L->bias + 4UL * o);
        acc = wide > INT32_MAX ? INT32_MAX : wide < INT32_MIN ? INT32_MIN : (int32_t)wide;
        wide = (int64_t)ekb_mbqm(acc, rd_i32(L->mult + 4UL * o), rd_i32(L->shift + 4UL * o)) +
               L->out_zp;
        acc = wide > 127 ? 127 : wide < -128 ? -128 : (int32_t)wide;
        if (acc < L->act_min) acc = L->act_min;
        if (acc > L->act_max) acc = L->act_max;
        y[o] = (int8_t)acc;
    }
}

static int8_t requantize(const ekb_layer *L, int32_t acc, uint16_t c)
{
    int64_t wide = (int64_t)acc + rd_i32(L->bias + 4UL * c);
    acc = wide > INT32_MAX ? INT32_MAX : wide < INT32_MIN ? INT32_MIN : (int32_t)wide;
    wide = (int64_t)ekb_mbqm(acc, rd_i32(L->mult + 4UL * c), rd_i32(L->shift + 4UL * c)) + L->out_zp;
    acc = wide > 127 ? 127 : wide < -128 ? -128 : (int32_t)wide;
    if (acc < L->act_min) acc = L->act_min;
    if (acc > L->act_max) acc = L->act_max;
    return (int8_t)acc;
}

/* TFLM's ConvPerChannel with height 1: taps outside the input (SAME padding) are skipped. */
static void conv1d(const ekb_layer *L, const int8_t *x, int8_t *y)
{
    uint16_t t, c, k, i;
    for (t = 0; t < L->len_out; t++) {
        int32_t start = (int32_t)t * L->stride - L->pad;
        for (c = 0; c < L->ch_out; c++) {
            const int8_t *w = L->w + (size_t)c * L->kernel * L->ch_in;
            int32_t acc = 0;
            for (k = 0; k < L->kernel; k++) {
                int32_t pos = start + k;
                const int8_t *xi;
                if (pos < 0 || pos >= L->len_in)
                    continue;
                xi = x + (size_t)pos * L->ch_in;
                for (i = 0; i < L->ch_in; i++)
                    acc += (int32_t)w[(size_t)k * L->ch_in + i] * ((int32_t)xi[i] - L->in_zp);
            }
            y[(size_t)t * L->ch_out + c] = requantize(L, acc, c);
        }
    }
}

/* TFLM's MaxPool / AveragePool (VALID windows; the average rounds halves away from 0). */
static void pool1d(const ekb_layer *L, const int8_t *x, int8_t *y)
{
    uint16_t t, c, k;
    for (t = 0; t < L->len_out; t++) {
        for (c = 0; c < L->ch_in; c++) {
            const int8_t *xi = x + (size_t)t * L->stride * L->ch_in + c;
            int32_t v, n = L->kernel;
            if (L->kind == EKB_MAXPOOL1D) {
                v = -128;
                for (k = 0; k < L->kernel; k++)
                    if (xi[(size_t)k * L->ch_in] > v) v = xi[(size_t)k * L->ch_in];
            } else {
                int32_t acc = 0;
                for (k = 0; k < L->kernel; k++)
                    acc += xi[(size_t)k * L->ch_in];
                v = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;
            }
            if (v < L->act_min) v = L->act_min;
            if (v > L->act_max) v = L->act_max;
            y[(size_t)t * L->ch_in + c] = (int8_t)v;
        }
    }
}

/* TFLM's QuantizedMeanOrSum over the length: 1/n is folded into the multiplier. */
static void mean1d(const ekb_layer *L, const int8_t *x, int8_t *y)
{
    uint16_t c, t;
    for (c = 0; c < L->ch_in; c++) {
        int32_t acc = 0;
        int64_t v;
        for (t = 0; t < L->len_in; t++)
            acc += x[(size_t)t * L->ch_in + c];
        acc -= L->in_zp * (int32_t)L->len_in;
        v = (int64_t)ekb_mbqm(acc, rd_i32(L->mult), rd_i32(L->shift)) + L->out_zp;
        y[c] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
    }
}

static void run_layer(const ekb_layer *L, const int8_t *x, int8_t *y)
{
    switch (L->kind) {
    case EKB_CONV1D: conv1d(L, x, y); break;
    case EKB_MAXPOOL1D:
    case EKB_AVGPOOL1D: pool1d(L, x, y); break;
    case EKB_MEAN: mean1d(L, x, y); break;
    default: dense(L, x, y); break;
    }
}

void ekb_model_run(const ekb_model *m, const int8_t *x, int8_t *y, float *feat)
{
    static int8_t buf[2][EKB_MAX_WIDTH];
    const int8_t *in = x;
    int i;
    for (i = 0; i < m->n_layers; i++) {
        const ekb_layer *L = &m->layer[i];
        int8_t *out = i == m->n_layers - 1 ? y : buf[i % 2];
        if (i == m->n_layers - 1 && feat) {
            uint16_t k;
            for (k = 0; k < L->in; k++)
                feat[k] = ((float)in[k] - (float)L->in_zp) * L->in_scale;
        }
        run_layer(L, in, out);
        in = out;
    }
}

int8_t ekb_quantize(float v, float scale, int32_t zp)
{
    float r = roundf(v / scale);
    int32_t q;
    if (r != r) r = 0.0f; /* NaN: the request handlers refuse it before; never undefined */
    if (r > 1e6f) r = 1e6f;
    if (r < -1e6f) r = -1e6f;
    q = (int32_t)r + zp;
    return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
}

void ekb_head_init(const ekb_model *m)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    uint16_t o, i;
    for (o = 0; o < L->out; o++) {
        float ws = rd_f32(L->wscale + 4UL * o);
        for (i = 0; i < L->in; i++)
            head_w[(size_t)o * L->in + i] = (float)L->w[(size_t)o * L->in + i] * ws;
        head_b[o] = (float)rd_i32(L->bias + 4UL * o) * rd_f32(L->bscale + 4UL * o);
    }
}

void ekb_head_logits(const ekb_model *m, const float *feat, float *logits)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    uint16_t o, i;
    for (o = 0; o < L->out; o++) {
        const float *w = head_w + (size_t)o * L->in;
        float s = 0.0f;
        for (i = 0; i < L->in; i++)
            s += w[i] * feat[i];
        logits[o] = s + head_b[o];
    }
}

/* log_softmax(v / t) into out, with log-sum-exp. */
static void log_softmax(const float *v, uint16_t n, float t, float *out)
{
    uint16_t c;
    float mx, sum = 0.0f;
    for (c = 0; c < n; c++)
        out[c] = v[c] / t;
    mx = out[0];
    for (c = 1; c < n; c++)
        if (out[c] > mx) mx = out[c];
    for (c = 0; c < n; c++)
        sum += expf(out[c] - mx);
    for (c = 0; c < n; c++)
        out[c] -= mx + logf(sum);
}

static uint16_t argmax(const float *v, uint16_t n)
{
    uint16_t c, best = 0;
    for (c = 1; c < n; c++)
        if (v[c] > v[best]) best = c;
    return best;
}

float ekb_head_accumulate(const ekb_model *m, const float *feat, const float *teacher,
                          uint16_t label, float temperature, float alpha, uint16_t n,
                          float *kl, uint8_t *agree)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    float s[EKB_MAX_CLASSES], lps[EKB_MAX_CLASSES], lpt[EKB_MAX_CLASSES], lp1[EKB_MAX_CLASSES];
    float d = 0.0f, loss;
    uint16_t c, i;
    ekb_head_logits(m, feat, s);
    log_softmax(s, L->out, temperature, lps);
    log_softmax(teacher, L->out, temperature, lpt);
    log_softmax(s, L->out, 1.0f, lp1);
    for (c = 0; c < L->out; c++)
        d += expf(lpt[c]) * (lpt[c] - lps[c]);
    loss = alpha * temperature * temperature * d - (1.0f - alpha) * lp1[label];
    *kl = d > 0.0f ? d : 0.0f;
    *agree = argmax(s, L->out) == argmax(teacher, L->out);
    for (c = 0; c < L->out; c++) {
        float g = alpha * temperature * (expf(lps[c]) - expf(lpt[c])) +
                  (1.0f - alpha) * (expf(lp1[c]) - (c == label ? 1.0f : 0.0f));
        g /= (float)n;
        grad_b[c] += g;
        for (i = 0; i < L->in; i++)
            grad_w[(size_t)c * L->in + i] += g * feat[i];
    }
    return loss;
}

void ekb_head_zero_grad(const ekb_model *m)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    memset(grad_w, 0, sizeof(float) * L->in * L->out);
    memset(grad_b, 0, sizeof(float) * L->out);
}

int ekb_head_step(const ekb_model *m, float lr)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    size_t k;
    /* first check that every new weight is finite, so a step that overflows changes nothing */
    for (k = 0; k < (size_t)L->in * L->out; k++)
        if (!finite(head_w[k] - lr * grad_w[k]))
            return 0;
    for (k = 0; k < L->out; k++)
        if (!finite(head_b[k] - lr * grad_b[k]))
            return 0;
    for (k = 0; k < (size_t)L->in * L->out; k++)
        head_w[k] -= lr * grad_w[k];
    for (k = 0; k < L->out; k++)
        head_b[k] -= lr * grad_b[k];
    return 1;
}

uint32_t ekb_head_bytes(const ekb_model *m)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    return 4UL * ((uint32_t)L->in * L->out + L->out);
}

uint8_t ekb_head_byte(const ekb_model *m, uint32_t i)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    uint32_t k = i / 4, nw = (uint32_t)L->in * L->out, u;
    float f = k < nw ? head_w[k] : head_b[k - nw];
    memcpy(&u, &f, sizeof u);
    return (uint8_t)(u >> (8 * (i % 4)));
}

void ekb_head_set_bytes(const ekb_model *m, uint32_t off, const uint8_t *p, uint32_t n)
{
    const ekb_layer *L = &m->layer[m->n_layers - 1];
    uint32_t nw = (uint32_t)L->in * L->out, i;
    for (i = 0; i + 4 <= n; i += 4) {
        uint32_t k = (off + i) / 4;
        float f = rd_f32(p + i);
        if (k < nw) head_w[k] = f;
        else head_b[k - nw] = f;
    }
}
