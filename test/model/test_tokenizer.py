"""Text tokenizer on the synthetic official-format files: ids, round trips, visual mapping."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu_ros.model import TokenizerError, load_tokenizer
from emu_ros.model.tokenizer import Emu3Tokenizer


def test_official_special_ids(tok):
    expected = {"PAD": 151643, "EOL": 151846, "EOF": 151847, "TMS": 151848, "BOS": 151849, "EOS": 151850,
                "IMG": 151851, "BOI": 151852, "EOI": 151853, "BSS": 151746, "ESS": 151747, "BOG": 151706,
                "EOG": 151707, "BOC": 151696, "EOC": 151697}
    assert tok.ids == expected
    assert tok.token_id("<|im_start|>") == 151644 and tok.token_id("<|extra_0|>") == 151646
    assert tok.first_visual_id == 151854 and tok.codebook_size == 1024 and len(tok) == 151854 + 1024


def test_header_alphabet_matches_qwen_ids(tok):
    assert tok.digit_ids == {"*": 9, **{str(d): 15 + d for d in range(10)}}
    assert tok.encode("45*60") == [19, 20, 9, 21, 15]          # digits split one by one
    assert tok.encode(" ") == [220] and tok.encode("\n") == [198]


def test_visual_mapping(tok):
    assert tok.visual_id(0) == 151854 and tok.visual_code(151854 + 1023) == 1023
    assert tok.encode("<|visual token 000005|>") == [151859]
    with pytest.raises(ValueError):
        tok.visual_id(1024)
    with pytest.raises(ValueError):
        tok.visual_code(151853)
    assert tok.is_visual(151860) and not tok.is_visual(151853)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_text_round_trip(tok, text):
    import unicodedata
    text = unicodedata.normalize("NFC", text)
    assert tok.decode(tok.encode(text)) == text


def test_specials_inside_text_and_skip(tok):
    ids = tok.encode("<|extra_203|>hi<|image start|>1*2<|image token|><|visual token 000001|><|image end|>")
    assert ids[0] == 151849 and 151852 in ids and 151851 in ids and 151855 in ids
    assert tok.decode(ids, skip_special_tokens=True) == "hi1*2"


def test_bad_files(tmp_path, lm_dir):
    with pytest.raises(TokenizerError, match="emu3.tiktoken not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "emu3.tiktoken").write_bytes((lm_dir / "emu3.tiktoken").read_bytes())
    with pytest.raises(TokenizerError, match="emu3_vision_tokens.txt not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "emu3_vision_tokens.txt").write_text("<|image token|>\n<|image start|>\n<|image end|>\n"
                                                     "<|visual token 000001|>\n")
    with pytest.raises(TokenizerError, match="line 4"):
        load_tokenizer(tmp_path)
    (tmp_path / "bad.tiktoken").write_text("!!notbase64 x\n")
    with pytest.raises(TokenizerError, match="bad.tiktoken:1"):
        Emu3Tokenizer(tmp_path / "bad.tiktoken", lm_dir / "emu3_vision_tokens.txt")
