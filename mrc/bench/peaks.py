"""Peak dense FLOP rates of common NVIDIA GPUs, for model FLOPs utilisation (MFU) in the training-speed bench.

Every figure is the vendor datasheet's, in TFLOPS, *dense*: NVIDIA's datasheets print the Ampere / Ada / Hopper tensor
rates with 2:4 structured sparsity (marked ``*``, "with sparsity") and say the dense rate is half of it; halved here.
``fp32`` is the CUDA cores' rate (what ``trainer.precision=fp32`` runs with TF32 off, PyTorch's default for matrix
products); ``tf32`` / ``bf16`` / ``fp16`` are tensor-core rates with fp32 accumulation. None: the GPU has no such mode
(V100 and T4 have neither TF32 nor bf16 tensor cores). A GPU is found by its ``torch.cuda.get_device_name`` text;
one not in the table gets no MFU (``--peak-tflops`` gives the rate by hand).
"""
from __future__ import annotations

import re

PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    # Tesla V100 datasheet (images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf):
    # V100 SXM2 "Single-Precision 15.7 TFLOPS", "Tensor Performance 125 TFLOPS"; V100 PCIe 14 / 112
    "V100 SXM2": {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
    "V100 PCIe": {"fp32": 14.0, "tf32": None, "bf16": None, "fp16": 112.0},
    # Tesla T4 datasheet (nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf):
    # "Single-Precision 8.1 TFLOPS", "Mixed-Precision (FP16/FP32) 65 TFLOPS"
    "T4": {"fp32": 8.1, "tf32": None, "bf16": None, "fp16": 65.0},
    # NVIDIA A10 datasheet (nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf):
    # FP32 31.2; TF32 62.5 | 125*; BF16 125 | 250*; FP16 125 | 250* (* with sparsity)
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    # NVIDIA A100 datasheet (nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
    # nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): FP32 19.5; TF32 156 | 312*; BF16 312 | 624*;
    # FP16 312 | 624*: the same for PCIe and SXM, 40 and 80 GB
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    # NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4/, "NVIDIA L4 Tensor Core GPU" PDF): FP32 30.3;
    # TF32 120*, BF16 242*, FP16 242* (with sparsity) -> dense 60 / 121 / 121
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    # NVIDIA H100 datasheet (resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet), with sparsity:
    # SXM FP32 67, TF32 989*, BF16 1,979*, FP16 1,979*; PCIe 51 / 756* / 1,513* / 1,513*; NVL 60 / 835* / 1,671* / 1,671*
    "H100 SXM": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200/), with sparsity: H200 SXM FP32 67, TF32 989*,
    # BF16 1,979*, FP16 1,979* (the H100 SXM's compute); H200 NVL 60 / 835* / 1,671* / 1,671*
    "H200 SXM": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
}
SOURCES = {"V100": "NVIDIA Tesla V100 datasheet", "T4": "NVIDIA Tesla T4 datasheet", "A10": "NVIDIA A10 datasheet",
           "A100": "NVIDIA A100 datasheet", "L4": "NVIDIA L4 datasheet", "H100": "NVIDIA H100 datasheet",
           "H200": "NVIDIA H200 datasheet"}


def gpu_key(name: str) -> str | None:
    """The table's row for a ``torch.cuda.get_device_name`` text (``NVIDIA H100 80GB HBM3``, ``Tesla V100-SXM2-16GB``,
    ``NVIDIA A100-SXM4-80GB``), or None. Whole model names only: ``A10G``, ``A100X``, ``L40`` or ``V100S`` are other
    chips and get None rather than a neighbour's figures."""
    text = name.upper()
    if re.search(r"\bH200\b", text):
        return "H200 NVL" if "NVL" in text else "H200 SXM"
    if re.search(r"\bH100\b", text):
        return "H100 NVL" if "NVL" in text else "H100 PCIe" if "PCIE" in text else "H100 SXM"
    if re.search(r"\bV100\b", text):
        return "V100 PCIe" if "PCIE" in text else "V100 SXM2"
    for key in ("A100", "A10", "L4", "T4"):
        if re.search(rf"\b{key}\b", text):
            return key
    return None


def peak_flops(name: str, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s of GPU ``name`` in ``precision`` — fp32, tf32, bf16 or fp16 —, its source) or (None, why not)."""
    key = gpu_key(name)
    if key is None:
        return None, f"no peak FLOP rate known for {name!r}: give one with --peak-tflops"
    tflops = PEAK_TFLOPS[key][precision]
    if tflops is None:
        return None, f"{key} has no {precision} tensor cores"
    return tflops * 1e12, f"{SOURCES[key.split()[0]]}: {key} {precision} {tflops:g} TFLOPS dense"
