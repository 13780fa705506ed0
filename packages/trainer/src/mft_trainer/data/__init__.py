"""The data half of the trainer: prepared dataset -> template and masks -> tokenization cache -> sampler -> packed
micro-batches (`stream.py`), and `mft-train inspect`'s rendering."""
