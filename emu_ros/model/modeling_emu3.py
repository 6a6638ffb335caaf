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

Attention never builds a dense [B, 1, T, S] mask when causality or a key length says the same
thing, because a mask keeps SDPA off its flash kernel (``plan_cached_attention`` decides once per
forward; ``attention_paths()`` counts what ran, ``force_masked_attention()`` forces the old path).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configuration_emu3 import Emu3Config

try:                                      # optional: per-row cache lengths without a mask (CUDA fp16/bf16 only)
    from flash_attn import flash_attn_with_kvcache
except (ImportError, OSError):
    flash_attn_with_kvcache = None


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


# ------------------------------------------------------------------------------ attention dispatch
# Paths, one decision per forward (not per layer):
#   sdpa_causal         is_causal=True: the uncached forward, or a cached prefill from position 0
#   sdpa_nomask         no mask over keys [:L]: every row at one position, T == 1 or a DiDA block
#   flash_attn_kvcache  rows at different positions, T == 1 or block, flash_attn on CUDA fp16/bf16
#   sdpa_keymask        the same without flash_attn: a per-row key-length mask [B, 1, 1, S]
#   sdpa_masked         the general dense mask [B, 1, T, S] (padding, chunks after a prefix)
ATTENTION_PATHS: Counter[str] = Counter()
_PATHS_LOCK = threading.Lock()
_FORCE_MASKED = False


def attention_paths() -> dict[str, int]:
    """Forwards per attention path since the last reset (compiled forwards are not counted)."""
    with _PATHS_LOCK:
        return dict(ATTENTION_PATHS)


def reset_attention_paths() -> None:
    with _PATHS_LOCK:
        ATTENTION_PATHS.clear()


def _record_attention_path(path: str) -> None:
    if torch.compiler.is_compiling():     # a lock cannot be traced; the path is fixed at trace time anyway
        return
    with _PATHS_LOCK:
        ATTENTION_PATHS[path] += 1


@contextlib.contextmanager
def force_masked_attention(enabled: bool = True) -> Iterator[None]:
    """Route every forward through the dense-mask path (the reference for parity checks).

    Process-wide, not per thread: it is a debugging switch, and a module flag stays traceable.
    """
    global _FORCE_MASKED
    previous, _FORCE_MASKED = _FORCE_MASKED, enabled
    try:
        yield
    finally:
        _FORCE_MASKED = previous


