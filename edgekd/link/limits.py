"""The host's descriptor budget: every session holds one socket, so `--max-devices` is only
real if the process may open that many files. Raise the soft limit as far as the hard one
allows, and clamp `max_devices` (saying so) when even that is not enough."""

import os

RESERVE_FDS = 64   # listening socket, std streams, teacher and data files, imports, logs


def open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return RESERVE_FDS


def fit_fd_limit(max_devices, max_pending, log):
    """max_devices, clamped to what RLIMIT_NOFILE allows after raising its soft limit."""
    try:
        import resource
    except ImportError:  # not Unix: nothing to raise
        return max_devices
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = open_fds() + RESERVE_FDS + max_pending + max_devices
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_devices
    fit = max(1, soft - open_fds() - RESERVE_FDS - max_pending)
    log(f"warning: the open-file limit ({soft}, hard {hard}) cannot hold {max_devices} devices; "
        f"serving at most {fit} (raise it with `ulimit -n` to serve more)")
    return fit
