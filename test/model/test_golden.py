"""Golden values computed with the official Emu3.5 code (baaivision/Emu3.5 @8fcf1da, transformers 4.48.2,
eager attention, fp32) on write_random_checkpoint("tiny", seed=0); they pin our numerics to theirs.

Regenerate: load the same checkpoint with the official Emu3ForCausalLM / IBQ classes (weights cast to
fp32), run the inputs below, and copy the printed numbers here.
"""

import numpy as np
import torch

IDS = [151849, 15, 16, 9, 17, 18, 151852, 151859, 220, 198]
VOCAB_IDX = [0, 9, 220, 151850, 151852, 151859, 152877]
OFFICIAL_LOGITS = {
    0: [-0.298411, -0.122985, -0.168194, 0.129419, -0.001011, -0.192142, 0.019677],
    5: [0.018127, -0.130681, -0.301202, 0.183025, 0.057458, 0.036167, -0.150469],
    9: [0.00431, -0.185315, -0.080153, -0.075885, -0.21584, -0.216276, -0.191716],
}
OFFICIAL_CODES = [[1002, 1002, 1002, 682], [1002, 750, 1002, 776], [514, 1002, 525, 1002]]


def test_logits_match_official(lm32):
    with torch.no_grad():
        logits = lm32(torch.tensor([IDS]))[0]
    for pos, expected in OFFICIAL_LOGITS.items():
        got = logits[pos, VOCAB_IDX]
        torch.testing.assert_close(got, torch.tensor(expected), atol=2e-5, rtol=0)


def test_vision_codes_match_official(vq):
    yy, xx = np.mgrid[0:48, 0:64]
    image = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)
    assert vq.encode(image[None])[0].tolist() == OFFICIAL_CODES
