"""The Emu3.5 decoder LM: one file, read top-down (cache -> model -> block -> attention -> MLP -> norm -> RoPE).

Qwen3-style decoder: pre-norm RMSNorm, GQA attention with RMSNorm on q and k per head (before
RoPE), rotate-half RoPE over the full head_dim, SwiGLU MLP, no biases, untied lm_head. Module
attribute names equal the official checkpoint keys (``model.layers.N.self_attn.q_proj.weight``,
...), so official safetensors shards load with no renaming. Numerics follow the official HF
file (baaivision/Emu3.5 src/emu3p5/modeling_emu3.py): RMS in fp32 then cast back before the
weight multiply, RoPE tables in fp32 cast to the activation dtype, logits returned in fp32.

Two calling modes:
* ``model(input_ids)``: plain causal forward over positions 0..T-1, no cache touched.
* ``model(input_ids, input_pos)`` after ``setup_caches``: incremental decoding against the static
  KV cache. ``input_pos`` is [B, T] so each batch row (CFG's cond / uncond streams) keeps its own
  position; cache row b holds stream b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configuration_emu3 import Emu3Config


class KVCache(nn.Module):
    """Preallocated keys/values for every row and position; ``update`` writes in place."""

    def __init__(self, max_batch: int, max_seq: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None) -> None:
        super().__init__()
        shape = (max_batch, n_kv_heads, max_seq, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, T, D] at per-row positions input_pos [B, T]; return rows [:B]."""
        b, h, t, d = k.shape
        index = input_pos[:, None, :, None].expand(b, h, t, d)
        k_rows, v_rows = self.k_cache[:b], self.v_cache[:b]   # views: scatter_ writes the buffers
        k_rows.scatter_(2, index, k.to(k_rows.dtype))
        v_rows.scatter_(2, index, v.to(v_rows.dtype))
        return k_rows, v_rows


class Emu3ForCausalLM(nn.Module):
    """Decoder LM + lm_head. ``forward`` returns fp32 logits [B, T, vocab] (or [B, 1, vocab])."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.config = config
        self.model = Emu3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_batch = 0
        self.max_seq = 0

    def setup_caches(self, max_batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """Allocate the static KV cache once; a call that fits the existing cache does nothing."""
        weight = self.lm_head.weight
        dtype = dtype or weight.dtype
        layer0 = self.model.layers[0].self_attn.kv_cache
        if (layer0 is not None and self.max_batch >= max_batch and self.max_seq >= max_seq
                and layer0.k_cache.dtype == dtype and layer0.k_cache.device == weight.device):
            return
        if max_seq > self.config.max_position_embeddings:
            raise ValueError(f"max_seq={max_seq} exceeds config max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        self.max_batch, self.max_seq = max_batch, max_seq
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(max_batch, max_seq, self.config.num_key_value_heads,
                                               self.config.head_dim, dtype, weight.device)

    def clear_caches(self) -> None:
        """Free the KV cache memory (a later setup_caches allocates again)."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.max_batch = self.max_seq = 0

    def forward(self, input_ids: Tensor, input_pos: Tensor | None = None, kv_len: int | None = None,
                keep: int | None = None, attention_mask: Tensor | None = None, block: bool = False) -> Tensor:
        """input_ids [B, T]; input_pos [B, T] (or [T]) selects cached decoding; kv_len bounds attention.

        keep=i returns logits [B, 1, vocab] of position i only (e.g. -1): decoding needs just the
        next-token distribution, so the other T-1 vocabulary projections are skipped.
        attention_mask [B, T] (1 = token, 0 = padding) applies to the uncached forward only.
        block=True (cached only): the T tokens attend causally to the cached prefix and to each other
        in both directions -- the attention pattern of a parallel (DiDA) image pass.
        """
        hidden = self.model(input_ids, input_pos, kv_len, attention_mask, block)
        if keep is not None:
            hidden = hidden[:, keep].unsqueeze(1)
        return self.lm_head(hidden).float()


