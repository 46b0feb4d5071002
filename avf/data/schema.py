"""The YouTube-8M record schema: feature sizes, class count, the frame cap and the 8-bit quantization.

Its own module because the decoder, the readers, the encoder and the feature store all need
these facts, and none of them should have to import another to get them.
"""

from __future__ import annotations

import os

import numpy as np

from avf.errors import InputError

RGB_DIM = 1024
AUDIO_DIM = 128
#: YouTube-8M 2018 vocabulary; the 2017 release (and the paper) used 4716.
DEFAULT_NUM_CLASSES = 3862
#: YouTube-8M's longest videos: 300 one-second frames.
MAX_FRAMES = 300
#: The setting that raises the frame cap, for frame-level data of one's own with longer videos.
FRAME_CAP_VARIABLE = "AVF_MAX_FRAMES"


def frame_cap() -> int:
    """The most frames a video may have: MAX_FRAMES, or AVF_MAX_FRAMES when set.

    It bounds what one record can cost in every command: a record longer than the cap allows is
    refused from its header, before it is read or inflated (a GZIP member of 2.7 MB can otherwise
    hold 200,000 frames and take gigabytes to decode).
    """
    text = os.environ.get(FRAME_CAP_VARIABLE)
    if text is None:
        return MAX_FRAMES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(None, f"{FRAME_CAP_VARIABLE}={text!r}: expected a positive whole number of frames")
    return value


# Official starter-code dequantization over [-2, 2]: x * 4/255 + (4/512 - 2), in float32.
_QUANT_MIN, _QUANT_MAX = -2.0, 2.0
_SCALE = np.float32((_QUANT_MAX - _QUANT_MIN) / 255.0)
_BIAS = np.float32((_QUANT_MAX - _QUANT_MIN) / 512.0 + _QUANT_MIN)


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """uint8 frame features to float32, bit-for-bit as the official reader computes them."""
    return quantized.astype(np.float32) * _SCALE + _BIAS


def quantize(features: np.ndarray) -> np.ndarray:
    """float features to uint8 codes; dequantize(quantize(x)) is within 4/510 of clip(x)."""
    codes = np.rint((np.asarray(features, np.float32) - _BIAS) / _SCALE)
    return np.clip(codes, 0, 255).astype(np.uint8)
