"""The backend and device of each tensor-parallel rank (NCCL between GPUs, gloo between CPUs), torchrun's variables
read and checked, the StepPayload moved between devices, and a CUDA group asked for where torch sees no CUDA: each
checked against the rule written out here, with no process group formed."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM
from mistralpy.distributed.tensor_parallel.backend import backend_for, rank_device
from mistralpy.distributed.tensor_parallel.step_payload import StepPayload
from mistralpy.distributed.tensor_parallel.torchrun import TorchrunRank, check_world_size, torchrun_rank
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.attention import PrefillSpan

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


def test_backend_follows_the_device():
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cuda")) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def test_each_rank_takes_the_gpu_of_its_local_rank():
    assert rank_device(torch.device("cuda", 0), 3, cuda_count=4) == torch.device("cuda", 3)
    assert rank_device(torch.device("cpu"), 3, cuda_count=0) == torch.device("cpu")
    with pytest.raises(InvalidRequestError, match="needs CUDA device 2, but torch sees 2 CUDA device"):
        rank_device(torch.device("cuda", 0), 2, cuda_count=2)


def test_torchrun_variables():
    assert torchrun_rank({}) is None
    assert torchrun_rank({k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}) is None  # not env:// ready
    assert torchrun_rank(TORCHRUN) == TorchrunRank(rank=1, world_size=2, local_rank=0)
    with pytest.raises(InvalidRequestError, match="RANK 2 is not in"):
        torchrun_rank({**TORCHRUN, "RANK": "2"})
    with pytest.raises(InvalidRequestError, match="must be integers"):
        torchrun_rank({**TORCHRUN, "WORLD_SIZE": "two"})
    check_world_size(None, 4)  # no torchrun: spawned workers, any size
    check_world_size(TorchrunRank(0, 2, 0), 2)
    with pytest.raises(InvalidRequestError, match="torchrun started 2 ranks .* --tensor-parallel-size is 4"):
        check_world_size(TorchrunRank(0, 2, 0), 4)


def test_step_payload_travels_on_the_cpu():
    table = torch.tensor([3, 4])
    payload = StepPayload(
        torch.tensor([5, 6]), torch.tensor([0, 1]), torch.tensor([48, 49]), 0, None, None,
        [PrefillSpan(2, 2, table)], torch.tensor([2]),
    )  # fmt: skip
    moved = payload.to(torch.device("meta"))  # a device other than the CPU, as a GPU would be
    assert moved.input_ids.device.type == "meta" and moved.prefills[0].block_table.device.type == "meta"
    assert moved.decode_block_tables is None and moved.prompt_lens.device.type == "meta"
    assert moved.num_decode_tokens == 0 and moved.prefills[0].num_tokens == 2
    assert payload.prefills[0].block_table is table  # the original untouched


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_group_without_cuda_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="torch sees no CUDA device"):
        LLM(device="cuda", tensor_parallel_size=2, max_model_len=64, kv_cache_tokens=64)


def test_cuda_only_options_refused_with_tensor_parallel():
    with pytest.raises(InvalidRequestError, match="does not support gpu_memory_utilization yet"):
        LLM(device="auto", tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=64, kv_cache_tokens=64)
