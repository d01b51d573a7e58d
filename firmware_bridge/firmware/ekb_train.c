/* The training loops are the board's hot path: build them for speed even where the rest of
 * the firmware is built for size (-Os on Cortex-M). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include "ekb_train.h"

#include <math.h>
#include <string.h>

#include "ekb_model.h"
#include "le_bytes.h"

/* The arena: floats, so every part is aligned for them. */
static float arena[EKB_TRAIN_ARENA / 4];

static ekb_train_setup setup;
static ekb_train_plan plan;
static int ready;
static uint32_t n_params;
static float *params, *grads, *opt_m, *opt_v;  /* opt_v: Adam only */
static float *act[EKB_TRAIN_MAX_LAYERS + 1];   /* act[0] inputs, act[l + 1] layer l's outputs */
static uint8_t *settle;                        /* per id: bit 7 settled, bits 0..6 streak */
static uint32_t steps;                         /* optimizer steps taken */
static double beta1_t, beta2_t;                /* beta^steps, for Adam's bias correction */

static int finite(float f) { return f >= -3.4e38f && f <= 3.4e38f; }

static uint16_t layer_in(uint8_t l) { return l == 0 ? setup.in : setup.units[l - 1]; }

int ekb_train_ready(void) { return ready; }
const ekb_train_setup *ekb_train_current(void) { return &setup; }
const ekb_train_plan *ekb_train_current_plan(void) { return &plan; }
uint16_t ekb_train_classes(void) { return setup.units[setup.n_layers - 1]; }
uint32_t ekb_train_param_count(void) { return n_params; }

int ekb_train_configure(const ekb_train_setup *s, ekb_train_plan *out, const char **why)
{
    uint64_t np = 0, act_floats, floats, settle_bytes, k;
    uint8_t l;
    uint32_t at = 0;
    if (s->n_layers < 1 || s->n_layers > EKB_TRAIN_MAX_LAYERS) {
        *why = "TRAIN_SETUP: 1 to EKB_TRAIN_MAX_LAYERS dense layers";
        return EKB_E_REFUSED;
    }
    if (s->optimizer > EKB_OPT_ADAM || (s->x_dtype != EKB_X_F32 && s->x_dtype != EKB_X_U8) ||
        s->in < 1 || s->rows < 1 || s->patience < 1 || s->patience > 127 ||
        s->threshold > EKB_THRESHOLD_RELATIVE ||
        !(s->temperature > 0.0f && s->temperature < 1e6f) || !(s->alpha >= 0.0f && s->alpha <= 1.0f) ||
        !(s->beta1 >= 0.0f && s->beta1 < 1.0f) || !(s->beta2 >= 0.0f && s->beta2 < 1.0f) ||
        !(s->adam_eps > 0.0f && s->adam_eps < 1.0f) || !(s->halt_eps >= 0.0f && finite(s->halt_eps)) ||
        !finite(s->x_lo) || !(s->x_step > 0.0f && finite(s->x_step))) {
        *why = "TRAIN_SETUP: a field is out of range (optimizer, dtype, temperature, alpha, betas, eps, patience, threshold, input scale)";
        return EKB_E_REFUSED;
    }
    act_floats = s->in;
    for (l = 0; l < s->n_layers; l++) {
        uint16_t in = l == 0 ? s->in : s->units[l - 1];
        if (s->units[l] < 1 || s->act[l] > 3) {
            *why = "TRAIN_SETUP: a layer has no units or an unknown activation";
            return EKB_E_REFUSED;
        }
        np += (uint64_t)in * s->units[l] + s->units[l];
        act_floats += s->units[l];
    }
    if (s->units[s->n_layers - 1] < 2 || s->units[s->n_layers - 1] > EKB_MAX_CLASSES) {
        *why = "TRAIN_SETUP: the last layer must have 2 to EKB_MAX_CLASSES outputs";
        return EKB_E_NO_FIT;
    }
    settle_bytes = ((uint64_t)s->n_ids + 3) / 4 * 4;
    floats = np * (s->optimizer == EKB_OPT_ADAM ? 4 : 3) + act_floats * s->rows;
    memset(out, 0, sizeof *out);
    out->capacity = (uint32_t)sizeof arena;
    if (4 * floats + settle_bytes > sizeof arena) {
        *why = "TRAIN_SETUP: the student does not fit the training arena (EKB_TRAIN_ARENA); see the plan the host prints";
        ready = 0;
        return EKB_E_NO_FIT;
    }
    /* lay it out: params, grads, optimizer state, activations, settle bytes */
    setup = *s;
    n_params = (uint32_t)np;
    params = arena + at; at += n_params;
    grads = arena + at; at += n_params;
    opt_m = arena + at; at += n_params;
    opt_v = NULL;
    if (s->optimizer == EKB_OPT_ADAM) { opt_v = arena + at; at += n_params; }
    act[0] = arena + at; at += (uint32_t)s->in * s->rows;
    for (l = 0; l < s->n_layers; l++) { act[l + 1] = arena + at; at += (uint32_t)s->units[l] * s->rows; }
    settle = (uint8_t *)(arena + at);
    for (k = 0; k < at; k++) arena[k] = 0.0f;
    memset(settle, 0, (size_t)settle_bytes);
    out->params = out->grads = out->optimizer = 4 * n_params;
    if (opt_v) out->optimizer *= 2;
    out->activations = (uint32_t)(4 * act_floats * s->rows);
    out->settle = (uint32_t)settle_bytes;
    out->used = 4 * at + out->settle;
    plan = *out;
    steps = 0;
    beta1_t = beta2_t = 1.0;
    ready = 1;
    return 0;
}

