"""A pseudo-terminal pair whose slave end plays the board's serial port."""

import os
import termios
import tty


def open_pty():
    """(master fd, slave fd, slave path). The slave is raw (no echo, no CR/LF mapping) and
    stays open here, so the port survives hosts opening and closing it."""
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    return master, slave, os.ttyname(slave)
