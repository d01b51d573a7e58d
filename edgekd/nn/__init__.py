"""Layers, the Sequential model and the JSON student spec."""