class Emu3Model(nn.Module):
    """Embedding, decoder layers, final norm (the checkpoint's ``model.*`` tensors)."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=None)
        self.layers = nn.ModuleList(Emu3DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = Emu3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    def reset_buffers(self) -> None:
        """Recompute non-checkpoint buffers (needed after building on the meta device)."""
        self.inv_freq = rope_inv_freq(self.config, device=self.embed_tokens.weight.device)

    def forward(self, input_ids: Tensor, input_pos: Tensor | None = None, kv_len: int | None = None,
                attention_mask: Tensor | None = None, block: bool = False) -> Tensor:
        """Hidden states [B, T, hidden] after the final norm."""
        b, t = input_ids.shape
        use_cache = input_pos is not None
        if not use_cache:
            positions = torch.arange(t, device=input_ids.device).expand(b, t)
            mask = None                                                   # SDPA's is_causal
            if attention_mask is not None and not bool(attention_mask.all()):
                causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
                # padding keys are hidden; each position still sees itself so no softmax row is empty
                mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(
                    t, dtype=torch.bool, device=input_ids.device)          # [B, 1, T, T]
        else:
            if self.layers[0].self_attn.kv_cache is None:
                raise RuntimeError("input_pos given but the KV cache is not set up; call setup_caches() first")
            positions = input_pos.expand(b, t) if input_pos.dim() == 1 else input_pos
            kv_len = kv_len or self.layers[0].self_attn.kv_cache.k_cache.shape[2]
            keys = torch.arange(kv_len, device=input_ids.device)
            # causal: key j visible to a query at position p when j <= p; block: j <= the block's last position
            limit = positions[:, -1:].expand(b, t) if block else positions
            mask = keys[None, None, None, :] <= limit[:, None, :, None]          # [B, 1, T, S]
        x = self.embed_tokens(input_ids)
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:   # model.to(bf16) casts buffers; angles must stay fp32
            inv_freq = rope_inv_freq(self.config, device=x.device)
        cos, sin = rope_cos_sin(inv_freq, positions, self.config.rope_linear_factor, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, positions if use_cache else None, kv_len)
        return self.norm(x)


class Emu3DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.self_attn = Emu3Attention(config)
        self.mlp = Emu3MLP(config)
        self.input_layernorm = Emu3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Emu3RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                input_pos: Tensor | None, kv_len: int | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x))


class Emu3Attention(nn.Module):
    """GQA attention with per-head RMSNorm on q and k (before RoPE), no biases."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        self.q_norm = Emu3RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = Emu3RMSNorm(self.head_dim, config.rms_norm_eps)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                input_pos: Tensor | None, kv_len: int | None) -> Tensor:
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.head_dim)).transpose(1, 2)     # [B, H, T, D]
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)              # [B, Hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if input_pos is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               enable_gqa=self.n_heads != self.n_kv_heads)
        else:
            k, v = self.kv_cache.update(input_pos, k, v)
            k, v = k[:, :, :kv_len], v[:, :, :kv_len]                                               # [B, Hkv, S, D]
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask,
                                               enable_gqa=self.n_heads != self.n_kv_heads)
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)                          # [B, T, H*D]
        return self.o_proj(y)


class Emu3MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Emu3RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled (official order)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


# ------------------------------------------------------------------------------------------ RoPE
def rope_inv_freq(config: Emu3Config, device: torch.device | str | None = None) -> Tensor:
    """Inverse frequencies theta^(-2i/D), i < D/2, in fp32 (full head_dim is rotated)."""
    d = config.head_dim
    return 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, device=device).float() / d))


def rope_cos_sin(inv_freq: Tensor, positions: Tensor, linear_factor: float,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin [B, 1, T, D] for integer positions [B, T]; angles in fp32, then cast like the official code."""
    t = positions.to(torch.float32)
    if linear_factor != 1.0:
        t = t / linear_factor
    freqs = t[..., None] * inv_freq                       # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]      # [B, 1, T, D] rotate-half layout
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, T, D] by the position angles."""
    return x * cos + rotate_half(x) * sin
