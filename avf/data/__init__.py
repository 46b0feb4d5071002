"""YouTube-8M data: TFRecord reading/writing, synthetic data, and the memory-mapped feature store."""

from avf.data.sources import expand_sources
from avf.data.tfrecord import TFRecordWriter, iter_payloads
from avf.data.youtube8m import (
    AUDIO_DIM,
    DEFAULT_NUM_CLASSES,
    RGB_DIM,
    VideoBatch,
    VideoRecord,
    decode_record,
    dequantize,
    encode_frame_example,
    encode_video_example,
    iter_batches,
    iter_records,
    quantize,
)

__all__ = [
    "AUDIO_DIM", "DEFAULT_NUM_CLASSES", "RGB_DIM", "TFRecordWriter", "VideoBatch", "VideoRecord",
    "decode_record", "dequantize", "encode_frame_example", "encode_video_example",
    "expand_sources", "iter_batches", "iter_payloads", "iter_records", "quantize",
]
