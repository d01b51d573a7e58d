/* Compile-time sizes of the reference firmware: every buffer is static and sized here
 * (no malloc). Override any of them with -D on the compiler's command line. */
#ifndef EKB_CONFIG_H
#define EKB_CONFIG_H

#ifndef EKB_BOARD_NAME
#define EKB_BOARD_NAME "edgekd-c"
#endif
#ifndef EKB_RAM_BYTES      /* the board's RAM, as INFO reports it */
#define EKB_RAM_BYTES 524288UL
#endif
#ifndef EKB_FLASH_BYTES    /* the board's flash, as INFO reports it */
#define EKB_FLASH_BYTES 8388608UL
#endif
#ifndef EKB_CLOCK_HZ
#define EKB_CLOCK_HZ 240000000UL
#endif
#ifndef EKB_MAX_PAYLOAD    /* largest frame payload the board sends or accepts */
#define EKB_MAX_PAYLOAD 2048
#endif
#ifndef EKB_MODEL_SLOT     /* bytes for one deployed EKB model (flash on a real board) */
#define EKB_MODEL_SLOT 65536
#endif
#ifndef EKB_MAX_WIDTH      /* widest layer (values per sample): the two int8 activation buffers */
#define EKB_MAX_WIDTH 1024
#endif
#ifndef EKB_MAX_HEAD       /* in x out of the trainable last layer */
#define EKB_MAX_HEAD 4096
#endif
#ifndef EKB_MAX_CLASSES    /* outputs of the last layer */
#define EKB_MAX_CLASSES 64
#endif
#define EKB_MAX_LAYERS 16
#ifndef EKB_TRAIN_ARENA    /* bytes for training the float student: weights, gradients,
                              optimizer state, one frame of activations, settle state;
                              by default half the RAM less 16 KiB (4 KiB below 64 KiB) */
#define EKB_TRAIN_ARENA (EKB_RAM_BYTES >= 65536UL ? EKB_RAM_BYTES / 2 - 16384UL : 4096UL)
#endif
#ifndef EKB_TRAIN_MAX_LAYERS
#define EKB_TRAIN_MAX_LAYERS 8
#endif
#ifndef EKB_TRAIN_MAX_ROWS /* samples in one TRAIN_STEP or EVAL frame */
#define EKB_TRAIN_MAX_ROWS 64
#endif
#ifndef EKB_MODEL_PLACEMENT /* where the model slot lives: a port puts it in flash */
#define EKB_MODEL_PLACEMENT
#endif

#endif
