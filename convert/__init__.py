"""emotion-convert: quantizes a trained Keras model to full-integer int8 TFLite and evaluates it (workstation only)."""
