from setuptools import Extension, find_packages, setup

setup(
    name="seg_d2",
    version="0.1.0",
    description="Instance, panoptic and semantic segmentation models, losses and evaluation for Detectron2",
    packages=find_packages(include=["seg_d2", "seg_d2.*"]),
    python_requires=">=3.9",
    # Panoptic PNG row decoding (seg_d2/evaluation/panoptic_png.py). Optional: without a C compiler the
    # install still succeeds and OpenCV decodes those PNGs, slower.
    ext_modules=[Extension("seg_d2.evaluation._png_ids", ["seg_d2/evaluation/_png_ids.c"], optional=True)],
    # Detectron2 itself comes from tools/install_detectron2.py (it is not on PyPI under its name);
    # exact versions live in requirements/.
    install_requires=["torch>=2.0", "torchvision", "numpy", "fvcore", "pycocotools", "opencv-python-headless", "scipy", "deflate", "msgspec"],
    # pip install seg_d2[sam]: Segment Anything prompts, SamDetector and tools/annotate.py (docs/sam.md)
    extras_require={"sam": ["segment-anything==1.0"]},
)
