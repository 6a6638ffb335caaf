"""pip installation of emu_ros's ROS-free core and its command line (`pip install -e .`).

On a robot workstation the package is built by colcon (CMakeLists.txt: interfaces + Python); this
file serves users and CI without ROS. Optional parts are extras: model, quant, sim, finetune, test.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="emu_ros",
    version="0.1.0",
    description="Follow the Emu3.5 world model with a robot arm (ROS 2): guidance steps, planner bridge, simulated ALOHA",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["emu_ros", "emu_ros.*", "finetune_embodied", "finetune_embodied.*"]),
    include_package_data=True,
    install_requires=["numpy>=1.24", "pyyaml>=6", "pillow>=10", "tqdm>=4.66"],
    extras_require={
        # torch is deliberately not pinned here: install the build that fits your machine first
        # (scripts/setup_env.sh installs the 2.13.0 CPU wheel). 2.5: SDPA's enable_gqa (modeling_emu3);
        # the int8 CPU kernel (aten._weight_int8pack_mm, 2.3+) is optional. 4-bit loading
        # (load_lm(quantize="nf4")) also needs bitsandbytes: the "quant" extra.
        "model": ["torch>=2.5", "safetensors>=0.4", "tiktoken>=0.7"],
        "quant": ["bitsandbytes>=0.46"],
        "sim": ["gym-aloha==0.1.5", "mujoco>=3.1,<3.9", "opencv-python-headless>=4.9", "imageio[ffmpeg]>=2.34"],
        "finetune": ["torch>=2.5", "safetensors>=0.4", "tiktoken>=0.7", "pyarrow>=15", "pandas>=2", "av>=12"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "rosbags>=0.10"],
    },
    entry_points={
        "console_scripts": [
            "emu-ros = emu_ros.cli:main",
            "emu_guidance = emu_ros.ros.guidance_node:main",
            "emu_bridge = emu_ros.ros.bridge_node:main",
        ],
    },
    classifiers=["Programming Language :: Python :: 3", "Framework :: Robot Framework"],
)
