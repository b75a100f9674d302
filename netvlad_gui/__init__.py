"""netvlad-gui: tell where a photo was taken with NetVLAD place recognition."""

__version__ = "0.1.0"
