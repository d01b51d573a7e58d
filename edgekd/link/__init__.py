"""The host<->device link: wire sizes, the host's session logic, and the sources the trainer reads."""
