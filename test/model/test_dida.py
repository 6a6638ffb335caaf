"""DiDA sampler and adaptation on the tiny random checkpoint: mask, layout = inference pattern, KV, blocks, errors."""

import copy
import json

import numpy as np
import pytest
import torch

from emu_ros.model import (ARImageDecoder, DecodeSession, GenerationConfig, SamplingParams, build_prompt,
                           build_unconditional_prompt, cfg_logprobs, generate, image_token_ids,
                           parse_image_block)
from emu_ros.model.dida import (DIDA_CONFIG_FILE, DiDAAdaptationRequired, DiDAConfig, DiDAError, DiDAImageDecoder,
                                guided_scores, image_block, load_dida_config, masked_after_pass, visual_scores)
from emu_ros.model.compact_vocab import CompactVocab
from emu_ros.model.dida_objective import (IGNORE_INDEX, DiDAObjective, DiDATrainConfig, TrainExample,
                                          build_dida_mask, find_images, layout_row, masked_forward)


@pytest.fixture(scope="module")
def prompts(tok):
    return tok.encode(build_prompt("vla", "put the red cube in the bowl")), tok.encode(build_unconditional_prompt())


def expected_mask(clean_len, blocks, total):
    """The Fig. 9 rule written out per (query, key) pair, independently of build_dida_mask."""
    owner = ["clean"] * clean_len
    anchor_of = []
    for k, (anchor, length) in enumerate(blocks):
        owner += [k] * length
        anchor_of.append(anchor)
    owner += ["pad"] * (total - len(owner))
    m = torch.zeros(total, total, dtype=torch.bool)
    for q in range(total):
        for key in range(total):
            if owner[q] == "clean":
                m[q, key] = owner[key] == "clean" and key <= q
            elif owner[q] == "pad":
                m[q, key] = key == q
            else:
                m[q, key] = (owner[key] == "clean" and key < anchor_of[owner[q]]) or owner[key] == owner[q]
    return m


def test_training_mask_is_causal_outside_bidirectional_inside():
    blocks = [(3, 4), (8, 3)]
    mask = build_dida_mask(12, blocks, total=21)
    assert torch.equal(mask, expected_mask(12, blocks, 21))
    assert not mask[:12, 12:].any()                                    # clean never sees noisy
    assert torch.equal(mask[:12, :12], torch.ones(12, 12, dtype=torch.bool).tril())
    assert mask[12:16, 12:16].all() and not mask[12:16, 16:19].any()   # bidirectional inside, not across copies
    assert mask[12:16, :3].all() and not mask[12:16, 3:12].any()       # prefix before IMG only (not its own image)
    assert mask[16:19, :8].all() and not mask[16:19, 8:12].any()


def image_row(prompt, codes, tok):
    """prompt + image block + EOS, labels on the answer only."""
    ids = prompt + image_token_ids(codes, tok) + [tok.token_id("EOS")]
    labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]
    return ids, labels


@pytest.mark.parametrize("noise", ["mask", "uniform"])
def test_layout_copies_positions_and_targets(lm32, tok, prompts, noise):
    codes = np.arange(6).reshape(2, 3) + 5
    ctx = image_token_ids(np.zeros((2, 2), int), tok)                        # a prompt image: no copy
    ids, labels = image_row(prompts[0] + ctx, codes, tok)
    spans = find_images(ids, tok.token_id("IMG"), tok.token_id("EOI"), tok.token_id("EOL"))
    assert [(s.height, s.width) for s in spans] == [(2, 2), (2, 3)]
    row = layout_row(ids, labels, lm32.config, DiDATrainConfig(noise=noise), torch.Generator().manual_seed(3))
    a = spans[1].img
    assert row.blocks == [(a, 8)] and row.tokens[:len(ids)] == ids
    assert row.positions[len(ids):] == list(range(a, a + 8))                   # same positions as the mirrored tokens
    copy_ = row.tokens[len(ids):]
    assert copy_[0] == tok.token_id("IMG") and copy_[4] == tok.token_id("EOL")  # anchor and clean row end
    body = ids[a + 1:a + 9]
    for slot, target in zip(row.noisy_index, row.noisy_target):
        j = slot - len(ids)                                                    # shift: block index j predicts body[j]
        assert body[j] == target + tok.first_visual_id
        if noise == "mask":
            assert copy_[j + 1] == 151643
    if noise == "uniform":
        assert len(row.noisy_index) == 6


