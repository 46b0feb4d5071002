"""avf: audio-visual fusion video classifiers, from YouTube-8M features to a verified deployment."""

__version__ = "0.1.0"
