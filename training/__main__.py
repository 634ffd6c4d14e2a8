import os
import sys

from contract.tf_logging import tf_log_level

# TensorFlow's start-up lines (cpu_feature_guard, oneDNN) off unless AEC_TF_VERBOSE=1; before it is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level())

from training.cli import main

sys.exit(main())