def test_training_layout_equals_sampler_pass_with_cfg(lm32, tok, ids, prompts):
    """The noisy copy's logits in the training forward == the sampler's pass over the KV cache, per CFG row;
    the guided scores are the AR path's cfg_logprobs of the official cond and uncond prompts."""
    cond, uncond = prompts
    h, w = 2, 3
    config = GenerationConfig(seed=0, max_new_tokens=32, cfg_scale=3.0)
    session = DecodeSession(lm32, cond, uncond, config, ids)
    header = [ids.boi] + ids.header_ids(h, w)
    session.feed(session.tensor(header), session.rows)
    block, index = image_block(session, h, w)
    block[index + 1] = torch.tensor([151643, ids.first_visual + 4, 151643, 151643, ids.first_visual + 9, 151643])
    scores = visual_scores(session, block, index)                              # [2, 6, codebook]
    refs = []
    for prompt in (cond, uncond):
        clean = prompt + header + [ids.img]
        a = len(clean) - 1
        tokens = torch.tensor([clean + block.tolist()])
        positions = torch.tensor([list(range(len(clean))) + list(range(a, a + len(block)))])
        mask = build_dida_mask(len(clean), [(a, len(block))])[None, None]
        hidden = masked_forward(lm32, tokens, positions, mask)
        logits = lm32.lm_head(hidden[0, len(clean) + index])[:, ids.first_visual:ids.first_visual + 1024]
        refs.append(logits)
    torch.testing.assert_close(scores[0], refs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores[1], refs[1], atol=1e-4, rtol=1e-4)
    guided = torch.log_softmax(guided_scores(session, scores), -1)
    torch.testing.assert_close(guided, torch.log_softmax(cfg_logprobs(refs[0], refs[1], 3.0), -1), atol=1e-4, rtol=1e-4)


def test_pass_changes_no_prefix_kv(lm32, ids, prompts):
    session = DecodeSession(lm32, *prompts, GenerationConfig(seed=0, max_new_tokens=40), ids)
    session.feed(session.tensor([ids.boi] + ids.header_ids(3, 3)), session.rows)
    pos = list(session.pos)
    before = [(l.self_attn.kv_cache.k_cache.clone(), l.self_attn.kv_cache.v_cache.clone()) for l in lm32.model.layers]
    block, index = image_block(session, 3, 3)
    block[index + 1] = 151643
    for _ in range(3):
        visual_scores(session, block, index)
        block[index + 1] = ids.first_visual + torch.randint(0, 1024, (9,))
    assert session.pos == pos
    for (k0, v0), layer in zip(before, lm32.model.layers):
        for r in range(2):
            assert torch.equal(layer.self_attn.kv_cache.k_cache[r, :, :pos[r]], k0[r, :, :pos[r]])
            assert torch.equal(layer.self_attn.kv_cache.v_cache[r, :, :pos[r]], v0[r, :, :pos[r]])


