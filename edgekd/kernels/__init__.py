"""Numeric kernels: plain functions on float32 arrays, each op's forward beside its backward.

Only numpy is imported here; the numba twins (same signatures) are optional accelerators.
"""
