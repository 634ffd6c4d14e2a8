"""Custom Keras layers and ops shared by the model zoo (GDN, gradient-friendly bounds)."""
