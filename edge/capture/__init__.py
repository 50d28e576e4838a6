"""Frame sources (camera, V4L2, video, stream, image, folder) and the capture thread feeding the pipeline."""

from edge.capture.base import Frame, Source, SourceError
from edge.capture.sources import (
    IMAGE_EXTENSIONS,
    ImageFileSource,
    ImageFolderSource,
    VideoCaptureSource,
    is_live_uri,
    open_source,
)
from edge.capture.thread import CaptureThread, open_until_stopped, reusing_factory

__all__ = [
    "IMAGE_EXTENSIONS",
    "CaptureThread",
    "Frame",
    "ImageFileSource",
    "ImageFolderSource",
    "Source",
    "SourceError",
    "VideoCaptureSource",
    "is_live_uri",
    "open_source",
    "open_until_stopped",
    "reusing_factory",
]
