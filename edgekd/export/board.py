"""Does an exported model fit a board? The flash a model gets holds its bytes, the arena a
board gives it its tensor arena (the profile's model_flash_bytes and arena_bytes, the figures
the designer and the boards use too); the designer's predictions are reported beside."""

from ..design.profiles import get_profile
from ..design.tflm_cost import tflm_cost


def board_fit(info, spec, profile_name):
    p = get_profile(profile_name)
    predicted = tflm_cost(spec, int8=info["int8"])
    flash = p.model_flash_bytes
    arena = p.arena_bytes if p.kind == "mcu" else p.ram_bytes
    flash_ok = flash is None or info["model_bytes"] <= flash
    ram_ok = info["arena_bytes"] <= arena
    return {"profile": p.name, "flash_bytes": p.flash_bytes, "ram_bytes": p.ram_bytes,
            "model_flash_bytes": flash, "model_arena_bytes": arena,
            "model_fits_flash": flash_ok, "arena_fits_ram": ram_ok, "fits": flash_ok and ram_ok,
            "predicted_model_bytes": predicted.model_bytes,
            "predicted_arena_bytes": predicted.arena_bytes}
