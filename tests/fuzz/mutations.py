"""The fuzz cases: mutations of the seed files, each a description and a function that makes the mutated bytes.

Field-level (every count, length, type id, dimension, offset and metadata scalar set to edge values; strings made
invalid or duplicated), entry-level (tests/fuzz/entry_mutations.py), truncation at every region boundary, and random
byte flips / insertions / deletions inside the header, metadata and tensor-info regions. `plan(seed, n)` picks n
cases, the same ones for the same seed."""

from __future__ import annotations

import math
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .entry_mutations import entry_edits
from .gguf_edit import GGUFEntries
from .layout import Layout, Slot, ggml_layout, gguf_layout


@dataclass(frozen=True)
class Mutation:
    base: str  # which seed file
    category: str
    desc: str
    make: Callable[[], bytes]


def _put(data: bytes, slot: Slot, raw: bytes) -> bytes:
    return data[: slot.offset] + raw + data[slot.offset + slot.size :]


def _int_values(slot: Slot, value: int) -> list[int]:
    if slot.label.endswith("type"):  # value types 0-12, GGML types 0-39, and unknown ones
        return [*range(0, 42), 255, 2**31]
    top = 2**32 - 1 if slot.kind == "u32" else 2**64 - 1
    edges = [0, 1, value - 1, value + 1, 2 * value, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1]
    return sorted({v for v in edges if 0 <= v <= top and v != value})


def _scalar_values(fmt: str) -> list[object]:
    if fmt in "<f<d":
        return [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3e38]
    if fmt == "<?":
        return [False, True]
    bits = 8 * struct.calcsize(fmt)
    low, high = (0, 2**bits - 1) if fmt[1].isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return sorted({low, high, 0, 1, min(high, 2**16), max(low, -1)})


def _kept(slots: list[Slot]) -> list[Slot]:
    """Array elements past the second are all alike: only the first two and the last of each array are kept."""
    kept = []
    for i, slot in enumerate(slots):
        m = re.search(r"\[(\d+)\]", slot.label)
        nxt = slots[i + 1].label if i + 1 < len(slots) else ""
        last = m is not None and not nxt.startswith(slot.label[: m.start()] + "[")
        if m is None or int(m.group(1)) < 2 or last:
            kept.append(slot)
    return kept


def field_mutations(base: str, data: bytes, layout: Layout) -> list[Mutation]:
    out = []
    slots = _kept(layout.slots)
    for slot in slots:
        if slot.kind in ("u32", "u64"):
            (value,) = struct.unpack_from(slot.fmt, data, slot.offset)
            cat = "type" if slot.label.endswith("type") else "field"
            for v in _int_values(slot, value):
                raw = struct.pack(slot.fmt, v)
                out.append(Mutation(base, cat, f"{slot.label} @{slot.offset} = {v}", partial(_put, data, slot, raw)))
        elif slot.kind == "value":
            for v in _scalar_values(slot.fmt):
                raw = struct.pack(slot.fmt, v)
                out.append(Mutation(base, "field", f"{slot.label} = {v}", partial(_put, data, slot, raw)))
        elif slot.size:
            for desc, raw in _byte_values(slot, data, slots):
                out.append(
                    Mutation(base, "bytes", f"{slot.label} @{slot.offset}: {desc}", partial(_put, data, slot, raw))
                )
    return out


def _byte_values(slot: Slot, data: bytes, slots: list[Slot]) -> list[tuple[str, bytes]]:
    own = data[slot.offset : slot.offset + slot.size]
    values = [("invalid UTF-8", b"\xff" * slot.size), ("NULs", b"\0" * slot.size), ("first byte changed",
              bytes([own[0] ^ 0x20]) + own[1:])]  # fmt: skip
    same = [s for s in slots if s.kind == "bytes" and s.size == slot.size and s.offset != slot.offset]
    if same:
        values.append((f"copy of {same[0].label}", data[same[0].offset : same[0].offset + same[0].size]))
    return values


def _edited(data: bytes, layout: Layout, edit: Callable[[GGUFEntries], None]) -> bytes:
    entries = GGUFEntries(data, layout)
    edit(entries)
    return entries.build()