@pytest.mark.parametrize("noise,passes", [("mask", 1), ("mask", 3), ("mask", 8), ("uniform", 1), ("uniform", 4)])
def test_passes_give_a_complete_well_formed_block(lm32, tok, ids, prompts, noise, passes):
    dec = DiDAImageDecoder(DiDAConfig(noise=noise), passes=passes)
    seen = {}

    def spy(session, header, h, w, cancel=None):
        codes = dec(session, header, h, w, cancel)
        seen["logits"] = session.logits[0].clone()
        return codes
    config = GenerationConfig(image_size=(2, 4), force_image_after=2, max_images=1, max_new_tokens=40, seed=1)
    result = generate(lm32, *prompts, config, ids, tok, image_decoder=spy)
    assert result.stop_reason == "max_images"
    boi = result.tokens.index(ids.boi)
    block = parse_image_block(result.tokens[boi:], tok)
    assert block is not None and block.codes.shape == (2, 4) and result.tokens[-1] == ids.eoi
    assert np.array_equal(block.codes, result.images[0]) and result.images[0].max() < 1024
    assert dec.stats.passes == passes and dec.stats.forwards == passes + 2 and sum(dec.stats.committed) == 8
    # the committed block leaves the cache exactly as a plain causal forward of prompt + output
    ref = lm32(torch.tensor([prompts[0] + result.tokens]))[0, -1]
    torch.testing.assert_close(seen["logits"], ref, atol=1e-4, rtol=1e-4)


def test_mask_schedule():
    assert masked_after_pass(1, 1, 100, 100) == 0                               # K=1: everything in one pass
    counts, unknown = [], 36
    for k in range(1, 9):
        left = masked_after_pass(k, 8, 36, unknown)
        assert 0 <= left < unknown
        counts.append(unknown - left)
        unknown = left
    assert sum(counts) == 36 and unknown == 0 and counts[0] < counts[4]        # cosine: few first, more later
    assert masked_after_pass(2, 8, 3, 1) == 0                                  # one slot left is committed


def test_missing_dida_config_names_the_fix(lm_dir):
    with pytest.raises(DiDAAdaptationRequired, match=r"need DiDA adaptation.*python -m finetune_embodied.train"):
        load_dida_config(lm_dir)
    with pytest.raises(DiDAAdaptationRequired):
        DiDAImageDecoder.from_model_dir(lm_dir)


def test_runtime_dida_request_without_adaptation(ckpt_root):
    from emu_ros.model import Emu35Runtime

    with pytest.raises(DiDAAdaptationRequired, match="objective dida"):
        Emu35Runtime(ckpt_root / "Emu3.5", device="cpu", dtype=torch.float32, decoder="dida")


def test_dida_config_roundtrip_and_typos(tmp_path):
    DiDAConfig(noise="uniform", passes=4, time_shift=2.0).save(tmp_path)
    assert load_dida_config(tmp_path) == DiDAConfig(noise="uniform", passes=4, time_shift=2.0)
    (tmp_path / DIDA_CONFIG_FILE).write_text(json.dumps({"noise": "mask", "passe": 4}))
    with pytest.raises(DiDAError, match="unknown keys"):
        load_dida_config(tmp_path)
    with pytest.raises(DiDAError, match="noise"):
        DiDAConfig(noise="gaussian")


