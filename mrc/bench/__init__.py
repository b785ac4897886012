"""Speed benchmark (``python -m mrc.bench``): our training and evaluation path (``ours``) against the
HuggingFace ``Trainer`` + ``AutoModelForQuestionAnswering`` peer (``peer``) and the bare encoder forward.

May import every other part of ``mrc`` and ``heads``; nothing imports it.
"""
