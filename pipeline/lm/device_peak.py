"""The MFU denominator: a GPU's peak dense bf16 tensor throughput, from its name, unless params set it.

MFU (model FLOPs utilisation, PaLM appendix B) divides the model's FLOPs per second by the hardware's
peak; a wrong peak makes every MFU figure wrong, so `train.peak_tflops: 0` (the default) looks the device
up here and a non-zero value overrides it (any GPU the table lacks). Figures are the vendors' dense
(no 2:4 sparsity) bf16 tensor-core peaks. No GPU: no MFU (None), since a CPU peak is not comparable.
"""
from __future__ import annotations

# (substring of torch.cuda.get_device_name(), peak dense bf16 TFLOP/s); the first match wins, so the
# more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),       # H200 SXM (NVIDIA H200 datasheet: 1,979 with sparsity)
    ("H100 PCIe", 756.0),  # H100 PCIe
    ("H100 NVL", 835.0),   # H100 NVL (per GPU)
    ("H100", 989.0),       # H100 SXM5 / HBM3
    ("A100", 312.0),       # A100 SXM and PCIe (nanoGPT's reference)
)


def peak_tflops(configured: float, device_name: str | None) -> float | None:
    """The peak to divide by: `configured` when set (> 0), else the table's figure for `device_name`."""
    if configured and configured > 0:
        return float(configured)
    for key, tflops in PEAK_BF16_TFLOPS:
        if device_name and key in device_name:
            return tflops
    return None


def detected_peak(configured: float) -> tuple[float | None, str]:
    """(peak, device name) of the current CUDA device; (configured or None, "cpu") without one."""
    import torch

    if not torch.cuda.is_available():
        return (float(configured) if configured and configured > 0 else None), "cpu"
    name = torch.cuda.get_device_name()
    return peak_tflops(configured, name), name
