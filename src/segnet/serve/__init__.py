"""Serving: a local web app and HTTP API (``segnet serve``), with dynamic batching."""

from .app import BadUpload, create_app, decode_upload
from .batching import DynamicBatcher, QueueFull

__all__ = ["BadUpload", "DynamicBatcher", "QueueFull", "create_app", "decode_upload"]
