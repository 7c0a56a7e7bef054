"""The bundled offline demo model: training, autoencoders and evaluation (see train.py).

The trained artifacts ship inside this package and are registered under short names, so the
server's defaults work on a machine with no network:
  model `demo` (model/), autoencoder sets `demo-mlp` and `demo-attn` (autoencoders/), and the
  neuron-record dataset `demo` (datasets/).
"""

from pathlib import Path

HERE = Path(__file__).parent
MODEL_DIR = HERE / "model"
MLP_AUTOENCODERS_DIR = HERE / "autoencoders" / "mlp"
ATTN_AUTOENCODERS_DIR = HERE / "autoencoders" / "attn"
DATASET_DIR = HERE / "datasets"
NAME = "demo"
MLP_AUTOENCODER_NAME = "demo-mlp"
ATTN_AUTOENCODER_NAME = "demo-attn"
