/* The board side of the edgekd board protocol (docs/protocol.md, section 11): frames in
 * COBS over the HAL's serial bytes; INFO, DEPLOY, INFER, TRAIN_LAST, GET_WEIGHTS, RESET. */
#ifndef EKB_BOARD_H
#define EKB_BOARD_H
#include <stddef.h>
#include <stdint.h>

void ekb_board_init(void);
/* Reads what the HAL has and answers every complete request; call it from the main loop. */
void ekb_board_poll(void);
/* Feeds received bytes directly (for ports whose HAL pushes bytes from an interrupt). */
void ekb_board_feed(const uint8_t *p, size_t n);
#endif
