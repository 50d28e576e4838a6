"""emotion-train: builds a Keras emotion model from FER-2013 or any labelled face folder (workstation only)."""