static void activate(float *z, uint32_t n, uint8_t code)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        float v = z[i];
        if (code == 1) z[i] = v > 0.0f ? v : 0.0f;
        else if (code == 2) z[i] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        else if (code == 3) z[i] = tanhf(v);
    }
}

/* dL/dz from dL/dy and the layer's output y: the activation's derivative from y alone. */
static float act_grad(float y, float dy, uint8_t code)
{
    if (code == 1) return y > 0.0f ? dy : 0.0f;
    if (code == 2) return y > 0.0f && y < 6.0f ? dy : 0.0f;
    if (code == 3) return dy * (1.0f - y * y);
    return dy;
}

static void load_rows(uint16_t n, const uint8_t *x)
{
    uint32_t i, total = (uint32_t)n * setup.in;
    float *dst = act[0];
    if (setup.x_dtype == EKB_X_U8)
        for (i = 0; i < total; i++) dst[i] = setup.x_lo + (float)x[i] * setup.x_step;
    else
        for (i = 0; i < total; i++) dst[i] = rdf(x + 4 * i);
}

/* y = act(x W + b) for n rows; W [in][out]. Zero inputs (ReLU's) are skipped. */
static void forward(uint16_t n)
{
    uint8_t l;
    const float *p = params;
    for (l = 0; l < setup.n_layers; l++) {
        uint16_t K = layer_in(l), C = setup.units[l], r, k, c;
        const float *w = p, *b = p + (size_t)K * C;
        for (r = 0; r < n; r++) {
            const float *x = act[l] + (size_t)r * K;
            float *y = act[l + 1] + (size_t)r * C;
            for (c = 0; c < C; c++) y[c] = b[c];
            for (k = 0; k < K; k++) {
                const float xk = x[k], *wk = w + (size_t)k * C;
                if (xk == 0.0f) continue;
                for (c = 0; c < C; c++) y[c] += xk * wk[c];
            }
            activate(y, C, setup.act[l]);
        }
        p += (size_t)K * C + C;
    }
}