def flash_kvcache_usable(k_cache: Tensor, dtype: torch.dtype) -> bool:
    """flash_attn_with_kvcache can serve this call: installed, CUDA fp16/bf16, no autograd, not traced
    (it is no torch custom op, so torch.compile(fullgraph=True) could not capture it)."""
    return (flash_attn_with_kvcache is not None and k_cache.is_cuda and dtype in (torch.float16, torch.bfloat16)
            and k_cache.dtype == dtype and k_cache.shape[-1] <= 256 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


def plan_cached_attention(positions: Tensor, kv_len: int, block: bool, uniform_len: int | None,
                          flash_ok: bool) -> tuple[str, Tensor | None, int, Tensor | None]:
    """Pick the cheapest exact attention for a cached forward: (path, mask, keys to read, cache_seqlens).

    Decided from host-side facts only (shapes, ``block``, the caller's ``uniform_len`` promise that
    every row attends keys [:uniform_len]) so nothing waits for the device and a compiled step sees
    a constant. positions [B, T] stay on the device and only feed masks and flash's lengths.
    """
    b, t = positions.shape
    one_span = block or t == 1            # every query of a row sees the same keys: 0 .. the row's last position
    if not _FORCE_MASKED:
        if uniform_len is not None:
            if one_span:
                return "sdpa_nomask", None, uniform_len, None
            if uniform_len == t:
                # SDPA's is_causal is top-left aligned (query i sees keys <= i), so it equals position
                # causality only for a chunk that starts at position 0 in every row
                return "sdpa_causal", None, t, None
        elif one_span:
            last = positions[:, -1]
            if flash_ok:
                # flash reads keys [:cache_seqlens[b]] of row b; causal=False is exact because each query
                # (the single token, or any token of a bidirectional block) may see all of them
                return "flash_attn_kvcache", None, kv_len, (last + 1).to(torch.int32)
            keys = torch.arange(kv_len, device=positions.device)
            return "sdpa_keymask", (keys <= last[:, None])[:, None, None, :], kv_len, None     # [B, 1, 1, S]
    keys = torch.arange(kv_len, device=positions.device)
    # causal: key j visible to a query at position p when j <= p; block: j <= the block's last position
    limit = positions[:, -1:].expand(b, t) if block else positions
    return "sdpa_masked", keys[None, None, None, :] <= limit[:, None, :, None], kv_len, None  # [B, 1, T, S]


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
        dtype = dtype or self.model.embed_tokens.weight.dtype
        first = self.model.layers[0]
        layer0 = first.self_attn.kv_cache
        if (layer0 is not None and self.max_batch >= max_batch and self.max_seq >= max_seq
                and layer0.k_cache.dtype == dtype and layer0.k_cache.device == layer_device(first)):
            return
        if max_seq > self.config.max_position_embeddings:
            raise ValueError(f"max_seq={max_seq} exceeds config max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        self.max_batch, self.max_seq = max_batch, max_seq
        for layer in self.model.layers:   # each layer's cache beside its weights (layers may be split)
            layer.self_attn.kv_cache = KVCache(max_batch, max_seq, self.config.num_key_value_heads,
                                               self.config.head_dim, dtype, layer_device(layer))

    def clear_caches(self) -> None:
        """Free the KV cache memory (a later setup_caches allocates again)."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.max_batch = self.max_seq = 0

    def forward(self, input_ids: Tensor, input_pos: Tensor | None = None, kv_len: int | None = None,
                keep: int | None = None, attention_mask: Tensor | None = None, block: bool = False,
                uniform_len: int | None = None) -> Tensor:
        """input_ids [B, T]; input_pos [B, T] (or [T]) selects cached decoding; kv_len bounds attention.

        keep=i returns logits [B, 1, vocab] of position i only (e.g. -1): decoding needs just the
        next-token distribution, so the other T-1 vocabulary projections are skipped.
        attention_mask [B, T] (1 = token, 0 = padding) applies to the uncached forward only.
        block=True (cached only): the T tokens attend causally to the cached prefix and to each other
        in both directions -- the attention pattern of a parallel (DiDA) image pass.
        uniform_len (cached only) promises that every row sits at the same positions, its last query at
        uniform_len - 1; it lets attention drop the mask (see ``plan_cached_attention``).
        """
        hidden = self.model(input_ids, input_pos, kv_len, attention_mask, block, uniform_len)
        if keep is not None:
            hidden = hidden[:, keep].unsqueeze(1)
        return self.lm_head(hidden.to(self.lm_head.weight.device)).float()


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
                attention_mask: Tensor | None = None, block: bool = False,
                uniform_len: int | None = None) -> Tensor:
        """Hidden states [B, T, hidden] after the final norm."""
        b, t = input_ids.shape
        use_cache = input_pos is not None
        seqlens = None
        if not use_cache:
            positions = torch.arange(t, device=input_ids.device).expand(b, t)
            path, mask = "sdpa_causal", None
            if attention_mask is not None and not bool(attention_mask.all()):
                causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
                # padding keys are hidden; each position still sees itself so no softmax row is empty
                mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(
                    t, dtype=torch.bool, device=input_ids.device)          # [B, 1, T, T]
                path = "sdpa_masked"
        else:
            cache = self.layers[0].self_attn.kv_cache
            if cache is None:
                raise RuntimeError("input_pos given but the KV cache is not set up; call setup_caches() first")
            positions = input_pos.expand(b, t) if input_pos.dim() == 1 else input_pos
            kv_len = kv_len or cache.k_cache.shape[2]
            if uniform_len is not None and not t <= uniform_len <= cache.k_cache.shape[2]:
                raise ValueError(f"uniform_len={uniform_len} must lie in [T={t}, cache length "
                                 f"{cache.k_cache.shape[2]}]")
            flash_ok = flash_kvcache_usable(cache.k_cache, self.embed_tokens.weight.dtype)
            path, mask, kv_len, seqlens = plan_cached_attention(positions, kv_len, block, uniform_len, flash_ok)
        _record_attention_path(path)
        x = self.embed_tokens(input_ids.to(self.embed_tokens.weight.device))
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:   # model.to(bf16) casts buffers; angles must stay fp32
            inv_freq = rope_inv_freq(self.config, device=x.device)
        if positions.device != x.device:  # the caller's device is the last layer's when layers are split
            positions = positions.to(x.device)
            mask = mask.to(x.device) if mask is not None else None
            seqlens = seqlens.to(x.device) if seqlens is not None else None
        cos, sin = rope_cos_sin(inv_freq, positions, self.config.rope_linear_factor, x.dtype)
        for layer in self.layers:
            dev = layer_device(layer)
            if x.device != dev:  # layers split across devices (model/placement.py): the step's tensors follow
                x, cos, sin, positions = x.to(dev), cos.to(dev), sin.to(dev), positions.to(dev)
                mask = mask.to(dev) if mask is not None else None
                seqlens = seqlens.to(dev) if seqlens is not None else None
            x = layer(x, cos, sin, mask, positions if use_cache else None, kv_len, path, seqlens)
        return self.norm(x.to(self.norm.weight.device))


def layer_device(layer: nn.Module) -> torch.device:
    """Where a decoder layer lives (its norm weight: never quantized, always a plain parameter)."""
    return layer.input_layernorm.weight.device


class Emu3DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: Emu3Config) -> None:
        super().__init__()
        self.self_attn = Emu3Attention(config)
        self.mlp = Emu3MLP(config)
        self.input_layernorm = Emu3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Emu3RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                input_pos: Tensor | None, kv_len: int | None, path: str | None = None,
                seqlens: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos, kv_len, path, seqlens)
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
                input_pos: Tensor | None, kv_len: int | None, path: str | None = None,
                seqlens: Tensor | None = None) -> Tensor:
        """path/seqlens come from ``plan_cached_attention``; path None = the mask alone decides
        (causal when None), as for the uncached forward and ``dida_objective.masked_forward``."""
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.head_dim)).transpose(1, 2)     # [B, H, T, D]
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)              # [B, Hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        gqa = self.n_heads != self.n_kv_heads
        if input_pos is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)
        else:
            k, v = self.kv_cache.update(input_pos, k, v)                                            # [B, Hkv, S_max, D]
            if path == "flash_attn_kvcache":
                # flash takes [B, S, H, D]; the transposed cache views keep stride(-1) == 1, the only layout
                # it requires (row and head strides are passed through), so the cache is read in place
                y = flash_attn_with_kvcache(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                            cache_seqlens=seqlens, causal=False)                   # [B, T, H, D]
                return self.o_proj(y.reshape(b, t, self.n_heads * self.head_dim))
            k, v = k[:, :, :kv_len].to(q.dtype), v[:, :, :kv_len].to(q.dtype)                      # [B, Hkv, S, D]
            if path == "sdpa_keymask":
                # the mask is the same for every query of a row, so the G query heads sharing a kv head
                # fold into the query axis: no GQA, which CUDA's memory-efficient kernel does not support
                g = self.n_heads // self.n_kv_heads
                y = F.scaled_dot_product_attention(q.reshape(b, self.n_kv_heads, g * t, self.head_dim), k, v,
                                                   attn_mask=mask).reshape(b, self.n_heads, t, self.head_dim)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=path == "sdpa_causal",
                                                   enable_gqa=gqa)
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
