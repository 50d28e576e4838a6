"""emotion-edge: the on-device half. Camera -> face detection -> int8 TFLite -> events.

Nothing in this package may import TensorFlow: it runs on a Raspberry Pi with only numpy,
OpenCV, a TFLite interpreter and paho-mqtt installed.
"""

__version__ = "0.1.0"
