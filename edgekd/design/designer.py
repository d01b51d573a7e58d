"""The designer: the largest student of the teacher's family that meets the device's limits.

Search space (see `candidates`). The teacher spec is split into
  prefix        layers before its first dense/conv layer (e.g. flatten, dropout), kept;
  conv blocks   a conv1d/conv2d layer and the layers that follow it up to the next
                dense/conv layer (pooling, batchnorm, dropout, flatten, global_avgpool);
  dense blocks  a hidden dense layer and its trailing batchnorm/dropout;
  head          the last dense layer, replaced by dense(num_classes, no activation); any
                layer after it is dropped (a flatten is added when the body ends spatial).
Students keep the first `d` conv blocks (1..teacher's count) and the first `e` hidden dense
blocks (1..teacher's count for an MLP; 0..count for the head of a conv net). A dropped
block loses its dense/conv layer and its batchnorm/dropout but keeps its pooling, flatten
and global_avgpool layers, so the spatial size reaching the head stays small. Every kept
width (units/filters) is the teacher's width x one multiplier m from a geometric grid
(8 steps per octave, 1 down to 1/64), rounded to a multiple of 8 when >= 32, of 4 when
>= 8, to an integer below that, at least 2 and never above the teacher's width (m = 1 is
the teacher's width exactly). So a student is never larger than its teacher, and keeps its
family, input shape and number of classes.

Choice: among the candidates that meet every given constraint, the one with the most
params; ties go to fewer FLOPs, then less training RAM. With `max_teacher_fraction` (the
CLI's default: a quarter) the student has at most that share of the teacher's params, so a
device roomy enough for the teacher still gets a student (binding "size"); where no
candidate is that small, the smallest that fits. Costs are analytic (`cost.py`):
no weight array is allocated during the search.
"""

import copy
import json
from dataclasses import asdict, dataclass, field, fields

from ..errors import EdgekdError
from ..nn.layers import REGISTRY
from ..nn.spec import plan_layers
from .board_memory import DEFAULT_MAX_PAYLOAD, designed_plan
from .cost import ModelCost, check_batch, check_optimizer, model_cost
from .tflm_cost import tflm_cost
from .units import format_bytes, format_flops, format_seconds

# what the layers say of themselves: the spec key of their width, and whether a dropped
# block keeps them (they shrink or reshape the tensor without weights)
WIDTH_KEY = {t: cls.width_key for t, cls in REGISTRY.items() if cls.width_key}
STRUCTURAL = {t for t, cls in REGISTRY.items() if cls.structural}
MULTIPLIERS = tuple(2.0 ** (-k / 8) for k in range(49))   # 1 .. 1/64
MIN_WIDTH = 2
CONSTRAINT_NAMES = ("storage", "ram", "latency")
RAM_FOR = ("train", "infer", "board-train")
MAX_TEACHER_FRACTION = 0.25


@dataclass(frozen=True)
class Constraints:
    """Limits for the student; None means unconstrained.

    storage_format chooses which deployed size must fit `storage_bytes`: "float32" (the
    trainer's weights, the default) or "int8" (a full-integer TFLite export). ram_for
    chooses what must fit `ram_bytes`: "train" (training one batch on the device, the
    default) or "infer" (the TFLM tensor arena of the student exported in storage_format,
    as predicted by tflm_cost.py; for a microcontroller that only runs the student, which
    is trained elsewhere) or "board-train" (the training arena of `edgekd board train`
    on a microcontroller, board_memory.py: dense students only, with one settle byte for
    each of `train_samples`)."""
    storage_bytes: int | None = None
    ram_bytes: int | None = None          # training: weights + grads + optimizer + activations
    flops_per_s: float | None = None      # device speed, needed for latency
    max_latency_s: float | None = None    # one inference
    batch: int = 32
    optimizer: str = "adam"
    storage_format: str = "float32"
    ram_for: str = "train"                # "infer": ram_bytes bounds one inference instead
    max_teacher_fraction: float | None = None   # cap on the student's share of the teacher
    storage_is_tflite: bool = False       # storage must hold the .tflite (a board's flash)
    train_samples: int = 0                # board-train: samples the board tracks for settling

    @classmethod
    def from_profile(cls, profile, **overrides):
        """What a profile's board gives a model: its flash (less the firmware's), its RAM for
        training, or on a microcontroller the tensor arena it gives a model (ram_for "infer",
        the default there) or the RAM the firmware leaves (ram_for "train"); its speed and
        latency budget; ram_for "board-train" gives training on the board the RAM the firmware
        leaves (a firmware built with that EKB_TRAIN_ARENA). Keyword arguments override any
        of them (None lifts a limit)."""
        mcu = profile.kind == "mcu"
        ram_for = overrides.get("ram_for") or ("infer" if mcu else "train")
        if ram_for == "board-train" and not mcu:
            raise EdgekdError(f"ram_for board-train is for microcontroller profiles; "
                              f"{profile.name} trains with `edgekd train` (ram_for train)")
        base = {"storage_bytes": profile.model_flash_bytes,
                "ram_bytes": profile.arena_bytes if ram_for == "infer" else profile.model_ram_bytes,
                "flops_per_s": profile.flops_per_s, "max_latency_s": profile.max_latency_s,
                "storage_format": "int8" if mcu else "float32", "ram_for": ram_for,
                "storage_is_tflite": mcu}
        base.update({k: v for k, v in overrides.items() if k != "ram_for" or v is not None})
        return cls(**base)


