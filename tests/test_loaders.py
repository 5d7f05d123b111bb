"""GGUFFile, HFFolder and open_model_source on tiny files written here, and on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants

from mistralpy.errors import ModelLoadError, ModelNotFoundError
from mistralpy.loader import GGUFFile, HFFolder, open_model_source
from mistralpy.loader import gguf as gguf_file

VOCAB, HIDDEN, FFN = 256, 64, 128


def _tiny_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "token_embd.weight": rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(HIDDEN).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32),
        "blk.0.ffn_up.weight": rng.standard_normal((FFN, HIDDEN)).astype(np.float32),
        "rope_freqs.weight": np.linspace(1.0, 8.0, 8, dtype=np.float32),
    }


TYPES = {
    "token_embd.weight": Q.F16,
    "blk.0.attn_norm.weight": Q.F32,
    "blk.0.attn_q.weight": Q.Q8_0,
    "blk.0.ffn_up.weight": Q.Q4_0,
    "rope_freqs.weight": Q.F32,
}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_key_length(16)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(2.0)
    writer.add_token_list([f"tok{i}" for i in range(VOCAB)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_eot_token_id(3)
    for name, data in _tiny_tensors().items():
        qtype = TYPES[name]
        stored = quants.quantize(data, qtype)
        writer.add_tensor(name, stored, raw_dtype=qtype if stored.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_model_config(tiny_gguf: Path) -> None:
    cfg = GGUFFile(tiny_gguf).model_config()
    assert cfg.architecture == "llama"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (VOCAB, HIDDEN, FFN)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 4, 2)
    assert (cfg.max_position_embeddings, cfg.head_dim) == (128, 16)
    assert cfg.rope_theta == 500000.0 and cfg.rms_norm_eps == 1e-5
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert cfg.tie_word_embeddings
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == [2, 3]
    assert cfg.extra["rope_freqs"] == np.linspace(1.0, 8.0, 8, dtype=np.float32).tolist()


def test_gguf_tensors(tiny_gguf: Path) -> None:
    f = GGUFFile(tiny_gguf)
    assert f.tensor_names == list(TYPES)
    assert f.metadata["tokenizer.ggml.tokens"][:2] == ["tok0", "tok1"]
    for name, data in _tiny_tensors().items():
        qtype = TYPES[name]
        assert f.tensor_info(name) == (qtype, data.shape)
        expected = quants.dequantize(quants.quantize(data, qtype), qtype)
        assert torch.equal(f.load_tensor(name), torch.from_numpy(np.ascontiguousarray(expected)))
    raw, qtype, shape = f.raw_tensor("blk.0.ffn_up.weight")
    assert raw.dtype == torch.uint8 and qtype == Q.Q4_0 and shape == (FFN, HIDDEN)
    assert raw.shape == (FFN, HIDDEN // 32 * 18)
    assert f.load_tensor("token_embd.weight", torch.float16).dtype == torch.float16
    assert f.load_tensor("blk.0.attn_q.weight", torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="nope"):
        f.load_tensor("nope")


def test_gguf_tensors_are_copy_on_write(tiny_gguf: Path) -> None:
    norm = GGUFFile(tiny_gguf).load_tensor("blk.0.attn_norm.weight")
    norm.fill_(7.0)
    assert torch.equal(
        GGUFFile(tiny_gguf).load_tensor("blk.0.attn_norm.weight"),
        torch.from_numpy(_tiny_tensors()["blk.0.attn_norm.weight"]),
    )


def test_small_gguf_tensors_are_copied_large_ones_viewed(tiny_gguf: Path, monkeypatch) -> None:
    """A float tensor under SMALL_TENSOR_BYTES is copied out of the map (in place it would keep the pages around it
    resident); a larger one of the dtype asked for is a view of the mapped file."""
    f = GGUFFile(tiny_gguf)
    start, end = f._bytes.data_ptr(), f._bytes.data_ptr() + f._bytes.numel()
    assert not start <= f.load_tensor("blk.0.attn_norm.weight").data_ptr() < end
    monkeypatch.setattr(gguf_file, "SMALL_TENSOR_BYTES", 0)
    assert start <= f.load_tensor("blk.0.attn_norm.weight").data_ptr() < end


def test_gguf_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        GGUFFile(tmp_path / "absent.gguf")


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04" + b"\0" * 100])
def test_not_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="not a GGUF file: .*x.gguf"):
        GGUFFile(path)


@pytest.mark.parametrize("keep", [6, 24, 200, 2000, -100])
def test_truncated_gguf(tiny_gguf: Path, tmp_path: Path, keep: int) -> None:
    data = tiny_gguf.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(ModelLoadError, match="truncated or corrupt GGUF file: .*cut.gguf") as info:
        GGUFFile(path)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, rope_theta=50000.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    model.save_pretrained(path)
    generation = {"eos_token_id": [2, 7], "temperature": 0.6, "top_p": 0.9, "_from_model_config": False}
    (path / "generation_config.json").write_text(json.dumps(generation))
    return path, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_hf_folder(tiny_hf: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = tiny_hf
    folder = HFFolder(path)
    cfg = folder.model_config()
    assert cfg.architecture == "LlamaForCausalLM"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (256, 64, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 16)
    assert cfg.rope_theta == 50000.0 and cfg.rope_scaling is None
    assert cfg.max_position_embeddings == 512 and not cfg.tie_word_embeddings
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == [2, 7]
    assert folder.generation_defaults == {"temperature": 0.6, "top_p": 0.9}
    assert sorted(folder.tensor_names) == sorted(state)
    for name, tensor in state.items():
        assert torch.equal(folder.load_tensor(name), tensor)


def test_hf_rope_scaling_and_shards(tmp_path: Path, tiny_hf: tuple[Path, dict[str, torch.Tensor]]) -> None:
    src, state = tiny_hf
    config = json.loads((src / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(rope_theta=500000.0, eos_token_id=[2, 3], tie_word_embeddings=True)
    config["rope_scaling"] = {"type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    names = sorted(state)
    save_file({n: state[n].contiguous() for n in names[:3]}, str(tmp_path / "a.safetensors"))
    save_file({n: state[n].contiguous() for n in names[3:]}, str(tmp_path / "b.safetensors"))
    index = {"weight_map": {n: "a.safetensors" if i < 3 else "b.safetensors" for i, n in enumerate(names)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    folder = open_model_source(str(tmp_path))
    assert isinstance(folder, HFFolder)
    cfg = folder.model_config()
    assert cfg.rope_theta == 500000.0 and cfg.tie_word_embeddings and cfg.eos_token_ids == [2, 3]
    assert cfg.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}
    assert torch.equal(folder.load_tensor(names[-1], None), state[names[-1]])


def test_hf_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model folder not found"):
        HFFolder(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no config.json"):
        HFFolder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json"):
        HFFolder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        HFFolder(tmp_path)


def test_open_model_source(tmp_path: Path, tiny_gguf: Path, tiny_hf: tuple[Path, dict[str, torch.Tensor]]) -> None:
    assert isinstance(open_model_source(str(tiny_gguf)), GGUFFile)
    assert isinstance(open_model_source(tiny_hf[0]), HFFolder)
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(tiny_gguf.read_bytes())
    assert isinstance(open_model_source(renamed), GGUFFile)
    with pytest.raises(ModelNotFoundError):
        open_model_source(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no model in"):
        open_model_source(_empty_dir(tmp_path))
    one = _empty_dir(tmp_path, "one")
    (one / "m.gguf").write_bytes(tiny_gguf.read_bytes())
    assert isinstance(open_model_source(one), GGUFFile)
    (one / "n.gguf").write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        open_model_source(one)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="unsupported model file"):
        open_model_source(tmp_path / "notes.txt")


def _empty_dir(parent: Path, name: str = "empty") -> Path:
    path = parent / name
    path.mkdir()
    return path


def _model_folder(folder: Path, src: Path, shard: object = None) -> Path:
    """src's config.json and weights copied into `folder`, with an index naming `shard` for one tensor."""
    from safetensors import safe_open

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((src / "config.json").read_text())
    (folder / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    if shard is not None:
        with safe_open(str(src / "model.safetensors"), framework="pt") as f:
            weight_map = dict.fromkeys(f.keys(), "model.safetensors")
        weight_map[next(iter(weight_map))] = shard
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside/w.safetensors", "sub/../../outside/w.safetensors",
                                   "link.safetensors", "linkdir/w.safetensors", 7, ""])  # fmt: skip
