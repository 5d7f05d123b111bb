"""Which of our modules each Megatron split applies to, by the module's name (the families share these names)."""

COLUMN_PARTS = {  # a column-parallel module -> the kinds of the parts fused in it
    "qkv_proj": ("q", "kv", "kv"),
    "q_proj": ("q",),
    "k_proj": ("kv",),
    "v_proj": ("kv",),
    "gate_up_proj": ("mlp", "mlp"),
    "w13": ("mlp", "mlp"),
    "gate_proj": ("mlp",),
    "up_proj": ("mlp",),
    "fc1": ("mlp",),
    "w1": ("mlp",),
    "w3": ("mlp",),
}
ROW_PARALLEL = frozenset({"o_proj", "dense", "down_proj", "fc2", "w2"})
VOCAB_PARALLEL = frozenset({"embed_tokens", "lm_head"})