@dataclass(frozen=True)
class Candidate:
    spec: dict
    conv_blocks: int
    dense_blocks: int
    multiplier: float
    widths: tuple          # units/filters of every kept hidden layer, in order


@dataclass(frozen=True)
class Design:
    spec: dict                   # the student, valid for plan_layers
    family: str                  # "mlp", "conv1d" or "conv2d"
    params: int
    flops: int                   # one inference, one sample
    storage_bytes: int           # float32 weights
    int8_storage_bytes: int
    train_ram_bytes: int
    infer_ram_bytes: int
    tflite_bytes: int            # predicted .tflite size (in storage_format; tflm_cost.py)
    arena_bytes: int             # predicted TFLM tensor arena (same)
    latency_s: float | None      # None without a speed
    binding: str                 # "storage", "ram", "latency" or "none"
    usage: dict                  # constraint name -> used/limit (None when unconstrained)
    conv_blocks: int
    dense_blocks: int
    width_multiplier: float
    widths: tuple
    teacher_params: int
    candidates: int              # distinct students costed
    constraints: Constraints
    cost: ModelCost = field(repr=False)
    board_train: dict | None = None   # board profiles: the board's training RAM (board_memory)

    def to_dict(self):
        """JSON-friendly summary (no per-layer breakdown)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cost"}
        d["constraints"] = asdict(self.constraints)
        d["widths"] = list(self.widths)
        return d


# -- the teacher's structure ------------------------------------------------------------------

@dataclass
class _Structure:
    family: str
    input_shape: list
    num_classes: int
    prefix: list
    conv_blocks: list      # each a list of layer dicts, the width layer first
    dense_blocks: list
    needs_flatten: bool


def _structure(teacher):
    layers = teacher["layers"]
    width_idx = [i for i, entry in enumerate(layers) if entry["type"] in WIDTH_KEY]
    if width_idx and layers[width_idx[-1]]["type"] == "dense":
        body = layers[:width_idx[-1]]
    else:
        body = list(layers)
    shapes = plan_layers({**teacher, "layers": body}, "teacher spec", whole=False) if body else []
    end_rank = len(shapes[-1].out_shape) if shapes else len(teacher["input_shape"])
    first = next((i for i, e in enumerate(body) if e["type"] in WIDTH_KEY), len(body))
    prefix, blocks = body[:first], []
    for entry in body[first:]:
        if entry["type"] in WIDTH_KEY:
            blocks.append([entry])
        else:
            blocks[-1].append(entry)
    conv = [b for b in blocks if b[0]["type"] != "dense"]
    dense = [b for b in blocks if b[0]["type"] == "dense"]
    kinds = {b[0]["type"] for b in conv}
    family = "conv2d" if "conv2d" in kinds else "conv1d" if "conv1d" in kinds else "mlp"
    return _Structure(family, list(teacher["input_shape"]), teacher["num_classes"], prefix,
                      conv, dense, end_rank > 1)


def round_width(x, cap):
    """Teacher width x multiplier -> a board-friendly width in [min(2, cap), cap]."""
    if x >= 32:
        w = 8 * int(x / 8 + 0.5)
    elif x >= 8:
        w = 4 * int(x / 4 + 0.5)
    else:
        w = int(x + 0.5)
    return min(max(w, MIN_WIDTH), cap)


def _blocks(blocks, keep, m, widths):
    out = []
    for i, block in enumerate(blocks):
        if i >= keep:
            out += [copy.deepcopy(e) for e in block[1:] if e["type"] in STRUCTURAL]
            continue
        head, rest = block[0], block[1:]
        key = WIDTH_KEY[head["type"]]
        w = head[key] if m == 1 else round_width(head[key] * m, head[key])
        widths.append(w)
        out.append({**copy.deepcopy(head), key: w})
        out += [copy.deepcopy(e) for e in rest]
    return out


def _depths(s):
    if s.family == "mlp":
        return [(0, e) for e in range(len(s.dense_blocks), min(1, len(s.dense_blocks)) - 1, -1)]
    return [(d, e) for d in range(len(s.conv_blocks), 0, -1)
            for e in range(len(s.dense_blocks), -1, -1)]


def _candidates(s):
    seen, out = set(), []
    for d, e in _depths(s):
        for m in MULTIPLIERS:
            widths = []
            layers = copy.deepcopy(s.prefix)
            layers += _blocks(s.conv_blocks, d, m, widths)
            layers += _blocks(s.dense_blocks, e, m, widths)
            if s.needs_flatten:
                layers.append({"type": "flatten"})
            layers.append({"type": "dense", "units": s.num_classes})
            spec = {"input_shape": list(s.input_shape), "num_classes": s.num_classes,
                    "layers": layers}
            key = json.dumps(layers, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(Candidate(spec, d, e, m, tuple(widths)))
    return out


def _costed(teacher_spec, batch=32, optimizer="adam"):
    """(structure, teacher params, [(candidate, cost)]) for every distinct student on the grid
    with no more params than the teacher (dropping a strided conv can grow a flatten head),
    the teacher-size one first."""
    teacher_params = sum(p.param_elems for p in plan_layers(teacher_spec, "teacher spec"))
    s = _structure(teacher_spec)
    costed = [(cand, model_cost(cand.spec, batch, optimizer))
              for cand in _candidates(s)]
    return s, teacher_params, [(a, c) for a, c in costed if c.params <= teacher_params]


def candidates(teacher_spec):
    """Every distinct student on the grid, the teacher-size one first."""
    return [cand for cand, _ in _costed(teacher_spec)[2]]


def family_of(teacher_spec):
    return _structure(teacher_spec).family


# -- constraints --------------------------------------------------------------------------------

def _as_constraints(c):
    if c is None:
        return Constraints()
    if isinstance(c, Constraints):
        return c
    if isinstance(c, dict):
        names = {f.name for f in fields(Constraints)}
        unknown = set(c) - names
        if unknown:
            raise EdgekdError(f"unknown constraint(s) {sorted(unknown)}; known: {sorted(names)}")
        return Constraints(**c)
    raise EdgekdError(f"constraints must be a Constraints or a dict, got {type(c).__name__}")


def _check(c):
    check_batch(c.batch)
    check_optimizer(c.optimizer)
    if c.storage_format not in ("float32", "int8"):
        raise EdgekdError(f"storage_format must be float32 or int8, got {c.storage_format!r}")
    if c.ram_for not in RAM_FOR:
        raise EdgekdError(f"ram_for must be one of {', '.join(RAM_FOR)}, got {c.ram_for!r}")
    for name in ("storage_bytes", "ram_bytes", "flops_per_s", "max_latency_s"):
        v = getattr(c, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise EdgekdError(f"constraint {name} must be a non-negative number, got {v!r}")
    if c.flops_per_s is not None and c.flops_per_s <= 0:
        raise EdgekdError(f"speed must be positive, got {c.flops_per_s!r} FLOP/s")
    if c.max_teacher_fraction is not None and not 0 < c.max_teacher_fraction <= 1:
        raise EdgekdError(f"max_teacher_fraction must be in (0, 1], got {c.max_teacher_fraction!r}")
    if c.max_latency_s is not None and c.flops_per_s is None:
        raise EdgekdError("a latency limit needs a device speed (FLOP/s): give a profile, "
                          "a speed, or measure one with `edgekd profile`")


def _used(cost, c, spec):
    """constraint name -> (used, limit) for the constraints that are set. RAM for inference
    is the TFLM tensor arena predicted for the export format (boards run students in TFLM)."""
    out = {}
    int8 = c.storage_format == "int8"
    if c.storage_bytes is not None:
        if c.storage_is_tflite:
            stored = tflm_cost(spec, int8=int8).model_bytes
        else:
            stored = cost.int8_storage_bytes if int8 else cost.storage_bytes
        out["storage"] = (stored, c.storage_bytes)
    if c.ram_bytes is not None:
        if c.ram_for == "infer":
            ram = tflm_cost(spec, int8=int8).arena_bytes
        elif c.ram_for == "board-train":
            plan = board_plan(spec, c)
            if plan is None:   # the family is checked first: no sample fits a board's frame
                raise EdgekdError(f"a board cannot train this student: one sample of "
                                  f"{spec['input_shape'][0]:,} inputs does not fit the "
                                  f"firmware's {DEFAULT_MAX_PAYLOAD:,}-byte frames")
            ram = plan["arena"]
        else:
            ram = cost.train_ram_bytes
        out["ram"] = (ram, c.ram_bytes)
    if c.max_latency_s is not None:
        out["latency"] = (cost.flops / c.flops_per_s, c.max_latency_s)
    return out


def _ratio(used, limit):
    if limit == 0:
        return 0.0 if used == 0 else float("inf")
    return used / limit


def _describe(name, used, limit, c):
    if name == "storage":
        what = "int8 storage" if c.storage_format == "int8" else "storage"
        what = f"{c.storage_format} .tflite in flash" if c.storage_is_tflite else what
        return f"{format_bytes(used)} of {what}, the budget is {format_bytes(limit)}"
    if name == "ram" and c.ram_for == "board-train":
        return (f"{format_bytes(used)} of board training arena (batch {c.batch}, "
                f"{c.optimizer}, {c.train_samples:,} samples), the budget is "
                f"{format_bytes(limit)}")
    if name == "ram" and c.ram_for == "infer":
        return (f"{format_bytes(used)} of TFLM arena ({c.storage_format}), the budget is "
                f"{format_bytes(limit)}")
    if name == "ram":
        return (f"{format_bytes(used)} of training RAM (batch {c.batch}, {c.optimizer}), "
                f"the budget is {format_bytes(limit)}")
    return (f"{format_seconds(used)} per inference at "
            f"{format_flops(c.flops_per_s, per_second=True)}, the limit is "
            f"{format_seconds(limit)}")


def _over(ratio):
    if ratio == float("inf"):
        return "infinitely over"
    return f"{(ratio - 1) * 100:.1f}% over" if ratio < 2 else f"{ratio:.3g}x over"


def _nothing_fits(uses, c):
    """Raise the one-line error for `uses` (each candidate's _used), none of which fits."""
    names = list(uses[0])
    best = {}
    for name in names:
        used, limit = min((u[name] for u in uses), key=lambda ul: ul[0])
        best[name] = (_ratio(used, limit), used, limit)
    impossible = [n for n in names if best[n][0] > 1]
    if impossible:
        name = max(impossible, key=lambda n: best[n][0])
        ratio, used, limit = best[name]
        raise EdgekdError(f"nothing fits: the smallest student needs "
                          f"{_describe(name, used, limit, c)} ({_over(ratio)})")
    # each limit alone can be met, but not all at once: report the closest student
    def worst(used):
        return max((_ratio(u, lim), n, u, lim) for n, (u, lim) in used.items())
    ratio, name, used, limit = min(worst(u) for u in uses)
    raise EdgekdError(f"nothing fits all limits at once: the closest student needs "
                      f"{_describe(name, used, limit, c)} ({_over(ratio)})")


# -- the search ---------------------------------------------------------------------------------

def design(teacher_spec, constraints=None):
    """The largest student of `teacher_spec`'s family meeting `constraints` (a Constraints
    or a dict of its fields). Raises EdgekdError (one line) when nothing fits."""
    c = _as_constraints(constraints)
    _check(c)
    s, teacher_params, costed = _costed(teacher_spec, c.batch, c.optimizer)
    if c.ram_for == "board-train" and s.family != "mlp":
        raise EdgekdError(f"boards train dense (MLP) students only; this teacher is a "
                          f"{s.family}: design with ram_for infer and train it on the device")
    uses = [_used(cost, c, cand.spec) for cand, cost in costed]
    fitting = [(i, cand, cost) for i, (cand, cost) in enumerate(costed)
               if all(_ratio(u, lim) <= 1 for u, lim in uses[i].values())]
    if not fitting:
        _nothing_fits(uses, c)
    def largest(options):
        return min(options, key=lambda t: (-t[2].params, t[2].flops, t[2].train_ram_bytes, t[0]))
    i, cand, cost = largest(fitting)
    capped = c.max_teacher_fraction is not None and cost.params > c.max_teacher_fraction * teacher_params
    if capped:
        small = [t for t in fitting if t[2].params <= c.max_teacher_fraction * teacher_params]
        i, cand, cost = largest(small) if small else min(fitting, key=lambda t: t[2].params)
    plan_layers(cand.spec, where="designed student")   # it must be valid
    used = uses[i]
    tflm = tflm_cost(cand.spec, int8=c.storage_format == "int8")
    usage = {n: (_ratio(*used[n]) if n in used else None) for n in CONSTRAINT_NAMES}
    if capped:
        binding = "size"   # the device would take a larger student; the cap decided
    elif i == 0 or not used:
        binding = "none"   # the teacher-size student fits: no limit decided the size
    else:
        binding = max(used, key=lambda n: _ratio(*used[n]))
    return Design(spec=cand.spec, family=s.family, params=cost.params, flops=cost.flops,
                  storage_bytes=cost.storage_bytes, int8_storage_bytes=cost.int8_storage_bytes,
                  train_ram_bytes=cost.train_ram_bytes, infer_ram_bytes=cost.infer_ram_bytes,
                  tflite_bytes=tflm.model_bytes, arena_bytes=tflm.arena_bytes,
                  latency_s=cost.latency_s(c.flops_per_s), binding=binding, usage=usage,
                  conv_blocks=cand.conv_blocks, dense_blocks=cand.dense_blocks,
                  width_multiplier=cand.multiplier, widths=cand.widths,
                  teacher_params=teacher_params, candidates=len(costed), constraints=c,
                  cost=cost, board_train=board_plan(cand.spec, c)
                  if c.storage_is_tflite or c.ram_for == "board-train" else None)


def board_plan(spec, c):
    """The board's training memory for `spec` under `c` (board_memory), None when a board
    cannot train it (not a dense MLP)."""
    return designed_plan(spec, c.optimizer, c.batch, samples=c.train_samples)


# -- a family given by name instead of a teacher --------------------------------------------------

FAMILIES = ("mlp", "conv1d", "conv2d")


def template_spec(family, input_shape, num_classes):
    """A teacher-sized template of `family` to design from when there is no teacher:
    mlp 256-256; conv1d 32-64-64 filters (kernel 5) / conv2d 16-32-64 (3x3), 'same'
    padding, a 2x max pool after each block while the input stays >= 4 long, then global
    average pooling and a 64-unit dense layer."""
    shape = list(input_shape)
    if family == "mlp":
        layers = [{"type": "flatten"}] if len(shape) > 1 else []
        layers += [{"type": "dense", "units": 256, "activation": "relu"},
                   {"type": "dense", "units": 256, "activation": "relu"}]
    elif family in ("conv1d", "conv2d"):
        rank = 2 if family == "conv1d" else 3
        if len(shape) != rank:
            raise EdgekdError(f"family {family} needs an input shape of rank {rank} "
                              f"(channels last), got {shape}")
        spatial = shape[:-1]
        layers = []
        for filters in ((32, 64, 64) if family == "conv1d" else (16, 32, 64)):
            layers.append({"type": family, "filters": filters,
                           "kernel_size": 5 if family == "conv1d" else 3,
                           "padding": "same", "activation": "relu"})
            if all(n >= 4 for n in spatial):
                layers.append({"type": "maxpool1d" if family == "conv1d" else "maxpool2d",
                               "pool_size": 2})
                spatial = [n // 2 for n in spatial]
        layers += [{"type": "global_avgpool"},
                   {"type": "dense", "units": 64, "activation": "relu"}]
    else:
        raise EdgekdError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    spec = {"input_shape": shape, "num_classes": num_classes,
            "layers": layers + [{"type": "dense", "units": num_classes}]}
    plan_layers(spec, where=f"{family} template")
    return spec