def truncations(base: str, data: bytes, layout: Layout) -> list[Mutation]:
    cuts = {c for b in layout.boundaries() for c in (b - 1, b, b + 1) if 0 <= c < len(data)} | {len(data) - 1}
    return [Mutation(base, "truncate", f"cut at {c} of {len(data)}", partial(lambda c: data[:c], c)) for c in cuts]


def random_edits(base: str, data: bytes, layout: Layout, seed: int, index: int) -> Mutation:
    """1-4 random byte flips, overwrites, insertions or deletions at bytes of the header's fields."""
    rng = random.Random(f"{seed}:{base}:{index}")
    return Mutation(base, "random", f"random edits #{index} (seed {seed})", partial(_apply_random, data, layout, rng))


def _apply_random(data: bytes, layout: Layout, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        slot = rng.choice(layout.slots)
        pos = min(slot.offset + rng.randrange(max(slot.size, 1)), len(out) - 1)
        op = rng.randrange(4)
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del out[pos : pos + rng.randint(1, 8)]
    return bytes(out)


def structured(base: str, data: bytes) -> list[Mutation]:
    """Every deterministic mutation of one seed file."""
    if base == "ggml":
        layout = ggml_layout(data)
        return field_mutations(base, data, layout) + truncations(base, data, layout)
    layout = gguf_layout(data)
    entry = [Mutation(base, cat, desc, partial(_edited, data, layout, edit)) for cat, desc, edit in
             entry_edits(layout, data)]  # fmt: skip
    return field_mutations(base, data, layout) + entry + truncations(base, data, layout)


GGML_SHARE, RANDOM_SHARE = 0.15, 0.3


def plan(bases: dict[str, bytes], seed: int, n_cases: int) -> list[Mutation]:
    """n_cases mutations, the same for the same seed: per seed file (GGML files get GGML_SHARE of them), cuts at the
    region boundaries first, then the other structured mutations, an equal number from each category, and random
    edits for the rest (RANDOM_SHARE, or all that the structured ones leave once n_cases allows them all)."""
    rng = random.Random(seed)
    picked: list[Mutation] = []
    for base, budget in _budgets(list(bases), n_cases).items():
        data = bases[base]
        layout = ggml_layout(data) if base == "ggml" else gguf_layout(data)
        every = structured(base, data)
        cuts = {f"cut at {c} of {len(data)}" for c in layout.boundaries()}
        n_structured = len(every) if budget >= len(every) else round(budget * (1 - RANDOM_SHARE))
        at_cuts = [m for m in every if m.desc in cuts]
        chosen = rng.sample(at_cuts, min(len(at_cuts), n_structured))
        chosen += _round_robin([m for m in every if m.desc not in cuts], n_structured - len(chosen), rng)
        chosen += [random_edits(base, data, layout, seed, i) for i in range(budget - len(chosen))]
        picked += chosen
    return picked


def _budgets(bases: list[str], n_cases: int) -> dict[str, int]:
    ggml = round(n_cases * GGML_SHARE) if "ggml" in bases else 0
    gguf = [b for b in bases if b != "ggml"]
    budgets = {b: (n_cases - ggml) // len(gguf) for b in gguf}
    budgets[gguf[0]] += n_cases - ggml - sum(budgets.values())
    return {**budgets, **({"ggml": ggml} if ggml else {})}


WEIGHTS = {"metadata": 3, "tensor": 2, "entry": 2}  # per round of the round robin; other categories take 1


def _round_robin(mutations: list[Mutation], n: int, rng: random.Random) -> list[Mutation]:
    """n of the mutations, taken in turn from each category (each shuffled), WEIGHTS at a time."""
    by_category: dict[str, list[Mutation]] = {}
    for m in mutations:
        by_category.setdefault(m.category, []).append(m)
    queues = [(rng.sample(ms, len(ms)), WEIGHTS.get(c, 1)) for c, ms in sorted(by_category.items())]
    out: list[Mutation] = []
    while len(out) < n and any(queue for queue, _ in queues):
        for queue, weight in queues:
            for _ in range(min(weight, len(queue), n - len(out))):
                out.append(queue.pop())
    return out