def test_hf_shard_names_stay_inside_the_folder(tmp_path: Path, tiny_hf, shard) -> None:
    src = tiny_hf[0]
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    folder = _model_folder(tmp_path / "model", src, shard)
    (folder / "link.safetensors").symlink_to(tmp_path / "outside" / "w.safetensors")
    (folder / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ModelLoadError, match="outside the model folder|not a file name"):
        HFFolder(folder)


def test_hf_weights_inside_the_folder_load(tmp_path: Path, tiny_hf) -> None:
    src = tiny_hf[0]
    folder = _model_folder(tmp_path / "model", src, "sub/model.safetensors")
    (folder / "sub").mkdir()
    (folder / "sub" / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    name = next(iter(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]))
    assert torch.equal(HFFolder(folder).load_tensor(name), tiny_hf[1][name])  # read from sub/
    # the Hugging Face cache: snapshots/<revision>/ links every file into blobs/
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (repo / "blobs" / name).write_bytes((src / name).read_bytes())
        (snapshot / name).symlink_to(Path("../../blobs") / name)
    assert sorted(HFFolder(snapshot).tensor_names) == sorted(HFFolder(folder).tensor_names)
    # without an index, a *.safetensors file linked from elsewhere is refused too
    (tmp_path / "elsewhere.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    plain = _model_folder(tmp_path / "plain", src)
    (plain / "extra.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        HFFolder(plain)
