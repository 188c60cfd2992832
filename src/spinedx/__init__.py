"""spinedx: detection and classification of spinal lesions on radiographs and MRI."""

__version__ = "0.1.0"
