import os
from pathlib import Path

# TensorFlow enables oneDNN by default only on some CPUs; without it its CPU kernels refuse dilated
# transposed convolutions (seen on AMD EPYC). Every Keras reference in the tests runs with it on, set
# before anything imports tensorflow, so the suite passes on any x86-64.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
