/* The reference firmware on a POSIX host: the serial line is a pseudo-terminal, so the
 * same host tools and tests that drive a real board drive this process. Prints
 * {"port": "/dev/pts/N", ...} as its first stdout line, then serves until killed. */
#define _XOPEN_SOURCE 600
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include "../board.h"
#include "../ekb_config.h"
#include "../hal.h"

static int master_fd = -1;

size_t ekb_hal_read(uint8_t *buf, size_t max)
{
    struct pollfd p;
    ssize_t n;
    p.fd = master_fd;
    p.events = POLLIN;
    if (poll(&p, 1, 1000) <= 0)
        return 0;
    n = read(master_fd, buf, max);
    if (n < 0 && errno != EAGAIN && errno != EINTR && errno != EIO) {
        perror("edgekd-firmware: read");
        exit(1);
    }
    return n > 0 ? (size_t)n : 0;
}

void ekb_hal_write(const uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = write(master_fd, buf, n);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            perror("edgekd-firmware: write");
            exit(1);
        }
        buf += k;
        n -= (size_t)k;
    }
}

int main(void)
{
    struct termios t;
    const char *name;
    int slave_fd;
    master_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (master_fd < 0 || grantpt(master_fd) != 0 || unlockpt(master_fd) != 0 ||
        (name = ptsname(master_fd)) == NULL) {
        perror("edgekd-firmware: cannot open a pseudo-terminal");
        return 1;
    }
    /* Keep the slave open ourselves, raw: no echo, no line editing, no CR/LF mapping,
     * and the pty stays up while hosts come and go. */
    slave_fd = open(name, O_RDWR | O_NOCTTY);
    if (slave_fd < 0 || tcgetattr(slave_fd, &t) != 0) {
        perror("edgekd-firmware: cannot open the pseudo-terminal's slave");
        return 1;
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    tcsetattr(slave_fd, TCSANOW, &t);
    printf("{\"port\": \"%s\", \"board\": \"%s\", \"ram_bytes\": %lu, \"flash_bytes\": %lu, "
           "\"model_slot\": %lu, \"max_payload\": %d, \"pid\": %ld}\n",
           name, EKB_BOARD_NAME, (unsigned long)EKB_RAM_BYTES, (unsigned long)EKB_FLASH_BYTES,
           (unsigned long)EKB_MODEL_SLOT, EKB_MAX_PAYLOAD, (long)getpid());
    fflush(stdout);
    ekb_board_init();
    for (;;)
        ekb_board_poll();
}
