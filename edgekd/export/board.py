"""Does an exported model fit a board? Flash holds the model bytes, RAM the tensor arena;
the designer's predictions for the same spec are reported beside the measurements."""

from ..design.profiles import get_profile
from ..design.tflm_cost import tflm_cost


def board_fit(info, spec, profile_name):
    p = get_profile(profile_name)
    predicted = tflm_cost(spec, int8=info["int8"])
    flash_ok = p.flash_bytes is None or info["model_bytes"] <= p.flash_bytes
    ram_ok = info["arena_bytes"] <= p.ram_bytes
    return {"profile": p.name, "flash_bytes": p.flash_bytes, "ram_bytes": p.ram_bytes,
            "model_fits_flash": flash_ok, "arena_fits_ram": ram_ok, "fits": flash_ok and ram_ok,
            "predicted_model_bytes": predicted.model_bytes,
            "predicted_arena_bytes": predicted.arena_bytes}
