"""The CPU thread policy: the decision rule, the /proc/stat meter, and how an engine applies it (fixed and auto)."""

from __future__ import annotations

import gguf
import pytest
import torch

from mistralpy import LLM, SamplingParams, threads
from mistralpy.config import EngineConfig
from mistralpy.errors import InvalidRequestError
from mistralpy.quant.quantized_embedding import QuantizedEmbedding
from mistralpy.quant.quantized_linear import QuantizedLinear
from mistralpy.threads import CpuMeter, ThreadPolicy, threads_for

from .helpers import llama_to_gguf


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cpus", "others", "max_threads", "expected"),
    [
        (2, 0.0, 2, 2),  # quiet: every core
        (2, 0.4, 2, 2),  # 1.6 idle cores round to 2
        (2, 0.7, 2, 1),  # one busy process next to our two threads takes ~0.67 of a core: 1.3 idle
        (2, 1.33, 2, 1),  # two busy processes next to our one thread
        (2, 3.0, 2, 1),  # more busy than cores: still one thread
        (16, 2.0, 8, 8),  # capped by max_threads
        (16, 10.2, 8, 6),  # 5.8 idle cores
    ],
)
def test_threads_are_the_idle_cores_rounded_within_one_and_the_maximum(cpus, others, max_threads, expected):
    assert threads_for(cpus, others, max_threads) == expected


def _write_stat(path, user, system, idle, iowait, steal):
    # cpu user nice system idle iowait irq softirq steal guest guest_nice, then a per-CPU line the meter ignores
    path.write_text(f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_the_meter_counts_other_processes_busy_time_in_cores(tmp_path):
    stat = tmp_path / "stat"
    clock = {"wall": 100.0, "own": 5.0}
    _write_stat(stat, user=1000, system=200, idle=5000, iowait=50, steal=10)
    meter = CpuMeter(str(stat), clock=lambda: clock["wall"], own_cpu=lambda: clock["own"], tick_s=0.01)
    # 2 s later: 300 + 40 + 20 busy ticks (user, system, steal) = 3.6 s of CPU, 0.8 s of it this process's own;
    # idle and iowait ticks are not busy
    clock["wall"], clock["own"] = 102.0, 5.8
    _write_stat(stat, user=1300, system=240, idle=5200, iowait=90, steal=30)
    assert meter.others() == pytest.approx((3.6 - 0.8) / 2.0)
    # a reading is the time since the previous one
    clock["wall"], clock["own"] = 103.0, 6.8
    _write_stat(stat, user=1400, system=240, idle=5300, iowait=90, steal=30)
    assert meter.others() == pytest.approx(0.0)  # this process used all of it


def test_without_proc_stat_auto_keeps_the_maximum(tmp_path):
    meter = CpuMeter(str(tmp_path / "missing"))
    assert not meter.available and meter.others() is None
    policy = ThreadPolicy(None, meter=meter)
    assert policy.threads == policy.max_threads == threads.process_default_threads()


class _FakeMeter:
    available = True

    def __init__(self, others: float) -> None:
        self.value = others

    def others(self) -> float:
        return self.value


def test_auto_starts_on_one_thread_and_follows_the_meter():
    clock = {"t": 0.0}
    torch.set_num_threads(2)
    meter = _FakeMeter(others=0.0)
    policy = ThreadPolicy(None, meter=meter, clock=lambda: clock["t"])
    policy.max_threads, policy.cpus = 2, 2
    assert torch.get_num_threads() == 1  # until the first reading
    assert policy.update() == 1  # not due yet
    clock["t"] = threads.INTERVAL_S
    assert policy.update() == 2 and torch.get_num_threads() == 2  # quiet: both cores
    meter.value = 1.9
    clock["t"] += threads.INTERVAL_S / 2
    assert policy.update() == 2  # readings at most every INTERVAL_S
    clock["t"] += threads.INTERVAL_S
    assert policy.update() == 1 and torch.get_num_threads() == 1  # the cores are taken


def test_a_fixed_thread_count_is_applied_and_never_adapted():
    clock = {"t": 0.0}
    policy = ThreadPolicy(2, meter=_FakeMeter(others=5.0), clock=lambda: clock["t"])
    clock["t"] = 1e9
    assert policy.update() == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_num_threads_is_an_error(bad):
    with pytest.raises(InvalidRequestError, match="num_threads"):
        EngineConfig(num_threads=bad)


def _top_quantized_modules(model: torch.nn.Module) -> int:
    """The modules the loader builds from quantized blocks (a fused projection counts once, not its parts)."""
    kinds = (QuantizedLinear, QuantizedEmbedding)
    names = [n for n, m in model.named_modules() if isinstance(m, kinds)]
    return sum(1 for n in names if not any(n.startswith(f"{other}.") for other in names))


def test_an_engine_consults_its_policy_between_modules_and_before_each_step(tiny_llama, tmp_path, monkeypatch):
    path = tmp_path / "tiny-q4_1.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"": gguf.GGMLQuantizationType.Q4_1})
    calls = []
    update = ThreadPolicy.update
    monkeypatch.setattr(ThreadPolicy, "update", lambda self: calls.append(1) or update(self))
    torch.set_num_threads(2)
    llm = LLM(str(path), num_threads=1)
    assert len(calls) == _top_quantized_modules(llm.engine.model_runner.model) > 0
    assert torch.get_num_threads() == 1
    calls.clear()
    out = llm.generate("hello", SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 5
    assert len(calls) == 5  # one prefill step and four decode steps
    assert torch.get_num_threads() == 1


def test_the_environment_fixes_the_threads_of_engines_given_none(monkeypatch):
    monkeypatch.setenv("MISTRALPY_NUM_THREADS", "1")
    policy = ThreadPolicy(None)
    assert policy.fixed == 1 and policy.update() == 1 and torch.get_num_threads() == 1
    assert ThreadPolicy(2).fixed == 2  # an engine's own count wins
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("MISTRALPY_NUM_THREADS", bad)
        with pytest.raises(InvalidRequestError, match="MISTRALPY_NUM_THREADS must be a positive integer"):
            ThreadPolicy(None)


def test_an_engine_given_no_count_adapts(tiny_llama, monkeypatch):
    """conftest fixes the suite's threads through MISTRALPY_NUM_THREADS; without it an engine's policy is auto."""
    monkeypatch.delenv("MISTRALPY_NUM_THREADS")
    llm = LLM(str(tiny_llama[2]), dtype="float32")
    policy = llm.engine.threads
    assert policy.fixed is None and policy.meter is not None and policy.meter.available
    out = llm.generate("hello", SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 3
    assert 1 <= torch.get_num_threads() <= threads.process_default_threads()
