"""The bundled offline demo model: training, autoencoders and evaluation (see train.py).

The trained artifacts ship inside this package and are registered under short names, so the
server's defaults work on a machine with no network:
  model `demo` (model/), autoencoder sets `demo-ae-resid-delta-mlp` and `demo-ae-resid-delta-attn`
  (autoencoders/), transcoders on every MLP (transcoders/, circuit-tracer's layout),
  residual-stream SAEs after every block (resid_saes/, SAELens' layout), and the neuron-record
  dataset `demo` (datasets/, and datasets-by-token-pair/: the attention latents by token pair, a
  separate build of shorter examples, 32 tokens, so that their values per token pair fit the
  package).
The autoencoder names say what they read, as the published sets' names do (`ae-resid-delta-mlp-v4`
reads resid.delta_mlp): the original web client finds the dataset of a latent by looking for
`resid-delta-mlp`, `mlp-post-act` or `resid-delta-attn` in the autoencoder names of its URL.
"""

from pathlib import Path

HERE = Path(__file__).parent
MODEL_DIR = HERE / "model"
MLP_AUTOENCODERS_DIR = HERE / "autoencoders" / "mlp"
ATTN_AUTOENCODERS_DIR = HERE / "autoencoders" / "attn"
TRANSCODERS_DIR = HERE / "transcoders"
RESID_SAES_DIR = HERE / "resid_saes"
DATASET_DIR = HERE / "datasets"
TOKEN_PAIR_DATASET_DIR = HERE / "datasets-by-token-pair"
DATASET_DIRS = (DATASET_DIR, TOKEN_PAIR_DATASET_DIR)  # both registered as `demo`
NAME = "demo"
MLP_AUTOENCODER_NAME = "demo-ae-resid-delta-mlp"
ATTN_AUTOENCODER_NAME = "demo-ae-resid-delta-attn"
