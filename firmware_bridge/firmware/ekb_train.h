/* Training the whole float32 MLP student on the board (docs/protocol.md, section 11.8):
 * dense layers with relu / relu6 / tanh / none, the KD loss (T, alpha; edgekd/kernels/kd.py), backward,
 * SGD with momentum or Adam, and the early-halting rule of edgekd's device trainer (a sample
 * settles once KL <= eps, or under the relative threshold KL <= eps * I_T with I_T the
 * teacher's information log C - H(p_T), and the argmax agrees for `patience` visits). Weights, gradients,
 * optimizer state, one frame of activations and the settle state are carved out of one static
 * arena (EKB_TRAIN_ARENA bytes) when the host sets the student up; nothing is allocated later. */
#ifndef EKB_TRAIN_H
#define EKB_TRAIN_H
#include <stddef.h>
#include <stdint.h>
#include "ekb_config.h"

enum { EKB_OPT_SGD = 0, EKB_OPT_ADAM = 1 };
enum { EKB_X_F32 = 0, EKB_X_U8 = 2 };
enum { EKB_STEP_BEGIN = 1, EKB_STEP_END = 2, EKB_STEP_MEASURE = 4 };
enum { EKB_THRESHOLD_ABSOLUTE = 0, EKB_THRESHOLD_RELATIVE = 1 };

typedef struct {
    uint8_t optimizer, n_layers, x_dtype, halting;
    uint16_t in, rows;           /* inputs per sample; most rows in one frame */
    uint32_t n_ids;              /* samples whose settling the board tracks (ids 0..n-1) */
    float temperature, alpha, beta1, beta2, adam_eps, halt_eps;
    uint8_t patience, threshold;   /* threshold: EKB_THRESHOLD_* */
    float x_lo, x_step;          /* u8 inputs: x = lo + q * step (float32) */
    uint16_t units[EKB_TRAIN_MAX_LAYERS];
    uint8_t act[EKB_TRAIN_MAX_LAYERS];   /* 0 none, 1 relu, 2 relu6, 3 tanh (edgekd's codes) */
} ekb_train_setup;

/* What the arena holds, in bytes: the firmware's plan, reported to the host. */
typedef struct {
    uint32_t capacity, used, params, grads, optimizer, activations, settle;
} ekb_train_plan;

/* The plan for a setup (computed in 64 bits; 0 = ok, else EKB_E_REFUSED / EKB_E_NO_FIT with
 * *why set). On success the student is laid out in the arena, its weights zero. */
int ekb_train_configure(const ekb_train_setup *s, ekb_train_plan *plan, const char **why);
/* 1 once a student is set up. */
int ekb_train_ready(void);
const ekb_train_setup *ekb_train_current(void);
const ekb_train_plan *ekb_train_current_plan(void);
uint16_t ekb_train_classes(void);
uint32_t ekb_train_param_count(void);

/* One frame of a batch: n rows (ids, labels, inputs, teacher logits), the batch's size for
 * the mean, flags EKB_STEP_*; lr applies at EKB_STEP_END. Fills the sums and the ids that
 * settled on this visit (at most n). Returns 0, or EKB_E_REFUSED with *why (a non-finite
 * loss or step: the weights are unchanged). */
typedef struct {
    float loss_sum, kl_sum;
    uint16_t agree, correct, n_settled;
} ekb_step_result;
int ekb_train_frame(uint8_t flags, uint16_t n, uint16_t batch, float lr, const uint8_t *ids,
                    const uint8_t *labels, const uint8_t *x, const uint8_t *teacher,
                    ekb_step_result *res, uint8_t *settled_ids, const char **why);
/* Float logits [n][C] of n input rows (little-endian float32 bytes at out). */
void ekb_train_eval(uint16_t n, const uint8_t *x, uint8_t *out);

/* The flat parameter vector (edgekd's order: per layer kernel [in][out], then bias) as
 * little-endian float32 bytes. */
uint8_t ekb_train_param_byte(uint32_t i);
/* Writes whole floats from byte offset off (checked by the caller). */
void ekb_train_set_params(uint32_t off, const uint8_t *p, uint32_t n);
#endif
