"""`emu-ros demo --model-dir`: the decoder, DiDA directory and device reach the guidance backend."""
from __future__ import annotations

from emu_ros.demo import backend_settings, build_parser


def test_model_dir_forwards_decoder_and_device_with_auto_defaults():
    args = build_parser().parse_args(["--model-dir", "/m", "--vq-dir", "/v"])
    backend, settings = backend_settings(args)
    assert backend == "emu35" and settings["mode"] == "auto" and settings["device"] in ("cuda", "cpu")
    args = build_parser().parse_args(["--model-dir", "/m", "--vq-dir", "/v", "--decoder", "dida", "--dida-dir", "/d",
                                      "--device", "cuda:1"])
    assert backend_settings(args)[1] == {"model_dir": "/m", "vq_dir": "/v", "device": "cuda:1", "mode": "dida",
                                         "dida_dir": "/d"}
    assert backend_settings(build_parser().parse_args([])) == ("scripted", {})
