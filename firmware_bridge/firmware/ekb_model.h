/* An EKB int8 model (layout: docs/protocol.md, section 11.6): a chain of dense, conv1d
 * (TFLM's height-1 CONV_2D), max / average pool 1-D and MEAN-over-length layers run with
 * TFLM's reference integer arithmetic, and its last (dense) layer as a trainable float head. */
#ifndef EKB_MODEL_H
#define EKB_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include "ekb_config.h"

enum { EKB_DENSE = 0, EKB_CONV1D = 1, EKB_MAXPOOL1D = 2, EKB_AVGPOOL1D = 3, EKB_MEAN = 4 };

typedef struct {
    uint8_t kind;                /* EKB_DENSE, ... */
    uint16_t in, out;            /* values per sample in and out ([length][channels] flat) */
    /* not dense: the 1-D geometry, channels last */
    uint16_t len_in, ch_in, kernel, stride, pad, len_out, ch_out;
    int32_t in_zp, out_zp, act_min, act_max;
    float in_scale, out_scale;
    /* dense and conv1d, per output channel (little-endian arrays [out] / [ch_out]); MEAN
     * has one multiplier and shift */
    const uint8_t *mult, *shift, *wscale, *bscale, *bias;
    const int8_t *w;             /* dense [out][in]; conv1d [ch_out][kernel][ch_in] */
} ekb_layer;

typedef struct {
    uint8_t n_layers, in_dtype, out_dtype;
    float in_scale;
    int32_t in_zp;
    uint16_t max_width;
    ekb_layer layer[EKB_MAX_LAYERS];
} ekb_model;

/* Result codes match the protocol's BOARD_ERROR codes. */
#define EKB_OK 0
#define EKB_E_REFUSED 2
#define EKB_E_NO_FIT 3

/* Checks the blob's structure and the board's limits; *why explains a failure. */
int ekb_model_parse(ekb_model *m, const uint8_t *blob, uint32_t len, const char **why);
/* Int8 inference: y gets the last layer's int8 outputs; if feat is not NULL it gets the
 * last layer's dequantized float inputs (the features TRAIN_LAST trains on). */
void ekb_model_run(const ekb_model *m, const int8_t *x, int8_t *y, float *feat);
/* TFLM's QUANTIZE of one float input. */
int8_t ekb_quantize(float v, float scale, int32_t zp);

/* The float head: W [out][in] and b [out], initialised from the last int8 layer. */
void ekb_head_init(const ekb_model *m);
void ekb_head_logits(const ekb_model *m, const float *feat, float *logits);
/* One sample of KD (per-batch mean: pass n); adds its gradient to the accumulators and
 * returns its loss; *kl and *agree get the halting signals. */
float ekb_head_accumulate(const ekb_model *m, const float *feat, const float *teacher,
                          uint16_t label, float temperature, float alpha, uint16_t n,
                          float *kl, uint8_t *agree);
void ekb_head_zero_grad(const ekb_model *m);
/* One SGD step; returns 0 (and changes nothing) if a weight would not be finite. */
int ekb_head_step(const ekb_model *m, float lr);
/* The head's parameters as little-endian float32 bytes: W then b. */
uint32_t ekb_head_bytes(const ekb_model *m);
uint8_t ekb_head_byte(const ekb_model *m, uint32_t i);
/* Overwrites n bytes of that array from byte offset off (both multiples of 4, in range). */
void ekb_head_set_bytes(const ekb_model *m, uint32_t off, const uint8_t *p, uint32_t n);

int32_t ekb_mbqm(int32_t x, int32_t multiplier, int32_t shift);
#endif
