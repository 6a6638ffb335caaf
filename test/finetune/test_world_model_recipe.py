"""The world-model recipe end to end at toy size: sim dataset -> IBQ tokenizer -> our BPE -> AR -> DiDA -> ship.

The shipped model (models/sim-aloha) is this recipe at full size; its own checks are in test_shipped_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    pytest.importorskip("gym_aloha")
    from finetune_embodied.world_model_recipe import RecipeConfig, run

    work = tmp_path_factory.mktemp("recipe") / "work"
    ship = work.parent / "ship"
    cfg = RecipeConfig(work=str(work), ship_dir=str(ship), preset="toy", episodes_per_task=2,
                       eval_episodes_per_task=1, fault_share=0.5, vq_steps=8, ar_steps=4, dida_steps=2,
                       batch_size=2)
    return work, ship, run(cfg)


def test_recipe_ships_a_model_in_the_official_layout(toy_run) -> None:
    from emu_ros.model.check import check_model_dir

    work, ship, summary = toy_run
    assert summary["shipped"] == str(ship)
    lm, vq = ship / "Emu3.5", ship / "Emu3.5-VisionTokenizer"
    for f in ("config.json", "model.safetensors.index.json", "emu3.tiktoken", "emu3_vision_tokens.txt",
              "dida_config.json"):
        assert (lm / f).is_file(), f
    assert (vq / "config.yaml").is_file() and (vq / "model.ckpt").is_file() and (ship / "backend.yaml").is_file()
    report = check_model_dir(lm, vq)
    assert report.ok, report.problems
    metrics = json.loads((vq / "metrics.json").read_text())
    assert metrics["held_out"]["token_grid"] == [6, 8] and metrics["held_out"]["psnr_db"] > 0
    # the dataset carries the faults and their recoveries, and training phrasings
    rollouts = json.loads((work / "dataset" / "meta" / "sim_rollouts.json").read_text())
    assert {r["task"] for r in rollouts} == {"transfer_cube", "insertion"}
    assert any(r["fault_fired"] for r in rollouts)


def test_shipped_rows_no_sample_uses_are_zero_and_the_tokenizer_is_ours(toy_run) -> None:
    from safetensors.torch import load_file

    from emu_ros.model import load_tokenizer

    work, ship, _ = toy_run
    used = set(json.loads((work / "used_token_ids.json").read_text()))
    weights = load_file(str(ship / "Emu3.5" / "model-00001-of-00001.safetensors"))
    embed = weights["model.embed_tokens.weight"]
    unused = [i for i in (5000, 90000, 150000) if i not in used]
    assert unused and all(float(embed[i].abs().sum()) == 0.0 for i in unused)
    assert all(float(embed[i].abs().sum()) > 0 for i in sorted(used)[:20])
    tok = load_tokenizer(ship / "Emu3.5")
    assert (tok.token_id("BOS"), tok.token_id("BOI"), tok.first_visual_id) == (151849, 151852, 151854)
    ids = tok.encode("Grasp the red cube with the right gripper")
    assert len(ids) <= 10 and tok.decode(ids) == "Grasp the red cube with the right gripper"


def test_shipped_model_builds_the_dida_backend_and_a_rerun_skips_every_stage(toy_run) -> None:
    from emu_ros.guidance.backends import make_world_model
    from finetune_embodied.world_model_recipe import RecipeConfig, run

    work, ship, summary = toy_run
    wm = make_world_model("sim-world-model", model_root=str(ship))
    assert wm.name == "emu35-dida" and wm.step_image_area == 96 * 128
    again = run(RecipeConfig(work=str(work), preset="toy", episodes_per_task=2, eval_episodes_per_task=1))
    assert again["ar_s"] < 5 and again["dataset_s"] < 5 and again["vision_tokenizer_s"] < 5


def test_learned_bpe_merges_words_and_keeps_official_ids(tmp_path: Path) -> None:
    from emu_ros.model import load_tokenizer
    from finetune_embodied.text_tokenizer import learn_merges, write_text_tokenizer

    texts = ["transfer the cube", "Grasp the cube with the left gripper", "Grasp the peg"] * 3
    merges = learn_merges(texts)
    assert b" the" in merges and b" cube" in merges
    write_text_tokenizer(tmp_path, texts, codebook_size=16)
    tok = load_tokenizer(tmp_path)
    assert len(tok.encode(" the cube")) == 2
    assert tok.decode(tok.encode("an unseen phrase, 12 words")) == "an unseen phrase, 12 words"
    assert tok.first_visual_id == 151854 and tok.codebook_size == 16
