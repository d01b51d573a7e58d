"""Built-in device profiles: published RAM / flash / clock, and an estimated training speed.

RAM, flash, clock and core counts are the vendors' datasheet / product-brief figures
(memory "KB"/"MB"/"GB" in those documents are binary, so they are stored as KiB/MiB/GiB).

`flops_per_s` is an ESTIMATE, not a datasheet figure: the sustained single-core float32
FLOP/s of small kernels (batch-32 matmuls of a few hundred to a few thousand rows, or
TFLM's float reference kernels on a microcontroller), computed as

    clock_hz x peak float32 FLOP per cycle of one core x efficiency

where the efficiency (0.15-0.25) accounts for loads/stores, loop and Python/NumPy call
overhead on operands this small. Each profile states its own assumption in `flops_note`.
Replace it with a measurement (`edgekd profile` on the device, `measure.measure_flops`)
whenever you can; the designer only needs the order of magnitude right.

`max_latency_s` is a default budget for one inference (a 10 Hz sensor loop), not a
property of the hardware. `flash_bytes` is None for boards that boot from an SD card or
eMMC, where storing a student's weights is effectively unbounded.

A microcontroller's firmware takes its share first (FIRMWARE_FLASH for the image with TFLM
and the protocol, FIRMWARE_RAM for stacks, frame buffers and TFLM's state). What is left is
the one figure the designer, `export --profile` and the boards all use: `model_flash_bytes`
for the deployed model, `model_ram_bytes` for training on the board, and `arena_bytes`, half
of that, the tensor arena a board gives a model by default (the other half holds the layer
trained on the board).
"""

from dataclasses import dataclass

from ..errors import EdgekdError

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
FIRMWARE_FLASH = 512 * KiB   # the board firmware's image: TFLM, the protocol
FIRMWARE_RAM = 48 * KiB      # its stacks, frame buffers and TFLM state


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str                  # "linux" (trains with numpy/numba) or "mcu" (TFLM firmware)
    ram_bytes: int
    flash_bytes: int | None    # None: SD card / eMMC, effectively unbounded
    clock_hz: float
    cores: int
    flops_per_s: float         # estimate, see flops_note
    flops_note: str
    max_latency_s: float

    @property
    def storage_bytes(self):
        """The storage budget the designer uses by default: the model's flash, or None."""
        return self.model_flash_bytes

    @property
    def model_flash_bytes(self):
        """Flash left for a model: all of it on Linux boards (None: unbounded), flash minus
        the firmware on a microcontroller."""
        if self.flash_bytes is None or self.kind != "mcu":
            return self.flash_bytes
        return max(self.flash_bytes - FIRMWARE_FLASH, 0)

    @property
    def model_ram_bytes(self):
        """RAM left for a model and its training: RAM minus the firmware's on a MCU."""
        return max(self.ram_bytes - FIRMWARE_RAM, 0) if self.kind == "mcu" else self.ram_bytes

    @property
    def arena_bytes(self):
        """The tensor arena a board gives a model by default: half of model_ram_bytes."""
        return self.model_ram_bytes // 2


def _profile(name, description, kind, ram, flash, clock_hz, cores, flop_per_cycle,
             efficiency, core_note, max_latency_s=0.1):
    flops = clock_hz * flop_per_cycle * efficiency
    note = (f"estimate: {clock_hz / 1e6:g} MHz x {flop_per_cycle:g} FLOP/cycle "
            f"({core_note}) x {efficiency:g} efficiency = {flops / 1e6:g} MFLOP/s, one core")
    return Profile(name, description, kind, int(ram), None if flash is None else int(flash),
                   float(clock_hz), cores, flops, note, max_latency_s)


PROFILES = {p.name: p for p in (
    _profile("pi-zero", "Raspberry Pi Zero / Zero W: BCM2835, 1x ARM1176JZF-S @ 1 GHz, "
             "512 MiB LPDDR2, microSD", "linux", 512 * MiB, None, 1.0e9, 1,
             1, 0.2, "VFPv2 scalar FPU, no NEON"),
    _profile("pi-zero-2", "Raspberry Pi Zero 2 W: BCM2710A1, 4x Cortex-A53 @ 1 GHz, "
             "512 MiB LPDDR2, microSD", "linux", 512 * MiB, None, 1.0e9, 4,
             4, 0.25, "A53 NEON over a 64-bit datapath: 2 fp32 FMA/cycle"),
    _profile("pi-4", "Raspberry Pi 4 Model B (4 GiB): BCM2711, 4x Cortex-A72 @ 1.5 GHz, "
             "4 GiB LPDDR4, microSD", "linux", 4 * GiB, None, 1.5e9, 4,
             8, 0.25, "A72 128-bit NEON: one 4-lane fp32 FMA/cycle"),
    _profile("jetson-nano", "NVIDIA Jetson Nano: 4x Cortex-A57 @ 1.43 GHz (CPU only; the "
             "Maxwell GPU is not used), 4 GiB LPDDR4, microSD / 16 GB eMMC", "linux",
             4 * GiB, None, 1.43e9, 4, 8, 0.25, "A57 128-bit NEON: one 4-lane fp32 FMA/cycle"),
    _profile("esp32-s3", "Espressif ESP32-S3 (e.g. ESP32-S3-WROOM-1-N8): 2x Xtensa LX7 "
             "@ 240 MHz, 512 KiB SRAM, 8 MiB flash, no PSRAM", "mcu", 512 * KiB, 8 * MiB,
             240e6, 2, 2, 0.2, "scalar single-precision FPU, madd.s; TFLM float reference "
             "kernels (ESP-NN accelerates int8 only)"),
    _profile("stm32f746", "STMicroelectronics STM32F746 (e.g. 32F746GDISCOVERY): "
             "Cortex-M7 @ 216 MHz, 320 KiB SRAM (incl. 64 KiB DTCM), 1 MiB flash", "mcu",
             320 * KiB, 1 * MiB, 216e6, 1, 2, 0.25, "FPv5-SP FPU, pipelined VFMA.F32; "
             "TFLM float reference kernels"),
    _profile("nrf52840", "Nordic nRF52840: Cortex-M4F @ 64 MHz, 256 KiB RAM, 1 MiB flash",
             "mcu", 256 * KiB, 1 * MiB, 64e6, 1, 2, 0.15, "FPv4-SP FPU, VFMA.F32 issues every "
             "3 cycles; TFLM float reference kernels"),
)}


def get_profile(name):
    """The profile called `name` (case and '_' vs '-' do not matter)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in PROFILES:
        raise EdgekdError(f"unknown device profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[key]
