"""``python -m mrc.pretrain [key=value ...]``: masked-LM pretraining (code: :mod:`mrc.pretrain.train`)."""
from mrc.pretrain.train import main

main()
