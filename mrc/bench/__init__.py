"""Speed benchmark (``python -m mrc.bench``): our training and evaluation path (``ours``) against the
HuggingFace ``Trainer`` + ``AutoModelForQuestionAnswering`` peer (``peer``) and the bare encoder forward; with
``--device``, training speed, tokens/s, MFU and peak memory per precision on that device (``train_speed``, with the
GPUs' datasheet peaks in ``peaks``).

May import every other part of ``mrc`` and ``heads``; nothing imports it.
"""
