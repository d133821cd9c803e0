"""Score prediction: features, models, and what the models rely on (objects, Grad-CAM, importance)."""
