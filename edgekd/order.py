"""Which samples an epoch visits, and in what order: a pure function of (seed, epoch, halted
set), shared by host and device, so a device that reconnects gets the same order back."""

import numpy as np


def split_validation(num_train, val_fraction, seed):
    """(train_ids, val_ids): a seeded slice of the training split held out for validation."""
    n_val = round(num_train * val_fraction)
    perm = np.random.default_rng([seed, 0x7A1]).permutation(num_train)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_order(train_ids, seed, epoch, halted):
    perm = train_ids[np.random.default_rng([seed, epoch]).permutation(len(train_ids))]
    return perm[~halted[perm]]
