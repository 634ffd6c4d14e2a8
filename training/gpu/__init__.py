"""Training codec v2 on a machine that has PyTorch but no TensorFlow (the lent GPU machine).

`codec_cc_torch` is the training graph of `training/models/codec_cc.py` in PyTorch: the same layers,
noise, likelihoods and loss, reading and writing the same named weights (`training.snapshot`'s
portable snapshot: NumPy arrays in Keras layout). Its loss equals the Keras model's on the same weights
and noise (tests/training/test_codec_cc_torch.py). What runs on the GPU machine (`train`,
`codec_cc_torch`, `snapshot_files`) imports no TensorFlow: a GPU run trains from a snapshot and hands
back a snapshot, and this machine's TensorFlow finalizes and exports it (docs/deployment.md, "The GPU
path"). `pack` runs here, before the call: it reads the run's folder spec through `training.data`.
"""
