"""The bundled offline demo model: training, autoencoders and evaluation (see train.py)."""
