"""Face analysis: detection, landmarks, pose and identity embeddings behind small engine interfaces."""

from .analysis import FaceAnalysis, FaceConfig, clear_cache, get_face_analysis
from .base import distance
from .types import ARCFACE_5PT_112, Face

__all__ = ["ARCFACE_5PT_112", "Face", "FaceAnalysis", "FaceConfig", "clear_cache", "distance", "get_face_analysis"]