def test_argmax_sampler_reproduces_a_trained_image(lm32, tok, ids, prompts):
    """A copy of the tiny model DiDA-trained on one prompt -> image pair; greedy DiDA decoding returns the image."""
    lm = copy.deepcopy(lm32)
    lm.requires_grad_(True)
    target = np.array([[5, 9, 5, 9], [9, 5, 9, 5], [17, 17, 3, 3]])
    cond, uncond = prompts
    answer = image_token_ids(target, tok) + [ids.eos]
    ex = TrainExample(cond + answer, len(cond), uncond + answer, len(uncond))
    vocab = CompactVocab(lm, set(ex.ids) | set(ex.uncond_ids), [DiDATrainConfig().mask_token_id])
    objective = DiDAObjective(lm, train=DiDATrainConfig(noise="mask"), vocab=vocab)
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.95))
    input_ids = torch.tensor([ex.ids] * 4)
    labels = torch.tensor([[IGNORE_INDEX] * ex.prompt_len + ex.ids[ex.prompt_len:]] * 4)
    torch.manual_seed(0)
    for _ in range(60):
        loss, _ = objective(input_ids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vocab.merge_into(lm)
    lm.requires_grad_(False).eval()
    greedy = GenerationConfig(image=SamplingParams(0, 1.0, 0.0), cfg_scale=1.0, image_size=(3, 4), force_image_after=0,
                              max_images=1, max_new_tokens=40, seed=0)
    for k in (1, 4):
        dec = DiDAImageDecoder(DiDAConfig(choice_temperature=0.0), passes=k)
        out = generate(lm, cond, uncond, greedy, ids, tok, image_decoder=dec)
        assert np.array_equal(out.images[0], target), (k, out.images[0])
    untrained = generate(lm32, cond, uncond, greedy, ids, tok, image_decoder=DiDAImageDecoder(DiDAConfig()))
    assert not np.array_equal(untrained.images[0], target)


def test_objective_interface_for_finetune(lm32, tok, prompts):
    """finetune_embodied's --objective dida contract: DiDAObjective(lm, first_visual_id)(input_ids, labels)."""
    lm = copy.deepcopy(lm32)
    objective = DiDAObjective(lm, tok.first_visual_id)
    ids_, labels = image_row(prompts[0], np.arange(4).reshape(2, 2), tok)
    loss, metrics = objective(torch.tensor([ids_]), torch.tensor([labels]))
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    assert metrics["noisy"] >= 1 and metrics["tokens"] == len(ids_) - len(prompts[0])
    assert objective.predictions.shape == (metrics["tokens"],)


def test_self_distill_replaces_answer_images_with_teacher_samples(lm32, tok, ids, prompts):
    from emu_ros.model.dida_objective import self_distill

    cond, uncond = prompts
    ctx = image_token_ids(np.zeros((2, 2), int), tok)                       # a prompt image: left alone
    answer = image_token_ids(np.full((2, 3), 7), tok) + [ids.eos]
    ex = TrainExample(cond + ctx + answer, len(cond) + len(ctx), uncond + ctx + answer, len(uncond) + len(ctx))
    a = self_distill(lm32, [ex], cfg_scale=3.0, seed=0)[0]
    b = self_distill(lm32, [ex], cfg_scale=3.0, seed=0)[0]
    assert a.ids == b.ids and a.ids[:ex.prompt_len] == ex.ids[:ex.prompt_len]
    block = parse_image_block(a.ids[ex.prompt_len:-1], tok)
    assert block is not None and block.codes.shape == (2, 3) and not np.array_equal(block.codes, np.full((2, 3), 7))
    assert a.ids[-1] == ids.eos and a.uncond_ids[a.uncond_prompt_len:] == a.ids[a.prompt_len:]
    # the teacher's sample is what the AR decoder draws for that context with the same seed and CFG
    config = GenerationConfig(image=SamplingParams(10240, 1.0, 1.0), cfg_scale=3.0, seed=0, max_new_tokens=12)
    session = DecodeSession(lm32, cond + ctx, uncond + ctx, config, ids)
    codes = ARImageDecoder()(session, session.tensor([ids.boi] + ids.header_ids(2, 3) + [ids.img]), 2, 3)
    assert np.array_equal(codes.numpy(), block.codes)


@pytest.mark.parametrize("noise", ["mask", "uniform"])
def test_cfg_until_zero_is_decoding_without_cfg(lm32, tok, ids, prompts, noise):
    """cfg_until=0 runs every pass on the cond row only: same codes as a session without CFG; 1.0 differs."""
    def codes(cfg_scale, cfg_until):
        config = GenerationConfig(cfg_scale=cfg_scale, image_size=(3, 3), force_image_after=0, max_images=1,
                                  max_new_tokens=20, seed=4)
        dec = DiDAImageDecoder(DiDAConfig(noise=noise, cfg_until=cfg_until), passes=3)
        return generate(lm32, *prompts, config, ids, tok, image_decoder=dec).images[0]
    plain = codes(1.0, 1.0)
    assert np.array_equal(codes(3.0, 0.0), plain)
    assert not np.array_equal(codes(30.0, 1.0), plain)