static uint16_t argmax(const float *v, uint16_t n)
{
    uint16_t i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* softmax(v / T) into p and its log into lp, with one expf per value. */
static void softmax_t(const float *v, uint16_t n, float T, float *p, float *lp)
{
    uint16_t i;
    float mx, sum = 0.0f, lse, inv;
    for (i = 0; i < n; i++) lp[i] = v[i] / T;
    mx = lp[0];
    for (i = 1; i < n; i++) if (lp[i] > mx) mx = lp[i];
    for (i = 0; i < n; i++) { lp[i] -= mx; p[i] = expf(lp[i]); sum += p[i]; }
    lse = logf(sum);
    inv = 1.0f / sum;
    for (i = 0; i < n; i++) { lp[i] -= lse; p[i] *= inv; }
}

/* The KD loss of one row, L = a T^2 KL(p(t/T) || p(s/T)) + (1 - a) CE(y, p(s)); its gradient,
 * divided by the batch, replaces the logits (times the last activation's derivative). Returns
 * the row's loss; *kl the KL at T, *limit what settling compares it with: eps, or eps * I_T
 * (I_T = log C + sum p_T log p_T, the teacher's information) under the relative threshold. */
static float kd_row(float *s, const uint8_t *teacher, uint16_t label, uint16_t batch,
                    float *kl, float *limit, uint8_t *agree, uint8_t *correct)
{
    float t[EKB_MAX_CLASSES], ps[EKB_MAX_CLASSES], lps[EKB_MAX_CLASSES];
    float pt[EKB_MAX_CLASSES], lpt[EKB_MAX_CLASSES], p[EKB_MAX_CLASSES], lp[EKB_MAX_CLASSES];
    const uint16_t C = ekb_train_classes();
    const float T = setup.temperature, a = setup.alpha, nb = (float)batch;
    const float ka = a * T / nb, kb = (1.0f - a) / nb;
    const uint8_t code = setup.act[setup.n_layers - 1];
    float d = 0.0f, loss;
    uint16_t c;
    for (c = 0; c < C; c++) t[c] = rdf(teacher + 4 * c);
    *agree = argmax(s, C) == argmax(t, C);
    *correct = argmax(s, C) == label;
    softmax_t(s, C, T, ps, lps);
    softmax_t(t, C, T, pt, lpt);
    for (c = 0; c < C; c++) d += pt[c] * (lpt[c] - lps[c]);
    if (d < 0.0f) d = 0.0f;
    *kl = d;
    *limit = setup.halt_eps;
    if (setup.threshold == EKB_THRESHOLD_RELATIVE) {
        float info = logf((float)C);
        for (c = 0; c < C; c++) info += pt[c] * lpt[c];
        *limit = setup.halt_eps * info;
    }
    loss = a * T * T * d;
    if (a < 1.0f) {
        softmax_t(s, C, 1.0f, p, lp);
        loss -= (1.0f - a) * lp[label];
    }
    for (c = 0; c < C; c++) {
        float g = (ps[c] - pt[c]) * ka;
        if (a < 1.0f) g += (p[c] - (c == label ? 1.0f : 0.0f)) * kb;
        s[c] = act_grad(s[c], g, code);
    }
    return loss;
}

/* Gradients of n rows whose dL/dz is in the last activations; dL/dx is written over each
 * layer's input (times that input's activation derivative), so no other buffer is needed. */
static void backward(uint16_t n)
{
    int l;
    float *p = params + n_params, *g = grads + n_params;
    for (l = setup.n_layers - 1; l >= 0; l--) {
        uint16_t K = layer_in((uint8_t)l), C = setup.units[l], r, k, c;
        float *w, *dw, *db;
        p -= (size_t)K * C + C;
        g -= (size_t)K * C + C;
        w = p; dw = g; db = g + (size_t)K * C;
        for (r = 0; r < n; r++) {
            const float *dz = act[l + 1] + (size_t)r * C;
            const float *x = act[l] + (size_t)r * K;
            for (c = 0; c < C; c++) db[c] += dz[c];
            for (k = 0; k < K; k++) {
                const float xk = x[k];
                float *dwk = dw + (size_t)k * C;
                if (xk == 0.0f) continue;
                for (c = 0; c < C; c++) dwk[c] += xk * dz[c];
            }
        }
        if (l == 0) break;
        for (r = 0; r < n; r++) {
            const float *dz = act[l + 1] + (size_t)r * C;
            float *x = act[l] + (size_t)r * K;
            for (k = 0; k < K; k++) {
                const float *wk = w + (size_t)k * C;
                float s = 0.0f;
                if (x[k] == 0.0f && setup.act[l - 1] != 3 && setup.act[l - 1] != 0) continue;
                for (c = 0; c < C; c++) s += dz[c] * wk[c];
                x[k] = act_grad(x[k], s, setup.act[l - 1]);
            }
        }
    }
}

/* PyTorch's rules (edgekd.kernels.optim), weight decay 0. With commit 0 it only checks that
 * every new weight would be finite; with 1 it writes them. */
static int optimizer_pass(float lr, int commit)
{
    uint32_t i;
    if (setup.optimizer == EKB_OPT_SGD) {
        const float mu = setup.beta1;
        for (i = 0; i < n_params; i++) {
            float buf = mu * opt_m[i] + grads[i];
            float p = params[i] - lr * buf;
            if (!commit) { if (!finite(p) || !finite(buf)) return 0; continue; }
            opt_m[i] = buf;
            params[i] = p;
        }
    } else {
        const float b1 = setup.beta1, b2 = setup.beta2, eps = setup.adam_eps;
        const float ob1 = (float)(1.0 - (double)b1), ob2 = (float)(1.0 - (double)b2);
        const double b1t = beta1_t * b1, b2t = beta2_t * b2;
        const float step = (float)((double)lr / (1.0 - b1t));
        const float c2 = (float)sqrt(1.0 - b2t);
        for (i = 0; i < n_params; i++) {
            const float g = grads[i];
            float m = b1 * opt_m[i] + ob1 * g;
            float v = b2 * opt_v[i] + ob2 * g * g;
            float p = params[i] - step * (m / (sqrtf(v) / c2 + eps));
            if (!commit) { if (!finite(p) || !finite(v)) return 0; continue; }
            opt_m[i] = m;
            opt_v[i] = v;
            params[i] = p;
        }
        if (commit) { beta1_t = b1t; beta2_t = b2t; }
    }
    return 1;
}

int ekb_train_frame(uint8_t flags, uint16_t n, uint16_t batch, float lr, const uint8_t *ids,
                    const uint8_t *labels, const uint8_t *x, const uint8_t *teacher,
                    ekb_step_result *res, uint8_t *settled_ids, const char **why)
{
    const uint16_t C = ekb_train_classes();
    const int measure = (flags & EKB_STEP_MEASURE) != 0;
    float kls[EKB_TRAIN_MAX_ROWS], limits[EKB_TRAIN_MAX_ROWS];
    uint8_t agrees[EKB_TRAIN_MAX_ROWS];
    uint16_t r;
    memset(res, 0, sizeof *res);
    if (!measure && (flags & EKB_STEP_BEGIN))
        memset(grads, 0, sizeof(float) * n_params);
    load_rows(n, x);
    forward(n);
    for (r = 0; r < n; r++) {
        uint8_t correct;
        float *s = act[setup.n_layers] + (size_t)r * C;
        res->loss_sum += kd_row(s, teacher + 4 * (size_t)r * C,
                                (uint16_t)(labels[2 * r] | (labels[2 * r + 1] << 8)), batch,
                                &kls[r], &limits[r], &agrees[r], &correct);
        res->kl_sum += kls[r];
        res->agree += agrees[r];
        res->correct += correct;
    }
    if (!finite(res->loss_sum)) {
        *why = "TRAIN_STEP: the loss is not finite; the weights are unchanged";
        return EKB_E_REFUSED;
    }
    if (measure) return 0;
    backward(n);
    if (flags & EKB_STEP_END) {
        if (!optimizer_pass(lr, 0)) {
            *why = "TRAIN_STEP: the step would make a weight NaN or infinite; the weights are unchanged";
            return EKB_E_REFUSED;
        }
        optimizer_pass(lr, 1);
        steps++;
    }
    for (r = 0; r < n; r++) {
        uint32_t id = rd32(ids + 4 * (size_t)r);
        uint8_t st = settle[id], streak = (uint8_t)(st & 0x7F);
        int ok = kls[r] <= limits[r] && agrees[r];
        streak = ok ? (uint8_t)(streak < 127 ? streak + 1 : 127) : 0;
        if (setup.halting && !(st & 0x80) && streak >= setup.patience) {
            st |= 0x80;
            memcpy(settled_ids + 4 * (size_t)res->n_settled, ids + 4 * (size_t)r, 4);
            res->n_settled++;
        }
        settle[id] = (uint8_t)((st & 0x80) | streak);
    }
    return 0;
}

void ekb_train_eval(uint16_t n, const uint8_t *x, uint8_t *out)
{
    const uint16_t C = ekb_train_classes();
    uint32_t i;
    load_rows(n, x);
    forward(n);
    for (i = 0; i < (uint32_t)n * C; i++) wrf(out + 4 * i, act[setup.n_layers][i]);
}

uint8_t ekb_train_param_byte(uint32_t i)
{
    uint8_t b[4];
    wrf(b, params[i / 4]);
    return b[i % 4];
}

void ekb_train_set_params(uint32_t off, const uint8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i += 4) params[(off + i) / 4] = rdf(p + i);
}
