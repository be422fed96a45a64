"""szviewer: find Sunyaev-Zel'dovich galaxy clusters with a matched filter, the DeepSZ CNN and both."""

__version__ = "0.1.0"
